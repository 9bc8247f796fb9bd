import inspect
import math

import numpy as np
import pytest
import torch
from smoke import smoke_run
from threadpoolctl import threadpool_limits

from labkit.experiments import dual_contrastive as ex
from labkit.experiments import dual_contrastive_runs as runs
from labkit.methods import dual_contrastive as dc
from labkit.models import ImageGenerator

TINY = dict(dataset="digits", image_size=16, steps=4, seed=3, eval_every=2, num_eval=100, classifier_steps=50)


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    # keeps LABKIT_CACHE_DIR on the fixture's fresh cache for the whole module, so the tiny runs
    # below reuse its metric classifier (same data, same classifier_steps)
    yield from smoke_run(ex, tmp_path_factory)


@pytest.fixture
def one_thread():
    """Direct runs single-threaded (torch and BLAS), as in the worker pool: threads crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        yield
    torch.set_num_threads(threads)


def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.DCLConfig()
    quick, full = ex.from_budget("quick"), ex.from_budget("full")
    assert quick.dataset == "digits" and quick.image_size == 16 and quick.rows == ("ns", "dcl", ex.FULL_MODEL)
    assert full.dataset == "scenes" and full.image_size == 32 and full.rows == tuple(ex.ROWS)
    assert full.seeds >= 2 and full.ring_seeds == 6 and full.probe
    assert ex.from_budget("smoke").rows == ("ns", "dcl") and ex.from_budget("smoke").ring_seeds == 1
    with pytest.raises(ValueError, match="unknown config field.*num_stpes.*valid fields.*ring_steps"):
        ex.from_budget("quick", num_stpes=3)
    with pytest.raises(ValueError, match="rows entry='dcl\\+attn'.*'dcl\\+g-attn'"):
        ex.from_budget("quick", rows=("ns", "dcl+attn"))
    with pytest.raises(ValueError, match="dataset='mnist'.*'digits', 'scenes'"):
        ex.from_budget("quick", dataset="mnist")
    with pytest.raises(ValueError, match="num_eval=900 is too large"):
        ex.from_budget("quick", num_eval=900)
    with pytest.raises(ValueError, match="image_size=24"):
        ex.from_budget("quick", image_size=24)
    with pytest.raises(ValueError, match="device='tpu'.*'cpu', 'cuda'"):
        ex.from_budget("quick", device="tpu")
    assert all(kwargs["device"] == "cpu" for _, kwargs in ex.gan_plan(quick))


def test_rows_and_plan():
    assert len(ex.ROWS) == 7 and ex.ROWS[ex.FULL_MODEL] == ("dcl", True, "reference")
    assert {loss for loss, _, _ in ex.ROWS.values()} == set(dc.GAN_LOSSES)
    full = ex.from_budget("full")
    plan = ex.gan_plan(full)
    assert len(plan) == 7 * full.seeds and {row for row, _ in plan} == set(ex.ROWS)
    assert plan[0][1]["d_attention"] == "reference" and plan[-1][1]["d_attention"] == "none"  # longest first
    signature = inspect.signature(runs.train_gan)
    for _, kwargs in plan:
        signature.bind(**kwargs)
    rings = ex.ring_plan(full)
    assert len(rings) == 2 * 6 and {r["loss"] for r in rings} == {"ns", "dcl"}
    assert ex.ring_plan(ex.from_budget("quick", ring_steps=0)) == []


def test_smoke_results_structure(smoke_results):
    res = smoke_results
    cfg = res["config"]
    assert set(res["runs"]) == {"ns", "dcl"} and res["floor"] > 0
    for row, entries in res["runs"].items():
        (r,) = entries
        assert (r["loss"], r["g_attention"], r["d_attention"]) == ex.ROWS[row]
        assert r["curve"]["step"] == [10, 20] and r["fd"] == pytest.approx(r["curve"]["fd"][-1])
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and r["validity"] is None
        assert 0 < r["probe"] <= 1 and 0 < r["probe_init"] <= 1
        assert r["logits"]["step"] == [0, 7, 13, 20] and r["logits"]["real"].shape == (4, runs.NUM_LOGITS)
        assert r["samples"].dtype == np.uint8 and r["samples"].shape == (runs.NUM_SHOWN, 1, 16, 16)
        assert r["d_maps"] is None and "d_loss" in r["history"] and "r1" in r["history"]
        G = ImageGenerator(**{k: v for k, v in r["generator"]["spec"].items() if k != "attention"})
        G.load_state_dict(r["generator"]["state"])
    assert [len(res["ring"][loss]) for loss in ("ns", "dcl")] == [1, 1]
    ring = res["ring"]["dcl"][0]
    assert ring["checkpoint_steps"] == [0, 10, 20, 30, 40, 50] and ring["heatmaps"].shape == (6, 40, 40)
    assert cfg["budget"] == "smoke"


def test_tables_and_claims(smoke_results):
    table = ex.ablation_table(smoke_results)
    assert [r["row"] for r in table] == ["ns", "dcl", "real vs real (floor)"]
    assert table[-1]["fd_mean"] == smoke_results["floor"] and math.isnan(table[0]["fd_std"])  # one seed
    assert [r["loss"] for r in ex.ring_table(smoke_results)] == ["ns", "dcl"]
    histograms = ex.logit_histograms(smoke_results["runs"]["dcl"][0], bins=10)
    assert [h["step"] for h in histograms] == [0, 7, 13, 20]
    assert all(h["real"].sum() == h["fake"].sum() == runs.NUM_LOGITS and len(h["edges"]) == 11 for h in histograms)
    claims = ex.claims(smoke_results)
    names = [c.name.split(".")[0] for c in claims]
    assert names == ["S1", "S2", "2a", "2b", "2c", "3", "4a", "4b", "5", "6"]
    asserted = [c for c in claims if c.asserted("quick")]
    assert [c.name[:2] for c in asserted] == ["S1", "S2"] and all(c.held for c in asserted)
    assert all(c.asserted_at == () for c in claims if c.name[0] in "2345")  # paper claims: reported only
    assert claims[-1].asserted_at == ("full",)  # the ring counter-example is expected to hold at full
    by_name = {c.name.split(".")[0]: c for c in claims}
    assert by_name["2b"].measured is None and "on scenes" in by_name["2b"].detail  # digits: no validity
    assert by_name["5"].measured is None  # rows not run at smoke
    assert not by_name["2a"].held and "one seed" in by_name["2a"].detail  # a single seed separates nothing


def test_held_needs_the_gain_to_exceed_the_pooled_std():
    def fake(ns, dcl):
        entries = lambda fds: [dict(fd=f, probe=None, seed=i) for i, f in enumerate(fds)]
        return dict(runs={"ns": entries(ns), "dcl": entries(dcl)})

    gain, pooled, held, _ = ex._gain(fake([30.0, 32.0, 34.0], [20.0, 22.0, 24.0]), "fd", "dcl", "ns", True)
    assert gain == pytest.approx(10.0) and pooled == pytest.approx(2.0) and held
    gain, pooled, held, _ = ex._gain(fake([30.0, 40.0], [28.0, 38.0]), "fd", "dcl", "ns", True)
    assert gain == pytest.approx(2.0) and not held  # the seeds' spread swamps the gain
    assert ex._gain(fake([30.0], [20.0]), "fd", "dcl", "ns", True)[2] is False


def test_a_tiny_run_repeats_exactly(smoke_results, one_thread):
    kwargs = dict(TINY, loss="dcl", g_attention=True, d_attention="reference")
    first, second = runs.train_gan(**kwargs), runs.train_gan(**kwargs)
    assert first["fd"] == second["fd"] and first["curve"] == second["curve"]
    assert first["probe"] == second["probe"] and first["precision"] == second["precision"]
    for key in ("real", "fake"):
        np.testing.assert_array_equal(first["logits"][key], second["logits"][key])
    np.testing.assert_array_equal(first["samples"], second["samples"])
    np.testing.assert_array_equal(first["d_maps"]["maps"], second["d_maps"]["maps"])
    assert first["d_maps"]["maps"].shape == (2, 64, 64)  # real and fake primaries at D's 8² trunk


def test_g_loss_is_called_in_the_generators_order(smoke_results, monkeypatch, one_thread):
    """Both losses take (real, fake); in G's call the reals carry no graph and the fakes do.
    Calling G's loss as (fake, real), the issue #289 bug, would flip the pattern."""
    calls = []
    d_fn, g_fn = dc.GAN_LOSSES["dcl"]

    def recorder(kind, fn):
        def record(real_logits, fake_logits):
            calls.append((kind, real_logits.requires_grad, fake_logits.requires_grad))
            return fn(real_logits, fake_logits)
        return record

    monkeypatch.setitem(runs.GAN_LOSSES, "dcl", (recorder("d", d_fn), recorder("g", g_fn)))
    runs.train_gan(**dict(TINY, steps=3, eval_every=3, probe=False), loss="dcl", g_attention=False, d_attention="self")
    assert calls == [("d", True, True), ("g", False, True)] * 3


