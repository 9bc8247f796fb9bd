import numpy as np
import pytest
import torch

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


def test_bounds_check_is_tight():
    bounds = ex.bounds_check(num_random=3)
    assert bounds["worst_violation"] <= 1e-9
    assert bounds["collapsed_error"] < 1e-6 and bounds["isotropic_error"] < 1e-6


def test_smoke_run_and_claims(smoke_results):
    res = smoke_results
    assert len(res["grid"]) == 2 * 2 and len(res["ablation"]) == len(ex.ABLATIONS)
    assert res["circle"][0]["embeddings"].shape == (2, 400, 2)
    names = [c.name.split(".")[0] for c in ex.claims(res)]
    assert names == ["1", "2a", "2b", "3", "5", "6"]  # no triplet at smoke -> no claim 4
    five = next(c for c in ex.claims(res) if c.name.startswith("5"))
    assert five.measured is None and not five.held
    b_below_d = ex.ablation_table(res)[-1]
    assert "b=15 < d=16" in b_below_d["warning"]


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
