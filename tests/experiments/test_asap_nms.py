"""Chapter 08's experiment: budgets, the smoke run, the AP bootstrap, and every claim's three outcomes.

The invariants that used to be claims are unit tests in tests/methods/test_asap_nms.py:
``test_full_radius_limit_equals_greedy_exactly`` (θ_a = 0 with an unbounded window is greedy) and
``test_e5_one_lut_serves_every_resolution`` (one LUT object serves 256 and 1024 px unchanged).
"""
import dataclasses
import math

import numpy as np
import pytest
import torch

from labkit.experiments import asap_nms as ex
from labkit.metrics.detection import coco_evaluate, ground_truth_to_coco

SIZES = (500, 2000, 6000)


@pytest.fixture(scope="module")
def smoke_results():
    return ex.run(ex.from_budget("smoke"))


def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.ASAPConfig()
    full = ex.from_budget("full")
    assert full.repeats >= 30 and 12000 in full.sizes and full.python_size == 6000
    assert full.detector_budget == "full" and full.detector_seeds >= 3 and set(full.detector_top_ks) == {300, 1000}
    assert full.setting_seeds >= 3 and ex.from_budget("quick").setting_seeds == 0  # ~20 s a set: full only
    with pytest.raises(ValueError, match="unknown config field.*cutof.*valid fields"):
        ex.from_budget("quick", cutof=0.3)
    with pytest.raises(ValueError, match="device='tpu'"):
        ex.from_budget("smoke", device="tpu")


def test_smoke_results_cover_every_view(smoke_results):
    res = smoke_results
    cfg = res["config"]
    assert {r["impl"] for r in res["latency"]} == set(ex.IMPLEMENTATIONS)
    assert all(len(r["times"]) == cfg["repeats"] for r in res["latency"])
    assert {r["impl"] for r in res["python_latency"]} == set(ex.PYTHON_IMPLEMENTATIONS)
    assert [r["N"] for r in res["counts"]] == list(cfg["sizes"])
    assert all(r["asap_iou"] < r["greedy_iou"] for r in res["counts"])
    for row in res["cutoff_sweep"] + res["drift_sweep"]:
        assert row["N"] == 500 and len(row["jaccards"]) == len(row["iou_ratios"]) == cfg["num_scenes"]
        assert row["jaccard"] == pytest.approx(np.mean(row["jaccards"]))
    assert res["detector"] is None and res["settings"] is None
    assert sorted(res["resolution"]["jaccards"]) == [256, 1024]
    diff = res["keep_diff"]
    assert len(diff["both"]) + len(diff["greedy_only"]) + len(diff["asap_only"]) > 0
    assert 0 < res["iou_profile"]["fraction_zero"] < 1
    profile = res["phase_profile"]
    assert profile["N"] == cfg["profile_size"] and profile["greedy"]["total"] > 0 and profile["asap"]["total"] > 0
    assert len(res["lut_neighbourhoods"]["offsets"]) == len(cfg["cutoffs"])


def test_smoke_claims_are_named_and_only_counts_asserted(smoke_results):
    claims = ex.claims(smoke_results)
    assert [c.name.split(".")[0] for c in claims] == ["E1", "E2a", "E2b", "E2c", "E3a", "E3b", "E3c", "E3d", "E3e",
                                                      "E3f", "E4", "E5a", "E5b"]
    by = {c.name.split(".")[0]: c for c in claims}
    assert by["E2b"].status == by["E3d"].status == "not measured" and by["E3f"].status == "reported"
    assert {c.name.split(".")[0]: c.asserted_at for c in claims if c.asserted_at} == {"E1": ("quick", "full"),
                                                                                      "E2a": ("quick", "full")}
    assert "synthetic proposal set" in by["E1"].noise and "repeated timings" in by["E3a"].noise


# ---- claims on hand-made results ----------------------------------------------------------------

def _spread(mean, spread, n):
    return list(mean + spread * np.linspace(-1, 1, n))