def test_r1_only_on_the_primary_and_bad_arguments(one_thread):
    with pytest.raises(ValueError, match="loss='wgan'"):
        runs.train_gan(**dict(TINY, loss="wgan", g_attention=False, d_attention="none"))
    with pytest.raises(ValueError, match="d_attention='cross'"):
        runs.make_nets(1, 16, 8, False, "cross")
    G, D, judge, penultimate = runs.make_nets(1, 16, 8, True, "reference")
    x, ref = torch.rand(2, 1, 16, 16, requires_grad=True), torch.rand(2, 1, 16, 16)
    logits = judge(x, ref)
    assert logits.shape == (2,) and penultimate(x, ref).shape == (2, 64 * 8)
    assert float(dc.r1_penalty(x, logits).detach()) >= 0 and ref.grad is None


def test_a_tiny_scenes_run_probes_the_object_count(smoke_results, one_thread):
    result = runs.train_gan(**dict(TINY, dataset="scenes", image_size=32, steps=2, eval_every=2),
                            loss="ns", g_attention=False, d_attention="none")
    assert runs.PROBE_TARGETS["scenes"] == "count"
    assert 0 < result["probe"] <= 1 and 0 < result["probe_init"] <= 1 and 0 <= result["validity"] <= 1
    assert result["samples"].shape == (runs.NUM_SHOWN, 3, 32, 32)


