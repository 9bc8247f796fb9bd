import dataclasses
import math

import numpy as np
import pytest
import torch
from smoke import smoke_run

from labkit.experiments import lottery as ex
from labkit.experiments import lottery_runs as runs
from labkit.methods import lottery

FULL = ex.from_budget("full")


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    yield from smoke_run(ex, tmp_path_factory)


def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.LotteryConfig()
    assert FULL.sparsities == (0.5, 0.8, 0.9, 0.95) and FULL.control_sparsity == 0.9
    assert FULL.num_seeds >= 3 and set(FULL.headline_sparsities) == {0.8, 0.9}  # the headline over >= 3 seeds
    with pytest.raises(ValueError, match="unknown config field.*sparsity.*valid fields"):
        ex.from_budget("quick", sparsity=0.5)
    with pytest.raises(ValueError, match="sparsities entry 1.2"):
        ex.from_budget("quick", sparsities=(0.5, 1.2))
    with pytest.raises(ValueError, match="headline_sparsities entry"):
        ex.from_budget("quick", headline_sparsities=(0.9,))
    with pytest.raises(ValueError, match="control_sparsity"):
        ex.from_budget("full", control_sparsity=0.5)
    with pytest.raises(ValueError, match="num_seeds"):
        ex.from_budget("quick", num_seeds=0)
    with pytest.raises(ValueError, match="module_subsets"):
        ex.from_budget("quick", module_subsets=("neck",))
    with pytest.raises(ValueError, match="optimizer"):
        ex.from_budget("quick", optimizer="adam")


def test_device_is_checked_and_reaches_every_run():
    with pytest.raises(ValueError, match="device='tpu'"):
        ex.from_budget("smoke", device="tpu")
    cfg = ex.from_budget("full")
    kwargs = [ex._pretrain_kwargs(cfg), ex._prune_kwargs(cfg, "pretrain.pt", 0.9), ex.dense_kwargs(cfg, "pretrain.pt")]
    kwargs += [kw for _, kw in ex.ticket_plan(cfg, "dense.pt")]
    assert [kw["device"] for kw in kwargs] == ["cpu"] * len(kwargs)  # the device is part of every run's cache key
    assert ex._workers(cfg) == cfg.workers
    assert ex._workers(dataclasses.replace(cfg, device="cuda")) == 1  # one GPU: the runs go in this process


def test_to_cpu_keeps_the_structure():
    value = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": {"c": 1.5, "d": None}}
    out = runs.to_cpu(value)
    assert out["a"][1][1] == 3 and isinstance(out["a"][1], tuple) and out["b"] == {"c": 1.5, "d": None}
    assert torch.equal(out["a"][0], torch.ones(2)) and out["a"][0].device.type == "cpu"


def test_the_prunable_set_follows_the_coco_rule():
    model = runs.make_detector(0)
    names = set(runs.detector_weights(model))
    assert names == {"base.conv1.conv.weight", "base.conv2.conv.weight", "base.conv3.conv.weight",
                     "base.conv4.conv.weight", "rpn.conv.weight", "top.fc1.weight", "top.fc2.weight"}
    assert set(runs.detector_weights(model, ("heads",))) == {"heads.cls_score.weight", "heads.bbox_pred.weight"}
    shares = runs.module_shares(model)
    assert math.isclose(sum(shares.values()), 1.0) and shares["top"] > 0.5  # Top is the majority, as in the paper


