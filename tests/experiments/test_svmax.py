import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from labkit import report
from labkit.experiments import svmax as ex
from labkit.experiments.svmax_runs import train_retrieval, train_ring_gan, train_unit_circle
from smoke import smoke_run


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    yield from smoke_run(ex, tmp_path_factory)


def test_config_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.SVMaxConfig()
    full = ex.from_budget("full")
    assert full.losses == ("contrastive", "triplet", "npair", "angular") and full.sweep_dims
    with pytest.raises(ValueError, match="unknown config field.*num_stpes.*valid fields"):
        ex.from_budget("quick", num_stpes=3)
    with pytest.raises(ValueError, match="budget='medium'"):
        ex.from_budget("medium")
    with pytest.raises(ValueError, match="device='tpu'.*'cpu', 'cuda'"):
        ex.from_budget("smoke", device="tpu")
    for train in (lambda: train_retrieval("contrastive", 0.1, 0, num_steps=1, device="tpu"),
                  lambda: train_unit_circle("svmax", 0, device="tpu"),
                  lambda: train_ring_gan(0.005, 0.01, 0, num_steps=1, device="tpu")):
        with pytest.raises(ValueError, match="device='tpu'"):
            train()


def test_run_lists_match_the_plan():
    cfg = ex.from_budget("quick")
    grid = ex.grid_runs(cfg)
    # 2 losses x 3 lrs x 3 seeds x (vanilla, svmax) + triplet's extra lambda = 1 row
    assert len(grid) == 2 * 3 * 3 * 2 + 3 * 3
    assert {r["lam"] for r in grid if r["loss"] == "triplet" and r["variant"] == "svmax"} == {0.1, 1.0}
    sweep = ex.sweep_runs(ex.from_budget("full"))
    assert {(r["classes_per_batch"] * r["samples_per_class"], r["embedding_dim"]) for r in sweep} == {
        (b, d) for b in (40, 80, 160) for d in (8, 16, 32)}
    assert ex.sweep_runs(cfg) == []
    full = ex.from_budget("full")
    every_run = ex.grid_runs(full) + ex.ablation_runs(full) + ex.sweep_runs(full) + ex.gan_runs(full)
    assert {r["device"] for r in every_run} == {"cpu"}


def test_smoke_run_and_claims(smoke_results):
    res = smoke_results
    assert len(res["grid"]) == 2 * 2 and len(res["ablation"]) == len(ex.ABLATIONS)
    assert res["circle"][0]["embeddings"].shape == (2, 400, 2)
    claims = {c.name.split(".")[0]: c for c in ex.claims(res)}
    assert list(claims) == ["2a", "2b", "3", "5", "6a", "6b"]  # no triplet at smoke -> no claim 4
    assert claims["5"].status == claims["6b"].status == "not measured"
    for key in ("2a", "2b", "3", "6a"):  # one seed: no interval, so never held
        assert claims[key].status == "inconclusive" and claims[key].low == -np.inf
    b_below_d = ex.ablation_table(res)[-1]
    assert "b=15 < d=16" in b_below_d["warning"]
    assert np.isnan(b_below_d["r1_std"])  # a std over one seed is not a number


def test_svmax_spreads_the_embedding_at_a_large_lr():
    kwargs = dict(loss="contrastive", lr=0.5, seed=0, num_steps=150, num_checkpoints=2)
    vanilla = train_retrieval(variant="vanilla", lam=0.0, **kwargs)
    regularized = train_retrieval(variant="svmax", lam=1.0, **kwargs)
    assert regularized["spread"] > vanilla["spread"] + 0.1
    assert regularized["spectra"].shape == (3, 16)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="variant='svmx'"):
        train_retrieval("contrastive", 0.1, 0, variant="svmx", num_steps=1)
    with pytest.raises(ValueError, match="variant='plain'"):
        train_unit_circle("plain", 0)


