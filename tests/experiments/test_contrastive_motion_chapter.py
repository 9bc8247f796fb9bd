"""Chapter 09 (hierarchical contrastive motion), the chapter: budgets and bad config, the plan, the
smoke run's rows, the tables, pathway costs, and the claim logic on hand-made 3-seed results."""
import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from smoke import leaves, smoke_run_one_thread, structure

from labkit.experiments import contrastive_motion as ex
from labkit.experiments import contrastive_motion_runs as runs


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    yield from smoke_run_one_thread(ex, tmp_path_factory)


def test_budgets_and_bad_fields():
    quick, full = ex.from_budget("quick"), ex.from_budget("full")
    assert quick == ex.MotionConfig() and quick.seeds == 1 and not quick.ablations
    assert full.seeds >= 3 and set(full.ablations) == set(ex.ABLATIONS) and full.label_budgets
    with pytest.raises(ValueError, match="ablations entry 'no fusion'"):
        ex.from_budget("quick", ablations=("no fusion",))
    with pytest.raises(ValueError, match="label_budgets entry=0"):
        ex.from_budget("quick", label_budgets=(0,))
    with pytest.raises(ValueError, match="sup_steps=0"):
        ex.from_budget("quick", sup_steps=0)
    with pytest.raises(ValueError, match="device='tpu'.*'cpu', 'cuda'"):
        ex.from_budget("smoke", device="tpu")
    assert quick.device == "cpu"


def test_every_row_gets_the_device_and_cuda_runs_in_this_process(monkeypatch):
    calls = []

    def fake_cached_runs(name, fn, kwargs, workers):
        calls.append((kwargs, workers))
        return [dict(seed=kw["seed"]) for kw in kwargs]

    monkeypatch.setattr(ex, "cached_runs", fake_cached_runs)
    cfg = ex.from_budget("smoke", workers=3)
    ex.run(cfg)
    ex.run(dataclasses.replace(cfg, device="cuda"))  # no check here: this machine may have no GPU
    (cpu_kwargs, cpu_workers), (cuda_kwargs, cuda_workers) = calls
    assert cpu_workers == 3 and cuda_workers == 1  # one GPU: the runs go in this process
    assert {kw["device"] for kw in cpu_kwargs} == {"cpu"} and {kw["device"] for kw in cuda_kwargs} == {"cuda"}
    assert len(cuda_kwargs) == len(ex.plan(cfg))


def test_plan_has_equal_supervised_steps_and_seeded_ablations():
    cfg = ex.from_budget("full")
    plan = ex.plan(cfg)
    assert {kw["sup_steps"] for *_, kw in plan} == {cfg.sup_steps}  # compute-fair on the labeled side
    seeds = lambda row: sorted(kw["seed"] for r, _, kw in plan if r == row)  # noqa: E731
    for row in ex.SEEDED_ABLATIONS:
        assert seeds(row) == [0, 1, 2]
    assert seeds("SSL, one level") == [0]
    budgets = {b for r, b, _ in plan if r == ex.SSL}
    assert budgets == {cfg.labeled_per_class, *cfg.label_budgets}


def test_motion_pathway_cost_is_counted_apart_from_appearance():
    net = runs.build_net("motion", widths=(4, 8, 8))
    cost = ex.pathway_cost(net, frames=5, size=16)
    appearance_only = ex.pathway_cost(runs.build_net("appearance", widths=(4, 8, 8)), frames=5, size=16)
    assert appearance_only["motion"] == dict(params=0, macs=0)
    assert cost["appearance"]["macs"] == appearance_only["appearance"]["macs"] > 0  # fusion is counted as motion
    assert cost["motion"]["macs"] > 0 and cost["motion"]["params"] > 0


def test_smoke_run_rows_tables_and_claims(smoke_results):
    assert set(smoke_results["rows"]) == {*ex.MAIN_ROWS, "SSL, one level"}
    assert set(smoke_results["rows"][ex.SSL]) == {2, 3}
    table = {t["row"]: t for t in ex.accuracy_table(smoke_results)}
    assert set(table) == {*ex.MAIN_ROWS, "SSL, one level"}
    probes = ex.probe_table(smoke_results)
    assert {t["feature"] for t in probes if t["row"] == ex.SSL} == {"z0", "m1", "m2"}
    assert {t["feature"] for t in probes if t["row"] == "SSL, one level"} == {"z0", "m1"}
    assert not any(t["row"] == ex.APPEARANCE for t in probes)
    net = ex.trained_net(smoke_results)
    assert net.levels == 2 and not net.training
    claims = ex.claims(smoke_results)
    assert len(claims) == 13 and len({c.name for c in claims}) == 13
    assert all(c.status in ("inconclusive", "not measured", "reported") for c in claims)


def _three_seeds(results, ssl_gain):
    out = copy.deepcopy(results)
    rng = np.random.default_rng(0)
    for row, budgets in out["rows"].items():
        for budget, found in budgets.items():
            base = found[0]
            budgets[budget] = []
            for seed in range(3):
                entry = copy.deepcopy(base)
                entry["seed"] = seed
                p = 0.4 + (ssl_gain if row == ex.SSL else 0.0) + 0.01 * seed
                if row == ex.APPEARANCE:
                    p = 0.12
                entry["test"]["correct"] = (rng.random(400) < p).astype(np.uint8)
                entry["test"]["overall"] = float(entry["test"]["correct"].mean())
                budgets[budget].append(entry)
    return out


def test_claims_follow_the_measured_gap(smoke_results):
    by_name = lambda claims: {c.name.split(".")[0]: c for c in claims}  # noqa: E731
    better = by_name(ex.claims(_three_seeds(smoke_results, 0.2)))
    assert better["1a"].status == "held" and better["1b"].status == "held" and better["2a"].status == "held"
    worse = by_name(ex.claims(_three_seeds(smoke_results, -0.2)))
    assert worse["2a"].status == "not reproduced"
    assert better["1a"].asserted("full")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_smoke_run_on_cuda_matches_the_cpu_run(smoke_results, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    gpu = ex.run(ex.from_budget("smoke", device="cuda", workers=1))
    assert gpu["config"] == {**smoke_results["config"], "device": "cuda"}
    assert structure(gpu) == structure(smoke_results)
    tensors = [x for x in leaves(gpu) if isinstance(x, torch.Tensor)]
    assert tensors and all(x.device.type == "cpu" for x in tensors)  # results never depend on the device
    assert all(torch.isfinite(x).all() for x in tensors if x.is_floating_point())
    for ours, theirs in zip(leaves(gpu), leaves(smoke_results)):
        if isinstance(ours, float):  # NaN only where the CPU run has it
            assert math.isnan(ours) == math.isnan(theirs) and not math.isinf(ours)
    for row, budgets in gpu["rows"].items():
        for budget, found in budgets.items():
            (ours,), (theirs,) = found, smoke_results["rows"][row][budget]
            assert ours["cost"] == theirs["cost"], row  # the same network
            # same initialisation and first batch: the first logged loss agrees (TF32 convolutions aside)
            stage = "stage_a" if "stage_a" in ours else "stage_b"
            first = (ours[stage]["loss"]["value"][0], theirs[stage]["loss"]["value"][0])
            assert first[0] == pytest.approx(first[1], rel=2e-2), (row, budget)
            assert 0 <= ours["test"]["overall"] <= 1 and ours["test"]["correct"].dtype == np.uint8
    net = ex.trained_net(gpu)  # rebuilt on the CPU from the stored weights
    assert next(net.parameters()).device.type == "cpu"