def test_plan_seeds_and_compute_matching():
    plan = ex.ticket_plan(FULL, "dense.pt")
    sections = [s for s, _ in plan]
    assert sections.count("global") == 4 and sections.count("layerwise") == 2 and sections.count("modules") == 4
    rewinds = [kw for s, kw in plan if s == "rewind"]
    assert [kw["rewind_step"] for kw in rewinds] == [ex.rewind_step(FULL, f) for f in FULL.rewind_fracs]
    # E7 is compute-matched: every rewind point retrains the whole schedule
    assert {ex.retrained_steps(kw) for kw in rewinds} == {FULL.steps}
    main = next(kw for s, kw in plan if s == "global" and kw["keep"] == 0.1)
    reinit = next(kw for s, kw in plan if s == "random_reinit")
    # the re-init control trains as many steps as the ticket's weights saw (dense to the rewind point, then retraining)
    assert ex.retrained_steps(reinit) == main["rewind_step"] + ex.retrained_steps(main) == FULL.steps
    headline = ex.ticket_plan(FULL, "dense.pt", headline_only=True)
    assert sorted(s for s, _ in headline) == ["global", "global", "random_mask", "random_reinit"]
    assert {kw["keep"] for s, kw in headline if s == "global"} == {0.2, 0.1}
    configs = ex.seed_configs(FULL)
    assert [c.seed for c in configs] == [0, 1, 2] and configs[0] == FULL


def test_the_reinit_control_keeps_the_pretrained_backbone():
    dense = runs.make_detector(0)
    with torch.no_grad():
        for p in dense.base.parameters():
            p.add_(1.0)  # stands for pretraining: values a fresh draw cannot have
    masks = lottery.global_magnitude_masks(runs.detector_weights(dense), 0.5)
    control = runs._reinit(0, dense.state_dict(), masks)
    for name, value in control.base.state_dict().items():
        expected = dense.base.state_dict()[name]
        mask = masks.get(f"base.{name}")
        assert torch.equal(value, expected * mask if mask is not None else expected), name
    assert not torch.equal(control.top.fc1.bias, dense.top.fc1.bias)  # the heads are drawn again
    named = dict(control.named_parameters())
    assert all(int((named[n][~m] != 0).sum()) == 0 for n, m in masks.items())


def test_smoke_results_cover_every_view(smoke_results):
    res = smoke_results
    cfg = res["config"]
    assert set(res["tickets"]) == {"global", "layerwise", "random_reinit", "random_mask", "iterative", "rewind",
                                   "modules", "transfer"}
    others = res["other_seeds"]
    assert [o["config"]["seed"] for o in others] == [cfg["seed"] + 1]
    assert set(others[0]["tickets"]) == set(ex.SEEDED_SECTIONS) and "state" not in others[0]["dense"]
    for seed in [res] + others:
        for section, entries in seed["tickets"].items():
            for r in entries:  # the masks' invariants, in every trained ticket
                assert r["revived"] == 0, section  # pruned weights stayed zero through retraining
                assert r["sparsity"]["num_prunable"] - r["sparsity"]["num_pruned"] == r["expected_kept"], section
                assert len(r["folds"]) == cfg["num_folds"] and len(r["viewer"]) == runs.VIEWER_IMAGES
        assert set(seed["depth_rho"]) == {"final", "initial"}
        assert {r["scheme"] for r in seed["layer_sparsity"]} == {"global", "layerwise", "global_initial"}
    main = res["tickets"]["global"][0]
    assert main["sparsity"]["prunable"] == pytest.approx(0.8, abs=1e-5)
    assert main["sparsity"]["network"] < main["sparsity"]["prunable"]  # predictors, biases, BN stay dense
    transfer = res["tickets"]["transfer"][0]
    assert transfer["sparsity"]["network"] < 0.2 and transfer["backbone_sparsity"] == pytest.approx(0.8)
    iterative = res["tickets"]["iterative"][0]
    assert [round(r["keep"], 6) for r in iterative["rounds"]] == [round(k, 6) for k in lottery.keep_schedule(0.2, 3)]
    assert [r["restart"] for r in res["tickets"]["rewind"]] == [True, True]
    assert "checkpoints" not in res["dense"]
    assert res["viewer_images"].shape[0] == runs.VIEWER_IMAGES and "areas" in res["viewer_truth"][0]
    assert len(res["class_frequencies"]) == len(runs.CLASSES) and sum(res["class_frequencies"]) > 0


