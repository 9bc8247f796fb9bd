"""Chapter 06 (SLADE), the chapter: budgets and bad config, the smoke run's rows and stages, the
validation sweep's choice, the tables, and the claim logic on hand-made 3-seed results."""
import copy
import math

import numpy as np
import pytest
import torch
from smoke import smoke_run_one_thread

from labkit.experiments import slade as ex
from labkit.experiments.slade import _choose


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    yield from smoke_run_one_thread(ex, tmp_path_factory)


def test_budgets_and_bad_fields():
    quick, full = ex.from_budget("quick"), ex.from_budget("full")
    assert quick == ex.SladeConfig() and quick.seeds == 1 and not quick.ssl_steps and quick.rounds == 1
    assert full.seeds >= 3 and tuple(full.widths) == (32, 64, 128) and full.ssl_steps > 0 and full.rounds == 2
    assert 60 in full.sweep_k and 0.0 in full.sweep_delta and 1.0 in full.sweep_lambda1  # the defaults are swept
    assert set(full.novel_fractions) == {0.0, 1.0}
    for overrides, match in ((dict(rounds=3), "rounds=3"), (dict(warmup=250), "warmup=250.*student_steps=250"),
                             (dict(novel_fraction=1.5), "novel_fraction=1.5"), (dict(k=0), "k=0"),
                             (dict(sweep_k=(30, 0)), "sweep_k entry=0"), (dict(delta=float("nan")), "delta=nan"),
                             (dict(lambda1=-1.0), "lambda=-1.0"), (dict(ssl_steps=-1), "ssl_steps=-1"),
                             (dict(novel_fractions=(2.0,)), "novel_fractions entry=2.0")):
        with pytest.raises(ValueError, match=match):
            ex.from_budget("quick", **overrides)
    with pytest.raises(ValueError, match="unknown config field.*stpes"):
        ex.from_budget("quick", stpes=3)


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device='tpu'.*'cpu', 'cuda'"):
        ex.from_budget("smoke", device="tpu")
    assert ex.from_budget("smoke").device == "cpu"


def test_the_runs_get_the_device_and_the_config_echoes_it(smoke_results):
    cfg = ex.from_budget("smoke")
    assert ex.teacher_kwargs(cfg, 0)["device"] == "cpu"
    assert ex.student_kwargs(cfg, 0, "teacher.pt")["device"] == "cpu"
    assert smoke_results["config"]["device"] == "cpu"


def test_the_sweep_chooses_by_validation_and_keeps_the_default_on_ties():
    def entry(knob, value, r1):
        return {knob: value, "validation": {"recall": {"1": r1}}, "test": {"recall": {"1": 1 - r1}}}

    sweep = {"k": [entry("k", 30, 0.5), entry("k", 60, 0.6), entry("k", 120, 0.6)],
             "delta": [entry("delta", 0.0, 0.4), entry("delta", 0.1, 0.7)]}
    assert _choose(sweep, dict(k=60, delta=0.0, lambda1=1.0)) == {"k": 60, "delta": 0.1}


def test_smoke_run_has_every_row_and_stage(smoke_results):
    rows = smoke_results["rows"]
    for row in (ex.TEACHER, ex.SSL_ONLY, ex.SSL_TEACHER, ex.CONTROL, ex.CONTROL_EARLY, ex.ALL_PAIRS, ex.SLADE,
                ex.COSINE, ex.SELECT_SIM, ex.ROUND_2, ex.CONTROL_2):
        assert row in rows, row
    assert set(ex.novel_rows(smoke_results)) == {0.0, 0.5}
    cfg = smoke_results["config"]
    assert smoke_results["chosen"]["k"] in cfg["sweep_k"]
    # the students use the chosen knobs; weights are kept only for the views' first-seed nets
    for row in (ex.SLADE, ex.ALL_PAIRS, ex.COSINE):
        assert rows[row][0]["k"] == smoke_results["chosen"]["k"]
    assert "state" in rows[ex.TEACHER][0] and "state" in rows[ex.SLADE][0]
    assert "state" not in rows[ex.CONTROL][0] and "state" not in rows[ex.ROUND_2][0]
    assert rows[ex.SELECT_SIM][0]["select"] == "sim" and rows[ex.SLADE][0]["select"] == "sim+label"
    assert rows[ex.CONTROL_EARLY][0]["step"] % cfg["control_eval_every"] == 0
    hits = rows[ex.SLADE][0]["test"]["hits"]
    assert len(hits) == 800 and hits.mean() == pytest.approx(rows[ex.SLADE][0]["test"]["recall"]["1"])


