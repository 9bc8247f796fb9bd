import json
import math

import numpy as np
import pytest

from labkit import report
from labkit.report import Claim, Estimate, claims_table, failed_assertions, load_claims, save_claims


def _claims():
    gain = report.paired_difference([0.41, 0.39, 0.43], [0.20, 0.21, 0.19])
    return [
        Claim.compare("gap", "+0.10 R@1", gain, threshold=0.10, check="R@1 gain > 0.10",
                      asserted_at=("full",)),
        Claim.compare("noise", "+1", report.paired_difference([1.0, 0.0, 2.0], [0.5, 0.5, 0.5]),
                      check="gain > 0"),
        Claim.reported("curve", "qualitative", "see figure"),
        Claim.not_measured("sweep", "Fig. 5", check="only at full"),
    ]


@pytest.mark.parametrize("low, high, direction, expected", [
    (0.1, 0.3, ">", "held"), (-0.3, -0.1, ">", "not reproduced"), (-0.1, 0.1, ">", "inconclusive"),
    (-0.3, -0.1, "<", "held"), (0.1, 0.3, "<", "not reproduced"), (-0.1, 0.1, "<", "inconclusive"),
    (0.0, 0.2, ">", "inconclusive"),  # an interval touching the threshold does not exclude it
])
def test_verdict_is_where_the_interval_lies(low, high, direction, expected):
    assert report.verdict(Estimate((low + high) / 2, low, high, "t"), 0.0, direction) == expected


def test_verdict_of_nan_or_infinite_interval_is_inconclusive():
    assert report.verdict(Estimate(math.nan, math.nan, math.nan, "t"), 0.0, ">") == "inconclusive"
    assert report.verdict(Estimate(5.0, -math.inf, math.inf, "t"), 0.0, ">") == "inconclusive"


def test_seed_interval_matches_the_t_formula_and_one_seed_has_none():
    est = report.seed_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2}, sample std 1
    assert est.value == 2.0 and est.low == pytest.approx(2 - half) and est.high == pytest.approx(2 + half)
    one = report.seed_interval([0.7])
    assert one.low == -math.inf and one.high == math.inf


def test_identical_seeds_give_no_interval_rather_than_a_zero_width_one():
    # A discrete statistic the seeds do not move (ch05 E4c: three identical rank correlations)
    # must not be held on a zero-width interval.
    for est in (report.seed_interval([0.107] * 3), report.paired_difference([0.5] * 3, [0.393] * 3),
                report.unpaired_difference([0.5] * 3, [0.4] * 4),
                report.bootstrap_difference([np.full(20, 0.5)] * 3, [np.full(20, 0.4)] * 3, num_resamples=50),
                report.bootstrap_interval(np.full(4, 0.3), num_resamples=50)):
        assert math.isinf(est.low) and math.isinf(est.high) and "identical values" in est.method
        assert report.verdict(est, 0.0, ">") == "inconclusive"
    assert math.isfinite(report.seed_interval([0.107, 0.107, 0.108]).low)
    # From 6 identical values the sign test bounds the median at 95 % (1 − 2^-5 = 0.969).
    six = report.seed_interval([0.107] * 6)
    assert (six.low, six.high) == (0.107, 0.107) and "sign-test" in six.method
    assert report.verdict(six, 0.0, ">") == "held"
    assert math.isinf(report.seed_interval([0.107] * 5).low)


def test_bootstrap_interval_over_a_few_folds_can_be_t_scaled():
    folds = np.array([[1.0, 0.2], [1.4, 0.1], [0.9, 0.4], [1.2, 0.3], [1.1, 0.2]])
    def gap(m):
        return float(m[:, 0].mean() - m[:, 1].mean())
    plain = report.bootstrap_interval(folds, gap, num_resamples=500)
    scaled = report.bootstrap_interval(folds, gap, num_resamples=500, t_scaled=True)
    assert plain.value == scaled.value == pytest.approx(gap(folds))
    assert scaled.high - scaled.low > 1.5 * (plain.high - plain.low)  # t_4 and sqrt(5/4) widen it
    assert scaled.high - scaled.value == pytest.approx(scaled.value - scaled.low)
    assert math.isinf(report.bootstrap_interval(folds[:1], gap, t_scaled=True).low)