def test_tables_average_over_the_seeds_that_trained_a_network(smoke_results):
    rows = ex.ticket_rows(smoke_results)
    assert rows[0]["method"] == "dense" and rows[0]["network_sparsity"] == 0 and rows[0]["num_seeds"] == 2
    seeds = [smoke_results] + smoke_results["other_seeds"]
    assert rows[0]["AP"] == pytest.approx(sum(100 * r["dense"]["metrics"]["AP"] for r in seeds) / 2)
    assert {r["method"]: r["num_seeds"] for r in rows if r["method"] in ("global", "layerwise", "random_mask")} == {
        "global": 2, "layerwise": 1, "random_mask": 2}
    assert math.isnan(next(r for r in rows if r["method"] == "layerwise")["AP_ci"])  # one seed: no interval
    assert any(r["method"] == "iterative (round 1)" for r in rows)
    assert [r["bucket"] for r in ex.bucket_changes(smoke_results)] == list(ex.BUCKETS)
    rewinds = ex.rewind_rows(smoke_results)
    assert [r["rewind_step"] for r in rewinds] == [2, 16] and {r["retrained_steps"] for r in rewinds} == {20}
    assert len(ex.class_changes(smoke_results, 0.8)) == len(runs.CLASSES)
    assert all(0 <= r["iou"] <= 1 and r["num_seeds"] == 2 for r in ex.early_bird_rows(smoke_results))
    assert [r["subset"] for r in ex.module_rows(smoke_results)] == ["top"]


def test_claims_on_the_smoke_run(smoke_results):
    claims = ex.claims(smoke_results)
    names = [c.name.split(".")[0] for c in claims]
    assert names == ["E1a", "E1b", "E2", "E2", "E3a", "E3b", "E4a", "E4c", "E5", "E6", "E7b", "E8", "E9"]
    assert not any(c.asserted_at for c in claims)  # measured and shown, none asserted
    assert {c.status for c in claims if c.name.startswith(("E1b", "E3a"))} == {"reported"}
    single = [c for c in claims if c.name.startswith(("E3b", "E4a", "E5", "E7b"))]  # first seed only
    assert all(c.status == "inconclusive" and math.isinf(c.high) for c in single)


def test_interval_and_points():
    assert math.isnan(ex.interval([1.0]))
    assert ex.interval([1.0, 1.0, 1.0]) == 0
    assert ex.interval([0.0, 2.0]) == pytest.approx(12.706 * 1.0, rel=1e-3)  # t(0.975, 1) · s / √2
    assert ex.points(0.25) == 25.0


def test_depth_correlation_needs_three_distinct_layers():
    rows = [dict(scheme="global", sparsity=0.9, depth=d, pruned=p) for d, p in enumerate([0.1, 0.5, 0.9])]
    assert ex.depth_correlation(rows, "global", 0.9) == pytest.approx(1.0)
    assert math.isnan(ex.depth_correlation(rows, "global_initial", 0.9))
    assert math.isnan(ex.depth_correlation([dict(r, pruned=0.5) for r in rows], "global", 0.9))


def test_ticket_rejects_an_unsaved_rewind_point(tmp_path):
    path = tmp_path / "dense.pt"
    model = runs.make_detector(0)
    torch.save({"state": model.state_dict(), "checkpoints": {0: lottery.checkpoint(model, None, 0)}}, path)
    data = dict(image_size=64, contrast=0.25, clutter=0.5, num_train=8, num_test=4, seed=0)
    with pytest.raises(ValueError, match="rewind_step=5.*saved \\[0\\]"):
        runs.ticket(data, {}, str(path), "global", 0.5, 5, 2)
    with pytest.raises(ValueError, match="method"):
        runs.ticket(data, {}, str(path), "magic", 0.5, 0, 2)


# --- claims on hand-made results: each comparison can come out held, not reproduced, inconclusive ---