def test_tables_and_claims_at_smoke(smoke_results):
    table = {t["row"]: t for t in ex.recall_table(smoke_results)}
    assert table[ex.SLADE]["seeds"] == 1 and 0 <= table[ex.SLADE]["r1_mean"] <= table[ex.SLADE]["r8_mean"] <= 1
    pairs = {t["row"]: t for t in ex.pair_table(smoke_results)}
    assert ex.TEACHER not in pairs and ex.SLADE in pairs
    assert {t["knob"] for t in ex.sweep_table(smoke_results)} == {"k"}
    claims = ex.claims(smoke_results)
    assert len(claims) == 12 and len({c.name for c in claims}) == 12
    assert all(c.status in ("inconclusive", "not measured") for c in claims)  # one seed: no interval


def _three_seeds(results, gap):
    """``results`` with three seeds per row; SLADE's R@1 hits and positive precision moved by ``gap``."""
    out = copy.deepcopy(results)
    rng = np.random.default_rng(0)
    for row, entries in out["rows"].items():
        base = entries[0]
        out["rows"][row] = []
        for seed in range(3):
            entry = copy.deepcopy(base)
            entry["seed"] = seed
            p = 0.6 + (gap if row == ex.SLADE else 0.0) + 0.01 * seed
            entry["test"]["hits"] = (rng.random(800) < p).astype(np.uint8)
            entry["test"]["recall"]["1"] = float(entry["test"]["hits"].mean())
            if "pair_precision" in entry:
                # SLADE's precision moves with the seed a little more: the per-seed gaps have a spread
                entry["pair_precision"]["positive"] = 0.5 + (gap + 0.01 * seed if row == ex.SLADE else 0.0) + 0.01 * seed
            out["rows"][row].append(entry)
    return out


def test_claims_follow_the_measured_gap(smoke_results):
    by_name = lambda claims: {c.name.split(".")[0]: c for c in claims}  # noqa: E731
    better = by_name(ex.claims(_three_seeds(smoke_results, 0.2)))
    assert better["1"].status == "held" and better["3a"].status == "held" and better["4a"].status == "held"
    worse = by_name(ex.claims(_three_seeds(smoke_results, -0.2)))
    assert worse["1"].status == "not reproduced" and worse["3a"].status == "not reproduced"
    assert better["1"].asserted("full") and better["3a"].asserted("full") and not better["4a"].asserted("full")


def _structure(value):
    """``value`` with every number, string and bool replaced by its type and every tensor or array by
    its shape and dtype: what must not depend on the device."""
    if isinstance(value, dict):
        return {key: _structure(v) for key, v in value.items() if key != "device"}
    if isinstance(value, (list, tuple)):
        return [_structure(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return type(value).__name__, tuple(value.shape), str(value.dtype)
    return type(value).__name__


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_smoke_run_on_cuda_matches_the_cpu_run(smoke_results, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    gpu = ex.run(ex.from_budget("smoke", device="cuda", workers=1))
    assert gpu["config"]["device"] == "cuda"
    assert _structure(gpu) == _structure(smoke_results)
    tensors = [x for x in _leaves(gpu) if isinstance(x, torch.Tensor)]
    assert tensors and all(x.device.type == "cpu" for x in tensors)  # results never depend on the device
    assert all(torch.isfinite(w).all() for w in tensors if w.is_floating_point())
    for row, entries in gpu["rows"].items():
        for entry in entries:
            test = entry["test"]
            assert all(0 <= v <= 1 for v in test["recall"].values()), row
            assert math.isfinite(test.get("nmi", 0.0)) and len(test.get("hits", [0] * 800)) == 800, row
            if "history" in entry:
                assert np.isfinite(entry["history"]["loss"]["value"]).all(), row
    # same data, initialisation and first batch: the first logged loss agrees (TF32 convolutions aside)
    for row in (ex.TEACHER, ex.SSL_ONLY):
        ours, theirs = (r["rows"][row][0]["history"]["loss"]["value"][0] for r in (gpu, smoke_results))
        assert ours == pytest.approx(theirs, rel=2e-2), row
    teacher_r1 = [r["rows"][ex.TEACHER][0]["test"]["recall"]["1"] for r in (gpu, smoke_results)]
    assert teacher_r1[0] == pytest.approx(teacher_r1[1], abs=0.1)