def make_results(*, ratio=0.05, jaccard=0.998, scene_spread=0.001, num_scenes=5, speedup=15.0, slope_gap=0.8,
                 vectorized=2.0, python=8.0, timing_spread=0.02, delta=(0.0, -0.1, 0.1), greedy_ap=17.6,
                 detector=True, sizes=SIZES):
    """Results with chosen per-scene values, timings (median exactly as chosen) and AP differences."""
    def times(median):
        return _spread(median, timing_spread * median, 10)

    latency = []
    for n in sizes:
        greedy = 1e-9 * n ** 1.8
        asap = greedy / (speedup * (n / 6000) ** slope_gap)  # speed-up `speedup` at N = 6000
        for impl, median in (("greedy_numba", greedy), ("asap_numba", asap), ("torchvision", 2 * greedy),
                             ("greedy_torch", 50 * greedy), ("asap_torch", 50 * greedy / vectorized)):
            latency.append(dict(N=n, impl=impl, median_s=median, iqr_s=0.0, times=times(median)))
    python_latency = [dict(N=1000, impl="greedy_python", times=times(1.0)),
                      dict(N=1000, impl="asap_python", times=times(1.0 / python))]
    scenes = dict(N=6000, iou_ratios=_spread(ratio, scene_spread, num_scenes),
                  jaccards=_spread(jaccard, scene_spread, num_scenes))
    value, low, high = delta
    deltas = [dict(top_k=k, greedy_AP=greedy_ap, value=value, low=low, high=high, method="bootstrap", num_seeds=1)
              for k in (300, 1000)]
    source = dict(budget="full", seeds=[0, 1, 2], steps=700, test_images=300)
    return {
        "config": dict(cutoff=0.2, sizes=sizes, detector_top_ks=(300, 1000)),
        "latency": latency, "python_latency": python_latency,
        "cutoff_sweep": [dict(cutoff=0.1, N=6000, iou_ratios=[1.0], jaccards=[0.0]), dict(cutoff=0.2, **scenes)],
        "resolution": dict(image_sizes=[256, 1024], N=1000,
                           jaccards={s: _spread(jaccard, scene_spread, num_scenes) for s in (256, 1024)}),
        "detector": dict(source=source, rows=[], deltas=deltas) if detector else None,
    }


def _statuses(results) -> dict[str, str]:
    return {c.name.split(".")[0]: c.status for c in ex.claims(results)}


JUDGED = ("E1", "E2a", "E2b", "E2c", "E3a", "E3b", "E3c", "E3e", "E4", "E5a", "E5b")


def test_claims_hold_on_paper_like_numbers():
    status = _statuses(make_results())
    assert {k: status[k] for k in JUDGED} == dict.fromkeys(JUDGED, "held")
    assert status["E3d"] == "not measured" and status["E3f"] == "reported"
    assert _statuses(make_results(sizes=SIZES + (12000,), vectorized=2.0))["E3d"] == "not reproduced"  # 2 < 2.5


def test_claims_fail_when_the_numbers_do():
    status = _statuses(make_results(ratio=0.2, jaccard=0.95, speedup=6.0, slope_gap=-0.5, vectorized=1.1, python=3.0,
                                    delta=(-1.0, -1.2, -0.8)))
    assert {k: status[k] for k in JUDGED} == dict.fromkeys(JUDGED, "not reproduced")


def test_claims_are_inconclusive_within_noise():
    # one proposal set gives no interval; timings spread ±90 % around a ratio near each threshold
    status = _statuses(make_results(num_scenes=1, speedup=11.0, python=5.0, vectorized=1.5, slope_gap=0.0,
                                    timing_spread=0.9, delta=(-0.2, -0.8, 0.3)))
    assert {k: status[k] for k in JUDGED} == dict.fromkeys(JUDGED, "inconclusive")


def test_parity_is_not_judged_on_a_detector_that_barely_detects():
    claims = {c.name.split(".")[0]: c for c in ex.claims(make_results(greedy_ap=0.02, delta=(0.0, 0.0, 0.0)))}
    assert claims["E2b"].status == "inconclusive" and "barely detects" in claims["E2b"].noise
    assert claims["E2b"].measured == 0.0 and "700 steps" in claims["E2b"].detail
    status = _statuses(make_results(detector=False))
    assert status["E2b"] == status["E2c"] == "not measured"


def test_timing_estimate_is_a_ratio_of_medians():
    estimate = ex.timing_estimate(lambda g, a: g / a, [[4.0, 5.0, 6.0, 50.0], [1.0, 1.0, 1.0]])
    assert estimate.value == pytest.approx(5.5) and estimate.low <= 5.5 <= estimate.high
    tight = ex.timing_estimate(lambda g, a: g / a, [[5.0] * 5, [1.0] * 5])
    assert (tight.low, tight.value, tight.high) == (5.0, 5.0, 5.0)