AT = ex.rewind_step(FULL)


def _metrics(ap, small=20.0, large=20.0):
    return dict(AP=ap / 100, AP50=2 * ap / 100, AP_small=small / 100, AP_medium=ap / 100, AP_large=large / 100)


def _ticket(keep, ap=20.0, rewind_step=AT, **extra):
    return dict(dict(metrics=_metrics(ap), per_class=[0.5] * len(runs.CLASSES), keep=keep, rewind_step=rewind_step,
                     modules=[], restart=False, sparsity=dict(prunable=1 - keep, network=0.98 * (1 - keep))), **extra)


def fake_seed(seed: int, headline_only: bool = False) -> dict:
    """One seed's results, every network at 20 AP points, every relative change 0."""
    levels = FULL.headline_sparsities if headline_only else FULL.sparsities
    tickets = {"global": [_ticket(round(1 - s, 6)) for s in levels],
               "random_reinit": [_ticket(0.1)], "random_mask": [_ticket(0.1)]}
    if not headline_only:
        tickets.update(
            layerwise=[_ticket(round(1 - s, 6)) for s in FULL.layerwise_sparsities], iterative=[_ticket(0.1)],
            rewind=[_ticket(0.1, rewind_step=ex.rewind_step(FULL, f), restart=True) for f in FULL.rewind_fracs],
            transfer=[dict(_ticket(0.1), keep=None, rewind_step=None, backbone_sparsity=0.9,
                           sparsity=dict(prunable=0.9, network=0.1))])
    snapshots = [ex.rewind_step(FULL, f) for f in FULL.early_bird_fracs]
    dense = dict(metrics=_metrics(20.0), per_class=[0.5] * len(runs.CLASSES), snapshot_steps=snapshots,
                 early_bird={"0.1": [0.9] * len(snapshots)})
    return dict(config=dataclasses.asdict(dataclasses.replace(FULL, seed=seed)), dense=dense, tickets=tickets,
                class_names=list(runs.CLASSES), class_frequencies=[600, 400, 250, 160, 130, 110], layer_sparsity=[],
                depth_rho=dict(final=0.5, initial=0.5))


def fake_results(num_seeds: int, headline_only_after_first: bool = False) -> dict:
    seeds = [fake_seed(k, headline_only_after_first and k > 0) for k in range(num_seeds)]
    return dict(seeds[0], other_seeds=seeds[1:])


def _set_ap(entry, ap):
    entry["metrics"]["AP"] = ap / 100


def _pick(r, section, keep=None, **match):
    return ex._find(r, section, keep, **match)


def _ticket_at(r, s):
    return ex.main_ticket(r, s)


def _set_rewind(r, v):  # AP(rewind at the end of warm-up) − AP(rewind after the decay) = v
    _set_ap(_pick(r, "rewind", rewind_step=ex.rewind_step(FULL, 0.8)), 20.0 - v)


def _set_spread(r, v):  # max − min AP over the early rewind points = v
    for f, ap in ((0.0, 20.0), (0.1, 20.0 + v), (0.25, 20.0 + v / 2)):
        _set_ap(_pick(r, "rewind", rewind_step=ex.rewind_step(FULL, f)), ap)


def _set_widening(r, v):  # gap(95 %) − gap(80 %) = v
    _set_ap(_pick(r, "layerwise", 0.2), 19.0)
    _set_ap(_pick(r, "layerwise", 0.05), 19.0 - v)


def _set_buckets(r, v):  # relative change small − large = v at the control sparsity
    _ticket_at(r, 0.9)["metrics"]["AP_small"] = 0.2 * (1 + v)


def _set_classes(r, v):  # relative change of the rarest class − the most frequent = v
    _ticket_at(r, 0.9)["per_class"][-1] = 0.5 * (1 + v)