def test_bounded_clips_to_the_statistics_range():
    est = report.bounded(Estimate(0.9, 0.7, 1.2, "t"), -1.0, 1.0)
    assert (est.low, est.high, est.value) == (0.7, 1.0, 0.9)
    wide = report.bounded(Estimate(0.5, -math.inf, math.inf, "t"), -1.0, 1.0)
    assert (wide.low, wide.high) == (-1.0, 1.0) and report.verdict(wide, 0.8, ">") == "inconclusive"
    with pytest.raises(ValueError, match="low < high"):
        report.bounded(est, 1.0, -1.0)


def test_paired_difference_removes_the_shared_seed_effect():
    control = np.array([0.1, 0.5, 0.9])
    paired = report.paired_difference(control + 0.05 + np.array([0.0, 0.001, -0.001]), control)
    unpaired = report.unpaired_difference(control + 0.05, control)
    assert paired.low > 0  # the seeds' spread cancels
    assert unpaired.low < 0 < unpaired.high  # without pairing it is inside the noise


def test_bootstrap_difference_needs_two_seeds_and_is_seeded():
    rng = np.random.default_rng(0)
    method = [rng.random(200) + 0.2 for _ in range(3)]
    control = [rng.random(200) for _ in range(3)]
    a = report.bootstrap_difference(method, control, num_resamples=300)
    b = report.bootstrap_difference(method, control, num_resamples=300)
    assert a == b and a.low < a.value < a.high and 0.1 < a.value < 0.3
    per_seed = [m.mean() - c.mean() for m, c in zip(method, control)]
    t_only = report.seed_interval(per_seed)
    assert a.high - a.low >= 0.8 * (t_only.high - t_only.low)  # never much narrower than t over seeds
    single = report.bootstrap_difference(method[:1], control[:1])
    assert math.isinf(single.low) and "one training seed" in single.method
    items = report.bootstrap_interval(method[0] - control[0], num_resamples=300)
    assert items.low < items.value < items.high


def test_bootstrap_difference_without_item_noise_is_the_paired_t_interval():
    method = [np.full(50, v) for v in (0.30, 0.35, 0.41, 0.28)]
    control = [np.full(50, 0.2) for _ in range(4)]
    boot = report.bootstrap_difference(method, control, num_resamples=4000)
    t = report.paired_difference([m[0] for m in method], [0.2] * 4)
    assert boot.value == pytest.approx(t.value)
    assert boot.high - boot.low == pytest.approx(t.high - t.low, rel=0.08)


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="direction='>='"):
        report.verdict(Estimate(1, 0, 2, "t"), 0.0, ">=")
    with pytest.raises(ValueError, match="status='passed'"):
        Claim("x", "p", 1.0, "c", "passed")
    with pytest.raises(ValueError, match="asserted_at='fast'"):
        Claim.compare("x", "p", Estimate(1, 0, 2, "t"), check="c", asserted_at=("fast",))
    with pytest.raises(ValueError, match="one control per seed"):
        report.paired_difference([1, 2], [1])
    with pytest.raises(TypeError, match="Estimate"):
        Claim.compare("x", "p", 0.3, check="c")


def test_failed_assertions_respect_budget():
    claims = _claims()
    assert failed_assertions(claims, "quick") == []
    assert failed_assertions(claims, "full") == []  # "gap" is held
    inconclusive = Claim.compare("n", "p", report.seed_interval([0.2]), check="c", asserted_at=("quick",))
    assert failed_assertions([inconclusive], "quick") == [inconclusive]


def test_table_shows_interval_verdict_and_counts():
    table = claims_table(_claims(), "quick")
    text = repr(table)
    assert "held; asserted at full" in text and "inconclusive (within noise)" in text
    assert "[0.135, 0.285] (paired t over 3 seeds)" in text
    assert "not measured at quick" in text and "reported" in text
    html = table._repr_html_()
    assert html.count("<tr") == 5 and "1 held, 0 not reproduced, 1 inconclusive" in html


def test_save_claims_writes_status_and_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_OUTPUT_DIR", str(tmp_path))
    path = save_claims("03-svmax", "SVMax", "quick", _claims(), device="cpu")
    assert path == tmp_path / "03-svmax.claims.json"
    record = load_claims(path)
    gap = record["claims"][0]
    assert gap["status"] == "held" and gap["held"] is True and gap["asserted_at"] == ["full"]
    assert gap["low"] < gap["measured"] < gap["high"] and gap["threshold"] == 0.1
    assert [report.claim_status(c) for c in record["claims"]] == [
        "held", "inconclusive", "reported", "not measured"]
    assert report.claim_status({"measured": 1.0, "held": True}) == "unjudged (old rule)"
    json.dumps(record)
