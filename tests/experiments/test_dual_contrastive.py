import inspect
import math

import numpy as np
import pytest
import torch
from smoke import smoke_run

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


def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.DCLConfig()
    quick, full = ex.from_budget("quick"), ex.from_budget("full")
    assert quick.dataset == "digits" and quick.image_size == 16 and quick.rows == ("ns", "dcl", ex.FULL_MODEL)
    assert full.dataset == quick.dataset == "digits" and full.image_size == 16 and full.rows == ex.CLAIM_ROWS
    assert full.seeds >= 3 and full.ring_seeds >= 3 and full.probe  # every comparison over >= 3 seeds
    assert (full.width, full.lr, full.betas) == (quick.width, quick.lr, quick.betas)  # one recipe
    assert full.steps // full.eval_every * ex.CONVERGENCE_WINDOW >= ex.MIN_WINDOW_CHECKPOINTS  # checkable
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
    assert all(kwargs["device"] == "cpu" for kwargs in ex.ring_plan(quick))
    with pytest.raises(ValueError, match="device='tpu'"):
        ex.from_budget("smoke", device="tpu")


def test_rows_and_plan():
    assert len(ex.ROWS) == 7 and ex.ROWS[ex.FULL_MODEL] == ("dcl", True, "reference")
    assert {loss for loss, _, _ in ex.ROWS.values()} == set(dc.GAN_LOSSES)
    full = ex.from_budget("full")
    plan = ex.gan_plan(full)
    assert len(plan) == len(ex.CLAIM_ROWS) * full.seeds and {row for row, _ in plan} == set(ex.CLAIM_ROWS)
    assert all(kwargs["width"] == full.width and kwargs["betas"] == full.betas for _, kwargs in plan)
    claimed = {"dcl", "ns", ex.FULL_MODEL, "dcl+g-attn", "dcl+g-attn+d-self"}  # the rows of 2a–2c, 3, 4a, 5
    assert set(ex.CLAIM_ROWS) == claimed
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
    assert [c.name.split(".")[0] for c in claims[2:]] == ["2a", "2b", "2c", "3", "4a", "4b", "5", "6"]
    assert [c.status for c in claims[:2]] == ["reported", "reported"]  # distance to the floor, convergence
    assert not any(c.asserted_at for c in claims)
    by_name = {c.name.split(".")[0]: c for c in claims}
    assert by_name["2b"].status == "not measured" and "on scenes" in by_name["2b"].detail  # digits: no validity
    assert by_name["5"].status == "not measured"  # rows not run at smoke
    for key in ("2a", "3", "6"):  # one seed: an infinite interval, so nothing is judged
        assert by_name[key].status == "inconclusive" and by_name[key].high == math.inf
    assert "too few checkpoints" in by_name["2a"].detail  # 2 checkpoints: convergence cannot be told


# --- the verdicts, on hand-made per-seed numbers ---------------------------------------------------

STEPS = list(range(100, 1300, 100))  # 12 checkpoints: 5 in the last third


def hand_made(fds: dict[str, list[float]], *, falling: float = 0.0, probe: dict | None = None,
              seeds: dict | None = None, floor: float = 2.0) -> dict:
    """Results with the given final FD per row and seed. Each FD curve ends at that value; with
    ``falling`` it starts ``falling`` × higher and falls linearly (flat otherwise). ``probe[row]``
    lists per-seed uint8 arrays of probe correctness."""
    def run(row, k, fd):
        seed = (seeds or {}).get(row, range(100))[k]
        curve = [fd * (1 + falling * (1 - i / (len(STEPS) - 1))) for i in range(len(STEPS))]
        items = (probe or {}).get(row)
        return dict(seed=seed, fd=fd, validity=None, curve=dict(step=STEPS, fd=curve), probe_init=0.5,
                    probe=None if items is None else float(items[k].mean()),
                    probe_correct=None if items is None else items[k])
    return dict(floor=floor, config=dict(num_eval=800, ring_steps=0), ring={},
                runs={row: [run(row, k, fd) for k, fd in enumerate(values)] for row, values in fds.items()},
                rows={row: dict(zip(("loss", "g_attention", "d_attention"), ex.ROWS[row])) for row in fds})


def claim(results, key):
    return next(c for c in ex.claims(results) if c.name.startswith(key + "."))