# claim prefix -> (set the claim's per-seed statistic to v, threshold, direction, scale of the test values)
SETTERS = {
    "E1a": (lambda r, v: _set_ap(_ticket_at(r, 0.8), 20.0 + v), -1.5, ">", 1.0),
    "E1c": (lambda r, v: _set_ap(_ticket_at(r, 0.95), 20.0 + v), -3.0, "<", 1.0),
    "E2. ticket beats the same mask": (lambda r, v: _set_ap(_pick(r, "random_reinit"), 20.0 - v), 2.0, ">", 1.0),
    "E2. ticket beats a random mask": (lambda r, v: _set_ap(_pick(r, "random_mask"), 20.0 - v), 2.0, ">", 1.0),
    "E3b": (lambda r, v: _set_ap(r["tickets"]["transfer"][0], 20.0 - v), 0.0, ">", 1.0),
    "E4a. global ≥ layer-wise at 80%": (lambda r, v: _set_ap(_pick(r, "layerwise", 0.2), 20.0 - v), 0.0, ">", 1.0),
    "E4a. global ≥ layer-wise at 95%": (lambda r, v: _set_ap(_pick(r, "layerwise", 0.05), 20.0 - v), 0.0, ">", 1.0),
    "E4b": (_set_widening, 0.0, ">", 1.0),
    "E4c": (lambda r, v: r["depth_rho"].update(final=0.5 + v), 0.0, ">", 0.1),
    "E5": (lambda r, v: _set_ap(_pick(r, "iterative"), 20.0 - v), 0.0, ">", 1.0),
    "E6": (_set_buckets, 0.0, "<", 0.1),
    "E7a": (_set_spread, 1.0, "<", 1.0),
    "E7b": (_set_rewind, 0.0, ">", 1.0),
    "E8": (lambda r, v: r["dense"]["early_bird"]["0.1"].__setitem__(2, v), 0.9, ">", 0.1),
    "E9": (_set_classes, 0.0, "<", 0.1),
}
OUTCOMES = {"held": [0.5, 0.6, 0.45], "not reproduced": [-0.5, -0.6, -0.45], "inconclusive": [0.9, -0.9, 0.1]}


def _claim(results, prefix):
    found = [c for c in ex.claims(results) if c.name.startswith(prefix)]
    assert len(found) == 1, (prefix, [c.name for c in ex.claims(results)])
    return found[0]


def test_every_comparison_claim_has_a_setter():
    compared = [c.name for c in ex.claims(fake_results(3)) if c.status not in ("reported", "not measured")]
    assert sorted(next(p for p in SETTERS if name.startswith(p)) for name in compared) == sorted(SETTERS)


@pytest.mark.parametrize("prefix", list(SETTERS))
@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_claims_follow_the_seed_interval(prefix, outcome):
    setter, threshold, direction, scale = SETTERS[prefix]
    sign = 1 if direction == ">" else -1
    results = fake_results(3)
    for r, delta in zip(ex.seed_results(results), OUTCOMES[outcome]):
        setter(r, threshold + sign * scale * delta)
    claim = _claim(results, prefix)
    assert claim.status == outcome, (claim.measured, claim.low, claim.high, claim.noise)
    assert claim.threshold == threshold and claim.direction == direction and "3 seeds" in claim.noise


@pytest.mark.parametrize("prefix", ["E1a", "E2. ticket beats a random mask", "E4c", "E8"])
def test_one_seed_is_inconclusive_however_large_the_effect(prefix):
    setter, threshold, direction, scale = SETTERS[prefix]
    results = fake_results(1)
    setter(results, threshold + (1 if direction == ">" else -1) * 10 * scale)
    claim = _claim(results, prefix)
    assert claim.status == "inconclusive" and math.isinf(claim.high)