def test_ring_gan_heatmaps_count_samples_and_unrolling_restores_d():
    run = train_ring_gan(0.005, 0.01, 0, num_steps=20, num_checkpoints=2, num_samples=500, extent=50.0)
    assert run["heatmaps"].shape[0] == len(run["checkpoint_steps"]) == 3
    assert np.allclose(run["heatmaps"].sum(axis=(1, 2)), 500)  # a huge extent holds every sample
    unrolled = train_ring_gan(0.005, 0.0, 0, num_steps=3, num_checkpoints=1, unroll_steps=2)
    assert unrolled["unroll_steps"] == 2 and np.isfinite(unrolled["history"]["g_loss"]["value"]).all()


def test_unrolled_discriminator_restores_weights():
    from labkit.experiments.svmax_runs import _unrolled_discriminator

    D = torch.nn.Linear(2, 1)
    before = {k: v.clone() for k, v in D.state_dict().items()}

    def d_step():
        with torch.no_grad():
            D.weight.add_(1.0)

    saved = _unrolled_discriminator(D, d_step, 3)
    assert torch.equal(D.weight, before["weight"] + 3)
    D.load_state_dict(saved)
    assert torch.equal(D.weight, before["weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_same_runs_work_on_cuda():
    run = train_retrieval("contrastive", 0.1, 0, "svmax", 1.0, num_steps=20, device="cuda")
    assert np.isfinite(run["recall"]["1"])
    gan = train_ring_gan(0.005, 0.01, 0, num_steps=10, num_checkpoints=1, device="cuda")
    assert gan["heatmaps"].shape[0] == 2


# ---- claims on hand-made results: each comparison can come out held, not reproduced, inconclusive ----

CONTRASTIVE_GAINS = {0.5: 0.30, 0.1: 0.20, 0.01: 0.05}  # R@1(SVMax) − R@1(vanilla) per lr


def synthetic_results(seeds=(0, 1, 2, 3, 4), noise=0.005, contrastive=CONTRASTIVE_GAINS, spread=0.3,
                      lam1_minus_lam01=-0.1, lam01_minus_vanilla=0.05, sweep=0.1, modes=2.0, seed_effect=0.05):
    """Per-seed numbers: a seed effect shared by a seed's runs (it cancels in a paired difference) plus
    ``noise`` times a zero-mean pattern over seeds, shifted per variant, so each mean gain is exact."""
    cfg = ex.from_budget("quick", sweep_batch_sizes=(40, 80), sweep_dims=(8, 16), gan_unrolled_lrs=(0.025,))
    pattern = np.linspace(-1.0, 1.0, len(seeds)) if len(seeds) > 1 else np.zeros(1)

    def jitter(i, shift):  # shift 0, 1, 2: a different zero-mean pattern for each variant
        return noise * np.roll(pattern, shift)[i]

    def retrieval(i, shift, r1, spread_value=0.3, **fields):
        return dict(seed=seeds[i], recall={"1": r1 + seed_effect * seeds[i] + jitter(i, shift)},
                    spread=spread_value + jitter(i, shift), **fields)

    grid, sweep_runs, gan = [], [], []
    for loss, (j, lr), i in itertools.product(cfg.losses, enumerate(cfg.lrs), range(len(seeds))):
        cell = dict(loss=loss, lr=lr)  # patterns rolled by the lr too: gains at two lrs differ by seed
        grid.append(retrieval(i, j, 0.5, variant="vanilla", lam=0.0, **cell))
        gain = contrastive[lr] if loss == "contrastive" else lam01_minus_vanilla
        grid.append(retrieval(i, j + 1, 0.5 + gain, 0.3 + spread, variant="svmax", lam=ex.PAPER_LAMBDA[loss], **cell))
        if loss == "triplet":
            grid.append(retrieval(i, j + 2, 0.5 + gain + lam1_minus_lam01, variant="svmax", lam=1.0, **cell))
    for b, d, i in itertools.product(cfg.sweep_batch_sizes, cfg.sweep_dims, range(len(seeds))):
        for k, (variant, r1) in enumerate((("vanilla", 0.5), ("svmax", 0.5 + sweep))):
            sweep_runs.append(retrieval(i, k, r1, variant=variant, batch_size=b, embedding_dim=d))
    for lr, unroll, i in itertools.product(cfg.gan_lrs, (0, 5), range(len(seeds))):
        for k, (lam, covered) in enumerate(((0.0, 3.0), (0.01, 3.0 + modes))):
            value = covered + seeds[i] % 3 + 10 * jitter(i, k)
            gan.append(dict(lr=lr, lam=lam, seed=seeds[i], unroll_steps=unroll, modes_covered=np.full(4, value)))
    return {"config": dataclasses.asdict(cfg), "grid": grid, "sweep": sweep_runs, "gan": gan}


def statuses(results):
    return {c.name.split(".")[0]: c.status for c in ex.claims(results)}


COMPARISONS = ["2a", "2b", "3", "4a", "4b", "5", "6a", "6b"]


def test_claims_hold_on_clear_paired_gains_despite_a_large_seed_effect():
    # the seed effect (0.05 R@1 per seed) is ten times the noise: only pairing by seed sees the gains
    assert statuses(synthetic_results()) == dict.fromkeys(COMPARISONS, "held")


def test_claims_are_not_reproduced_when_the_gains_go_the_other_way():
    results = synthetic_results(contrastive={0.5: 0.0, 0.1: 0.1, 0.01: 0.2}, spread=-0.2, lam1_minus_lam01=0.1,
                                lam01_minus_vanilla=-0.1, sweep=-0.1, modes=-2.0)
    assert statuses(results) == dict.fromkeys(COMPARISONS, "not reproduced")


def test_claims_are_inconclusive_with_one_seed_or_within_noise():
    assert statuses(synthetic_results(seeds=(0,))) == dict.fromkeys(COMPARISONS, "inconclusive")
    noisy = synthetic_results(noise=0.3, contrastive={0.5: 0.1, 0.1: 0.1, 0.01: 0.1}, spread=0.0,
                              lam1_minus_lam01=0.0, lam01_minus_vanilla=-0.03, sweep=0.0, modes=0.0)
    assert statuses(noisy) == dict.fromkeys(COMPARISONS, "inconclusive")


def test_claim_2a_needs_the_whole_interval_above_plus_ten_points():
    claim = ex.claims(synthetic_results(contrastive={0.5: 0.11, 0.1: 0.1, 0.01: 0.05}, noise=0.02))[0]
    assert claim.name.startswith("2a") and claim.threshold == 0.10 and claim.measured > 0.10
    assert claim.status == "inconclusive" and claim.low < 0.10 < claim.high
    assert "paired t over 5 seeds" in claim.noise


def gains(*values):
    return dict(enumerate(values))


def test_every_cell_is_decided_by_its_weakest_cell():
    clear, weak = gains(0.30, 0.31, 0.29, 0.30), gains(0.2, -0.1, 0.3, 0.0)
    name, estimate = ex.every_cell({"a": clear, "b": weak}, 0.0, ">")
    assert name == "b" and estimate.low < 0 < estimate.high and "Bonferroni over 2 cells" in estimate.method
    name, estimate = ex.every_cell({"a": clear, "b": gains(0.1, 0.12, 0.11, 0.1)}, 0.0, ">")
    assert name == "b" and estimate.low > 0 and "weakest of 2 cells: b" in estimate.method


def test_one_cell_below_refutes_only_beyond_the_bonferroni_level():
    below = gains(-0.10, -0.12, -0.11, -0.10)  # far below 0: refutes at any level
    name, estimate = ex.every_cell({"a": gains(0.3, 0.31, 0.29, 0.3), "b": below}, 0.0, ">")
    assert name == "b" and report.verdict(estimate, 0.0, ">") == "not reproduced"
    barely = gains(-0.05, -0.03, -0.06, -0.04)  # below 0 at 95 %, not at 1 − 0.05/12
    assert report.verdict(report.seed_interval(list(barely.values())), 0.0, ">") == "not reproduced"
    cells = {f"c{i}": gains(0.3, 0.31, 0.29, 0.3) for i in range(11)} | {"barely": barely}
    name, estimate = ex.every_cell(cells, 0.0, ">")
    assert name == "barely" and report.verdict(estimate, 0.0, ">") == "inconclusive"


def test_every_cell_below_a_threshold():
    name, estimate = ex.every_cell({"lr 1": gains(-0.2, -0.21, -0.19), "lr 2": gains(-0.05, -0.06, -0.04)}, 0.0, "<")
    assert name == "lr 2" and estimate.high < 0
    name, estimate = ex.every_cell({"lr 1": gains(-0.2, -0.21, -0.19), "lr 2": gains(0.2, 0.21, 0.19)}, 0.0, "<")
    assert name == "lr 2" and estimate.low > 0


def test_cell_and_sweep_tables_give_each_cell_its_interval():
    results = synthetic_results()
    rows = ex.cell_table(results)
    assert [r["claim"] for r in rows] == ["3"] * 6 + ["4a"] * 3 + ["4b"] * 3 + ["5"] * 4
    assert all(r["verdict"] == "held" and r["seeds"] == 5 for r in rows)
    sweep = ex.sweep_table(results)
    assert [(r["b"], r["d"]) for r in sweep] == [(40, 8), (40, 16), (80, 8), (80, 16)]
    assert all(r["gain_low"] < r["gain"] < r["gain_high"] and abs(r["gain"] - 0.1) < 0.02 for r in sweep)


def test_seeds_without_a_partner_are_not_paired():
    results = synthetic_results()
    results["grid"] = [r for r in results["grid"] if not (r["variant"] == "vanilla" and r["seed"] == 0)]
    claim = ex.claims(results)[0]
    assert "4 seeds" in claim.noise
    with pytest.raises(ValueError, match="no seed has both"):
        ex._seed_gains(results["grid"], ex._r1, dict(variant="svmax", loss="npair"), dict(variant="vanilla"))


def _same_layout(cpu, gpu, where="results"):
    """``gpu`` has ``cpu``'s keys, types and array shapes, finite where ``cpu`` is finite, every
    tensor on the CPU. The warnings a run caught are checked apart (CUDA may add its own)."""
    assert type(gpu) is type(cpu), where
    if isinstance(cpu, dict):
        assert set(gpu) == set(cpu), where
        for key in set(cpu) - {"warnings"}:
            _same_layout(cpu[key], gpu[key], f"{where}.{key}")
        if "warnings" in cpu:
            assert set(cpu["warnings"]) <= set(gpu["warnings"]), where
    elif isinstance(cpu, (list, tuple)):
        assert len(gpu) == len(cpu), where
        for i, (a, b) in enumerate(zip(cpu, gpu)):
            _same_layout(a, b, f"{where}[{i}]")
    elif isinstance(cpu, torch.Tensor):
        assert gpu.device.type == "cpu" and gpu.shape == cpu.shape and gpu.dtype == cpu.dtype, where
    elif isinstance(cpu, np.ndarray):
        assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype, where
        if cpu.dtype.kind == "f":
            assert np.isfinite(gpu)[np.isfinite(cpu)].all(), where
    elif isinstance(cpu, float):
        assert math.isfinite(gpu) or not math.isfinite(cpu), where


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_smoke_budget_runs_end_to_end_on_cuda(smoke_results, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    on_gpu = ex.run(ex.from_budget("smoke", workers=1, device="cuda"))
    assert on_gpu["config"]["device"] == "cuda"
    on_gpu["config"]["device"] = "cpu"
    _same_layout(smoke_results, on_gpu)
    # the same initial weights on both devices (drawn on the CPU): the step-0 spectra and circle agree
    for cpu, gpu in zip(smoke_results["grid"] + smoke_results["ablation"], on_gpu["grid"] + on_gpu["ablation"]):
        assert (gpu["variant"], gpu["lr"], gpu["seed"]) == (cpu["variant"], cpu["lr"], cpu["seed"])
        np.testing.assert_allclose(gpu["spectra"][0], cpu["spectra"][0], rtol=1e-4, atol=1e-5)
    for cpu, gpu in zip(smoke_results["circle"], on_gpu["circle"]):
        np.testing.assert_allclose(gpu["embeddings"][0], cpu["embeddings"][0], atol=1e-5)
        np.testing.assert_array_equal(gpu["labels"], cpu["labels"])
    assert [c.name for c in ex.claims(on_gpu)] == [c.name for c in ex.claims(smoke_results)]