# ---- AP with a bootstrap over test images --------------------------------------------------------

def _toy_detection_set(seed=0, num_images=6):
    rng = np.random.default_rng(seed)
    boxes, labels, detections = [], [], []
    for _ in range(num_images):
        m = int(rng.integers(1, 4))
        xy = rng.uniform(0, 60, (m, 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 30, (m, 2))], axis=1)
        boxes.append(gt)
        labels.append(rng.integers(0, 2, m))
        # every object found with a few pixels of error, plus two random false positives
        noisy = np.concatenate([gt + rng.normal(0, 2, gt.shape), rng.uniform(0, 60, (2, 4)).cumsum(1) / 2])
        found = np.concatenate([labels[-1], rng.integers(0, 2, 2)])
        detections.append(dict(boxes=torch.tensor(noisy, dtype=torch.float32),
                               scores=torch.tensor(rng.uniform(0, 1, m + 2)), labels=torch.tensor(found)))
    return ground_truth_to_coco(boxes, labels, 96, ["a", "b"]), detections


def test_weighted_ap_is_pycocotools_ap_on_any_multiset_of_images():
    gt, detections = _toy_detection_set()
    matches = ex.coco_matches(gt, detections)
    assert ex.weighted_ap(matches, np.ones(6)) == pytest.approx(100 * coco_evaluate(gt, detections)["AP"], abs=1e-9)
    # a bootstrap resample: image 0 twice, image 1 left out, as pycocotools scores the duplicated set
    picks = [0, 0, 2, 3, 4, 5]
    images = [dict(img, id=i + 1) for i, img in enumerate(gt["images"][p] for p in picks)]
    annotations = [dict(a, image_id=i + 1) for i, p in enumerate(picks)
                   for a in gt["annotations"] if a["image_id"] == p + 1]
    duplicated = dict(gt, images=images, annotations=[dict(a, id=j + 1) for j, a in enumerate(annotations)])
    expected = 100 * coco_evaluate(duplicated, [detections[p] for p in picks])["AP"]
    assert ex.weighted_ap(matches, np.bincount(picks, minlength=6)) == pytest.approx(expected, abs=1e-9)


def test_paired_ap_difference_over_seeds_and_images():
    seeds = [_toy_detection_set(seed=s, num_images=30) for s in (1, 2, 3, 4)]
    runs = [ex.coco_matches(gt, detections) for gt, detections in seeds]
    same = ex.paired_ap_difference(runs, runs, num_resamples=50, seed=0)
    # identical arms: no spread, and four seeds are too few for the rule's sign-test fallback
    assert same.value == 0.0 and (same.low, same.high) == (-np.inf, np.inf)
    assert same.num_seeds == 4 and "30 test images" in same.method and "identical values" in same.method
    # every other image loses its detections: AP drops, and the interval excludes 0
    dropped = [ex.coco_matches(gt, [d if i % 2 else {k: v[:0] for k, v in d.items()} for i, d in enumerate(dets)])
               for gt, dets in seeds]
    worse = ex.paired_ap_difference(dropped, runs, num_resamples=50, seed=0)
    expected = np.mean([ex.weighted_ap(d, np.ones(30)) - ex.weighted_ap(r, np.ones(30)) for d, r in zip(dropped, runs)])
    assert worse.value == pytest.approx(expected) and worse.low <= worse.value <= worse.high < 0
    one_seed = ex.paired_ap_difference(dropped[:1], runs[:1], num_resamples=50, seed=0)
    assert one_seed.value < 0 and (one_seed.low, one_seed.high) == (-np.inf, np.inf)  # training noise unmeasured


