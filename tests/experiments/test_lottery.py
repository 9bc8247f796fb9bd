import math

import pytest
import torch
from smoke import smoke_run

from labkit.experiments import lottery as ex
from labkit.experiments import lottery_runs as runs
from labkit.methods import lottery


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    yield from smoke_run(ex, tmp_path_factory)


def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.LotteryConfig()
    full = ex.from_budget("full")
    assert full.sparsities == (0.5, 0.8, 0.9, 0.95) and full.control_sparsity == 0.9
    assert full.iterative_rounds == 4 and len(full.module_subsets) == 6
    with pytest.raises(ValueError, match="unknown config field.*sparsity.*valid fields"):
        ex.from_budget("quick", sparsity=0.5)
    with pytest.raises(ValueError, match="sparsities entry 1.2"):
        ex.from_budget("quick", sparsities=(0.5, 1.2))
    with pytest.raises(ValueError, match="module_subsets"):
        ex.from_budget("quick", module_subsets=("neck",))
    with pytest.raises(ValueError, match="optimizer"):
        ex.from_budget("quick", optimizer="adam")


def test_the_prunable_set_follows_the_coco_rule():
    model = runs.make_detector(0)
    names = set(runs.detector_weights(model))
    assert names == {"base.conv1.conv.weight", "base.conv2.conv.weight", "base.conv3.conv.weight",
                     "base.conv4.conv.weight", "rpn.conv.weight", "top.fc1.weight", "top.fc2.weight"}
    assert set(runs.detector_weights(model, ("heads",))) == {"heads.cls_score.weight", "heads.bbox_pred.weight"}
    shares = runs.module_shares(model)
    assert math.isclose(sum(shares.values()), 1.0) and shares["top"] > 0.5  # Top is the majority, as in the paper


def test_plan_dedupes_the_main_rewind_point():
    cfg = ex.from_budget("full")
    plan = ex.ticket_plan(cfg, "dense.pt")
    sections = [s for s, _ in plan]
    assert sections.count("global") == 4 and sections.count("layerwise") == 3 and sections.count("modules") == 6
    rewinds = [kw["rewind_step"] for s, kw in plan if s == "rewind"]
    assert rewinds == sorted({ex.rewind_step(cfg, f) for f in (0.0, 0.1, 0.25, 0.5, 0.8)})
    main = [kw for s, kw in plan if s == "global" and kw["keep"] == 0.1][0]
    same = [kw for s, kw in plan if s == "rewind" and kw["rewind_step"] == ex.rewind_step(cfg)][0]
    assert main == same  # cached_runs computes identical runs once


def test_smoke_results_cover_every_view(smoke_results):
    res = smoke_results
    cfg = res["config"]
    assert set(res["tickets"]) == {"global", "layerwise", "random_reinit", "random_mask", "iterative", "rewind",
                                   "modules", "transfer"}
    for section, entries in res["tickets"].items():
        for r in entries:
            assert r["revived"] == 0, section  # masks held through retraining
            assert r["sparsity"]["num_prunable"] - r["sparsity"]["num_pruned"] == r["expected_kept"], section
            assert len(r["folds"]) == cfg["num_folds"] and len(r["viewer"]) == runs.VIEWER_IMAGES
    main = res["tickets"]["global"][0]
    assert main["sparsity"]["prunable"] == pytest.approx(0.8, abs=1e-5)
    assert main["sparsity"]["network"] < main["sparsity"]["prunable"]  # predictors, biases, BN stay dense
    transfer = res["tickets"]["transfer"][0]
    assert transfer["sparsity"]["network"] < 0.2 and transfer["backbone_sparsity"] == pytest.approx(0.8)
    iterative = res["tickets"]["iterative"][0]
    assert [round(r["keep"], 6) for r in iterative["rounds"]] == [round(k, 6) for k in lottery.keep_schedule(0.2, 3)]
    assert "checkpoints" not in res["dense"]
    assert res["viewer_images"].shape[0] == runs.VIEWER_IMAGES
    assert len(res["class_frequencies"]) == len(runs.CLASSES) and sum(res["class_frequencies"]) > 0


def test_tables(smoke_results):
    rows = ex.ticket_rows(smoke_results)
    assert rows[0]["method"] == "dense" and rows[0]["network_sparsity"] == 0
    assert any(r["method"] == "iterative (round 1)" for r in rows)
    buckets = ex.bucket_changes(smoke_results)
    assert [r["bucket"] for r in buckets] == list(ex.BUCKETS)
    rewinds = ex.rewind_rows(smoke_results)
    assert [r["rewind_step"] for r in rewinds] == sorted(r["rewind_step"] for r in rewinds)
    assert len(ex.class_changes(smoke_results, 0.8)) == len(runs.CLASSES)
    assert all(0 <= r["iou"] <= 1 for r in ex.early_bird_rows(smoke_results))
    assert [r["subset"] for r in ex.module_rows(smoke_results)] == ["top"]


def test_claims_names_and_invariants(smoke_results):
    claims = ex.claims(smoke_results)
    names = [c.name.split(".")[0] for c in claims]
    assert names[:2] == ["S1", "S2"] and "E2" in names and "E8" in names
    asserted = [c for c in claims if c.asserted("quick")]
    assert [c.name.split(".")[0] for c in asserted] == ["S1", "S2"] and all(c.held for c in asserted)
    assert all(not c.asserted_at for c in claims if c.name.startswith("E"))  # reported, not asserted


def test_s1_fails_when_a_ticket_keeps_too_many(smoke_results):
    broken = {**smoke_results, "tickets": {**smoke_results["tickets"]}}
    bad = dict(broken["tickets"]["global"][0], expected_kept=broken["tickets"]["global"][0]["expected_kept"] - 1)
    broken["tickets"]["global"] = [bad]
    assert not ex.claims(broken)[0].held


def test_interval_and_points():
    assert math.isnan(ex._interval([1.0]))
    assert ex._interval([1.0, 1.0, 1.0]) == 0
    assert ex._interval([0.0, 2.0]) == pytest.approx(12.706 * 1.0, rel=1e-3)  # t(0.975, 1) · s / √2


def test_ticket_rejects_an_unsaved_rewind_point(tmp_path):
    path = tmp_path / "dense.pt"
    model = runs.make_detector(0)
    torch.save({"state": model.state_dict(), "checkpoints": {0: lottery.checkpoint(model, None, 0)}}, path)
    data = dict(image_size=64, contrast=0.25, clutter=0.5, num_train=8, num_test=4, seed=0)
    with pytest.raises(ValueError, match="rewind_step=5.*saved \\[0\\]"):
        runs.ticket(data, {}, str(path), "global", 0.5, 5, 2)
    with pytest.raises(ValueError, match="method"):
        runs.ticket(data, {}, str(path), "magic", 0.5, 0, 2)