def test_the_weight_average_follows_stylegan2_ada():
    assert runs.ema_decay(0, 64) == 0.0  # nothing to average yet
    assert runs.ema_decay(1, 64) < 1e-5  # the first step all but copies G
    assert runs.ema_decay(700, 64) == pytest.approx(0.5 ** (64 / (0.05 * 700 * 64)))  # ramp-up: ≈ 0.98
    capped = 0.5 ** (64 / (64 * 10_000 / 32))
    assert runs.ema_decay(10_000, 64) == pytest.approx(capped) == pytest.approx(runs.ema_decay(50_000, 64))


def test_batchnorm_statistics_are_recomputed_from_the_latents(one_thread):
    torch.manual_seed(0)
    G = ImageGenerator(16, 1, 16, 8)
    latents = torch.randn(1000, 16)
    runs._refresh_batchnorm(G, latents)
    assert not G.training
    norm = next(m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d))
    captured = []
    handle = norm.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    G.train()
    with torch.no_grad():
        for chunk in latents.split(500):
            G(chunk)
    handle.remove()
    per_chunk = torch.stack([x.mean((0, 2, 3)) for x in captured])
    torch.testing.assert_close(norm.running_mean, per_chunk.mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_tiny_run_trains_on_cuda(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    kwargs = dict(TINY, loss="dcl", g_attention=True, d_attention="reference")
    on_gpu, on_cpu = runs.train_gan(**kwargs, device="cuda"), runs.train_gan(**kwargs)
    assert np.isfinite(on_gpu["fd"]) and 0 < on_gpu["probe"] <= 1
    assert all(v.device.type == "cpu" for v in on_gpu["generator"]["state"].values())
    np.testing.assert_allclose(on_gpu["d_maps"]["maps"].sum(-1), 1, atol=1e-4)
    # the same latents and batches on both devices: the first logits (before any step) agree
    np.testing.assert_allclose(on_gpu["logits"]["real"][0], on_cpu["logits"]["real"][0], rtol=1e-3, atol=1e-4)