def test_the_budget_layout_judges_secondary_analyses_on_one_seed():
    results = fake_results(3, headline_only_after_first=True)
    for k, r in enumerate(ex.seed_results(results)):
        SETTERS["E1a"][0](r, 1.0 + 0.1 * k)  # seeds never agree exactly
        if "iterative" in r["tickets"]:
            SETTERS["E5"][0](r, 5.0)
    assert _claim(results, "E1a").status == "held"  # the headline: three seeds
    e5 = _claim(results, "E5")
    assert e5.status == "inconclusive" and "1 seed" in e5.noise and e5.measured == pytest.approx(5.0)


def test_undefined_relative_changes_are_inconclusive():
    results = fake_results(3)
    for r in ex.seed_results(results):
        _set_buckets(r, -0.5)
    results["dense"]["metrics"]["AP_small"] = 0.0  # one seed's dense run finds no small object
    assert _claim(results, "E6").status == "inconclusive"


def test_reported_observations():
    claims = {c.name.split(".")[0]: c for c in ex.claims(fake_results(3))}
    assert claims["E1b"].status == claims["E3a"].status == "reported"
    assert claims["E1b"].measured == "within 1.5 points up to 95%" and claims["E3a"].measured == "10.0%"


# --- on a GPU ----------------------------------------------------------------------------------

def _structure(value, path=""):
    """Keys, list lengths and tensor/array dtypes and shapes (the number of detections, a viewer
    array's first dimension, may differ between devices)."""
    if isinstance(value, dict):
        return {k: _structure(v, f"{path}/{k}") for k, v in value.items() if k != "device"}
    if isinstance(value, (list, tuple)):
        return [_structure(v, path) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        shape = tuple(value.shape)
        return (str(value.dtype), shape[1:] if "/viewer" in path else shape)
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
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full-precision convolutions, as on the CPU
    gpu = ex.run(ex.from_budget("smoke", device="cuda", workers=1))
    assert gpu["config"]["device"] == "cuda"
    assert _structure(gpu) == _structure(smoke_results)
    tensors = [x for x in _leaves(gpu) if isinstance(x, torch.Tensor)]
    assert tensors and all(x.device.type == "cpu" for x in tensors)  # results never depend on the device
    for ours, theirs in zip(_leaves(gpu), _leaves(smoke_results)):
        if isinstance(ours, float):  # NaN only where the CPU run has it (a size bucket without objects)
            assert math.isnan(ours) == math.isnan(theirs) and not math.isinf(ours)
    assert all(torch.isfinite(w).all() for w in gpu["dense"]["state"].values() if w.is_floating_point())
    for seed in [gpu] + gpu["other_seeds"]:
        for section, entries in seed["tickets"].items():
            for r in entries:  # the masks hold on the GPU too
                assert r["revived"] == 0, section
                assert r["sparsity"]["num_prunable"] - r["sparsity"]["num_pruned"] == r["expected_kept"], section
    # same data, initialisation and batches: the first logged loss agrees, the rest drifts apart slowly
    assert gpu["pretrain"]["loss"][0] == pytest.approx(smoke_results["pretrain"]["loss"][0], rel=2e-2)
    assert gpu["pretrain"]["accuracy"] == pytest.approx(smoke_results["pretrain"]["accuracy"], abs=0.15)
    assert 0 <= gpu["dense"]["metrics"]["AP"] <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_run_on_cuda_returns_cpu_tensors():
    out = runs.pretrain(image_size=64, contrast=0.25, clutter=0.5, num_crops=16, crop_size=32, steps=2, lr=1e-3,
                        seed=0, batch_size=4, device="cuda")
    cpu = runs.pretrain(image_size=64, contrast=0.25, clutter=0.5, num_crops=16, crop_size=32, steps=2, lr=1e-3,
                        seed=0, batch_size=4)
    tensors = [x for x in _leaves(out) if isinstance(x, torch.Tensor)]
    assert tensors and all(x.device.type == "cpu" for x in tensors)
    assert _structure(out) == _structure(cpu)
    assert out["loss"][0] == pytest.approx(cpu["loss"][0], rel=2e-2)  # same init, same first batch