def test_detector_ap_on_an_untrained_detector(monkeypatch):
    # θ_a = 0 with the default window covers the whole 12 × 12 grid: ASAP is greedy, AP identical.
    from labkit.experiments import lottery_runs

    test = lottery_runs.scenes(96, 0.25, 0.5, 1, 6, 0)[1]
    untrained = lottery_runs.make_detector(0)
    monkeypatch.setattr(ex, "chapter05_detector",
                        lambda budget, seed, workers, device: (untrained, test, dict(budget=budget)))
    cfg = dataclasses.replace(ex.from_budget("smoke", detector_budget="smoke"), cutoff=0.0, detector_cutoffs=(0.0, 0.6),
                              detector_seeds=2, ap_resamples=20)
    result = ex.detector_ap(cfg)
    rows = {(r["seed"], r["top_k"], r["nms"], r["cutoff"]): r for r in result["rows"]}
    first = {(300, "greedy", None), (300, "asap", 0.0), (300, "asap", 0.6), (1000, "greedy", None), (1000, "asap", 0.0)}
    assert set(rows) == {(0, *key) for key in first} | {(1, *key) for key in first if key[2] != 0.6}
    assert rows[(0, 300, "asap", 0.0)]["rpn_jaccard"] == 1.0 and rows[(0, 300, "asap", 0.6)]["rpn_jaccard"] < 1.0
    assert [d["top_k"] for d in result["deltas"]] == [300, 1000]
    # identical arms on every seed and image: no spread, so no interval (two seeds are too few to bound it)
    assert all(d["value"] == 0.0 and d["low"] == -math.inf and d["high"] == math.inf and d["num_seeds"] == 2
               for d in result["deltas"])
    assert result["source"]["test_images"] == 6 and result["source"]["seeds"] == [0, 1]


# ---- on a GPU: chapter 05's detector trains and runs there, every NMS stays on the CPU ------------

TIMED = ("times", "median_s", "iqr_s", "lut_build_s", "phase_profile")  # machine noise, never compared


def _structure(value, key=""):
    """Keys, list lengths and tensor/array dtypes and shapes (timings as their type only)."""
    if isinstance(value, dict):
        return {k: _structure(v, k) for k, v in value.items() if k != "device"}
    if isinstance(value, (list, tuple)):
        return [_structure(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return str(value.dtype), tuple(value.shape)
    return type(value).__name__


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMED and k != "device"}
    if isinstance(value, (list, tuple)):
        return [_without_timings(v) for v in value]
    return value.tolist() if isinstance(value, (torch.Tensor, np.ndarray)) else value


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_smoke_run_on_cuda_matches_the_cpu_run(smoke_results, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    gpu = ex.run(ex.from_budget("smoke", device="cuda"))
    assert gpu["config"]["device"] == "cuda"
    assert _structure(gpu) == _structure(smoke_results)
    assert _without_timings(gpu) == _without_timings(smoke_results)  # the NMS measurements never leave the CPU
    # chapter 05's smoke detector, trained and run on each device (same data, initialisation and batches)
    arms = {device: ex.detector_ap(ex.from_budget("smoke", detector_budget="smoke", ap_resamples=50, device=device))
            for device in ("cuda", "cpu")}
    assert _structure(arms["cuda"]) == _structure(arms["cpu"])
    for ours, theirs in zip(arms["cuda"]["rows"], arms["cpu"]["rows"]):
        assert (ours["top_k"], ours["nms"], ours["cutoff"]) == (theirs["top_k"], theirs["nms"], theirs["cutoff"])
        assert math.isfinite(ours["AP"]) and 0 <= ours["rpn_jaccard"] <= 1
        assert ours["AP"] == pytest.approx(theirs["AP"], abs=2.0)  # AP points of a barely trained detector
    assert all(math.isfinite(d["value"]) for d in arms["cuda"]["deltas"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_one_detector_gives_the_same_detections_on_cuda(monkeypatch):
    from labkit.experiments import lottery_runs

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full-precision convolutions, as on the CPU
    test = lottery_runs.scenes(96, 0.25, 0.5, 1, 6, 0)[1]
    model = lottery_runs.make_detector(0)
    cpu, cpu_jaccards = ex._detect(model, test, 300, 0.2)
    gpu, gpu_jaccards = ex._detect(lottery_runs.make_detector(0, device="cuda"), test, 300, 0.2, device="cuda")
    assert all(v.device.type == "cpu" for d in gpu for v in d.values())
    assert len(gpu) == len(cpu) and len(gpu_jaccards) == len(cpu_jaccards)
    assert np.mean(gpu_jaccards) == pytest.approx(np.mean(cpu_jaccards), abs=0.05)
    assert sum(len(d["boxes"]) for d in gpu) == pytest.approx(sum(len(d["boxes"]) for d in cpu), rel=0.1)