def test_fd_change_and_the_convergence_check():
    assert ex.fd_change(STEPS, [5.0] * 12) == pytest.approx(0.0)
    line = [20.0 - i for i in range(12)]  # falls 1 a checkpoint; the last third spans 400 steps
    window = line[-5:]
    assert ex.fd_change(STEPS, line) == pytest.approx(-4.0 / np.mean(window))
    assert math.isnan(ex.fd_change([100, 200], [3.0, 2.0]))  # too few checkpoints to tell
    flat = hand_made({"ns": [30.0, 31.0]})
    assert ex.row_convergence(flat, "ns")["converged"]
    assert not ex.row_convergence(hand_made({"ns": [30.0, 31.0]}, falling=1.0), "ns")["converged"]
    rising = hand_made({"ns": [30.0]}, falling=-0.5)  # FD climbing at the end: not a plateau either
    assert ex.row_convergence(rising, "ns")["change"] > ex.CONVERGENCE_TOL
    assert not ex.row_convergence(rising, "ns")["converged"]
    near = ex.row_convergence(hand_made({"ns": [5.0, 5.8]}, falling=1.0, floor=2.0), "ns")  # 2.7× the floor
    assert near["change"] < -ex.CONVERGENCE_TOL and near["in_floors"] == pytest.approx(2.7) and near["converged"]
    assert not ex.row_convergence(hand_made({"ns": [6.2, 6.2]}, falling=1.0, floor=2.0), "ns")["converged"]


def test_an_fd_claim_can_be_held_not_reproduced_or_inconclusive():
    held = claim(hand_made({"ns": [30.0, 32.0, 34.0], "dcl": [20.0, 22.5, 24.0]}), "2a")
    assert held.status == "held" and held.high < 0 and held.noise == "paired t over 3 seeds"
    worse = claim(hand_made({"ns": [20.0, 22.5, 24.0], "dcl": [30.0, 32.0, 34.0]}), "2a")
    assert worse.status == "not reproduced" and worse.low > 0
    noisy = claim(hand_made({"ns": [30.0, 40.0, 35.0], "dcl": [28.0, 45.0, 30.0]}), "2a")
    assert noisy.status == "inconclusive" and noisy.low < 0 < noisy.high
    one_seed = claim(hand_made({"ns": [30.0], "dcl": [20.0]}), "2a")
    assert one_seed.status == "inconclusive" and one_seed.high == math.inf
    unpaired = claim(hand_made({"ns": [30.0, 32.0, 34.0], "dcl": [20.0, 22.0, 24.0]},
                               seeds={"ns": [0, 1, 2], "dcl": [5, 6, 7]}), "2a")
    assert unpaired.noise.startswith("Welch") and unpaired.status == "held"
    ref = claim(hand_made({"dcl+g-attn+d-self": [30.0, 33.0, 31.0], "dcl+g-attn+d-ref": [35.0, 38.0, 37.0]}), "5")
    assert ref.status == "not reproduced" and ref.check == "FD(dcl+g-attn+d-ref) − FD(dcl+g-attn+d-self) < 0"


def test_an_unconverged_comparison_is_inconclusive_not_judged():
    fds = {"ns": [20.0, 22.5, 24.0], "dcl": [30.0, 32.0, 34.0]}
    assert claim(hand_made(fds), "2a").status == "not reproduced"
    still_falling = claim(hand_made(fds, falling=1.0), "2a")
    assert still_falling.status == "inconclusive" and "not converged" in still_falling.detail
    assert "the interval alone says not reproduced" in still_falling.detail
    assert still_falling.high < 0 or still_falling.low > 0  # the interval itself is kept, only the verdict changes
    better = {"ns": fds["dcl"], "dcl": fds["ns"]}  # a gain before the plateau is not judged either
    assert claim(hand_made(better, falling=1.0), "2a").status == "inconclusive"
    observed = ex.claims(hand_made(fds, falling=1.0))[1]
    assert observed.status == "reported" and observed.measured == "0 of 2"


def test_the_probe_claim_bootstraps_seeds_and_test_images():
    rng = np.random.default_rng(0)

    def items(rate, num_seeds=3):
        return [(rng.random(400) < rate).astype(np.uint8) for _ in range(num_seeds)]

    def probe_claim(dcl, ns):
        return claim(hand_made({"ns": [30.0] * len(ns), "dcl": [30.0] * len(dcl)}, probe={"ns": ns, "dcl": dcl}), "3")

    held = probe_claim(items(0.95), items(0.80))
    assert held.status == "held" and "bootstrap" in held.noise and "3 seeds × 400 held-out images" in held.noise
    assert probe_claim(items(0.80), items(0.95)).status == "not reproduced"
    assert probe_claim(items(0.90), items(0.90)).status == "inconclusive"
    assert probe_claim(items(0.95, 1), items(0.80, 1)).status == "inconclusive"  # one seed


def test_the_ring_claim_pairs_modes_by_seed():
    def ring_claim(ns, dcl):
        results = hand_made({"ns": [30.0]})
        results["config"]["ring_steps"] = 5000
        results["ring"] = {loss: [dict(seed=s, final=dict(modes_covered=m, high_quality_fraction=0.5))
                                  for s, m in enumerate(modes)] for loss, modes in (("ns", ns), ("dcl", dcl))}
        return claim(results, "6")

    held = ring_claim([8, 7, 8, 6, 8, 8], [2, 3, 2, 4, 2, 3])
    assert held.status == "held" and held.noise == "paired t over 6 seeds" and held.measured == pytest.approx(-29 / 6)
    assert ring_claim([2, 3, 2, 4, 2, 3], [8, 7, 8, 6, 8, 8]).status == "not reproduced"
    assert ring_claim([8, 2, 7, 3, 6, 8], [2, 8, 6, 7, 5, 8]).status == "inconclusive"


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
    # the maps the views draw are distributions over the reference's positions (softmax rows)
    np.testing.assert_allclose(first["d_maps"]["maps"].sum(-1), 1, atol=1e-5)
    assert first["probe_correct"].dtype == np.uint8 and first["probe"] == pytest.approx(first["probe_correct"].mean())


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
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full-precision convolutions, as on the CPU
    kwargs = dict(TINY, loss="dcl", g_attention=True, d_attention="reference")
    on_gpu, on_cpu = runs.train_gan(**kwargs, device="cuda"), runs.train_gan(**kwargs)
    assert np.isfinite(on_gpu["fd"]) and 0 < on_gpu["probe"] <= 1
    assert all(v.device.type == "cpu" for v in on_gpu["generator"]["state"].values())
    np.testing.assert_allclose(on_gpu["d_maps"]["maps"].sum(-1), 1, atol=1e-4)
    # the same latents and batches on both devices: the first logits (before any step) agree
    np.testing.assert_allclose(on_gpu["logits"]["real"][0], on_cpu["logits"]["real"][0], rtol=1e-3, atol=1e-4)


def _same_layout(cpu, gpu, where="results"):
    """``gpu`` has ``cpu``'s keys, types and array shapes, everything finite and on the CPU."""
    assert type(gpu) is type(cpu), where
    if isinstance(cpu, dict):
        assert set(gpu) == set(cpu), where
        for key in cpu:
            _same_layout(cpu[key], gpu[key], f"{where}.{key}")
    elif isinstance(cpu, (list, tuple)):
        assert len(gpu) == len(cpu), where
        for i, (a, b) in enumerate(zip(cpu, gpu)):
            _same_layout(a, b, f"{where}[{i}]")
    elif isinstance(cpu, torch.Tensor):
        assert gpu.device.type == "cpu" and gpu.shape == cpu.shape and gpu.dtype == cpu.dtype, where
        assert torch.isfinite(gpu.float()).all(), where
    elif isinstance(cpu, np.ndarray):
        assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype and np.isfinite(gpu).all(), where
    elif isinstance(cpu, float):
        assert math.isfinite(gpu), where


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_smoke_budget_runs_end_to_end_on_cuda(smoke_results, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full-precision convolutions, as on the CPU
    on_gpu = ex.run(ex.from_budget("smoke", workers=1, device="cuda"))
    assert on_gpu["config"]["device"] == "cuda"
    on_gpu["config"]["device"] = "cpu"
    _same_layout(smoke_results, on_gpu)
    # the metric classifier and the floor stay on the CPU: the same numbers on any device
    assert on_gpu["floor"] == pytest.approx(smoke_results["floor"], rel=1e-3)
    for row in ("ns", "dcl"):
        cpu, gpu = smoke_results["runs"][row][0], on_gpu["runs"][row][0]
        # the same latents and batches on both devices: the logits before any step agree
        np.testing.assert_allclose(gpu["logits"]["real"][0], cpu["logits"]["real"][0], rtol=1e-3, atol=1e-4)
        assert gpu["probe_init"] == pytest.approx(cpu["probe_init"], abs=0.05)
    assert len(ex.claims(on_gpu)) == len(ex.claims(smoke_results))
