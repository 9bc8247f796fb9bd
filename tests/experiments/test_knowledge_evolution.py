import math

import numpy as np
import pytest
import torch

from labkit.data import load_small_data
from labkit.experiments import knowledge_evolution as ex
from labkit.experiments.knowledge_evolution_runs import train_generations
from smoke import smoke_run


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    yield from smoke_run(ex, tmp_path_factory)


def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.KEConfig()
    full = ex.from_budget("full")
    assert full.num_generations == 8 and full.glyph_classes
    assert full.num_seeds >= 3 and full.size_sweep_seeds >= 3  # headline comparisons at full: ≥ 3 seeds
    with pytest.raises(ValueError, match="unknown config field.*split_rat.*valid fields"):
        ex.from_budget("quick", split_rat=0.3)
    with pytest.raises(ValueError, match="device='tpu'.*'cpu', 'cuda'"):
        ex.from_budget("smoke", device="tpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        train_generations("ke", samples_per_class=3, num_generations=1, device="tpu")


def test_planned_runs():
    quick = ex.from_budget("quick")
    assert [r["mode"] for r in ex.main_runs(quick)] == [m for m in ex.CONTROLS for _ in range(quick.num_seeds)]
    full = ex.from_budget("full", device="cpu")
    every_run = ex.main_runs(full) + [r for _, r in ex.ablation_runs(full)] + ex.size_runs(full) + ex.glyph_runs(full)
    assert {r["device"] for r in every_run} == {"cpu"}
    assert ex.ablation_runs(quick) == [] and ex.glyph_runs(quick) == [] and ex.size_runs(quick) == []
    full = ex.from_budget("full")
    labels = [label for label, _ in ex.ablation_runs(full)]
    assert len(labels) == 1 + 2 + 2 + 1 + 1 and labels[0].startswith("reference")


def test_size_sweep_is_compute_matched_and_shares_one_test_set():
    full = ex.from_budget("full")
    runs = ex.size_runs(full)
    assert len(runs) == len(full.size_sweep) * len(ex.SIZE_MODES) * full.size_sweep_seeds
    # the same SGD steps per generation at every size: the reference run's 15 epochs of 150 images
    assert {r["steps_per_generation"] for r in runs} == {full.ablation_epochs * 5}
    assert {r["test_samples_per_class"] for r in runs} == {max(full.size_sweep)}
    for n in full.size_sweep:  # every size has KE and its compute-matched run on the same seeds
        seeds = {mode: sorted(r["seed"] for r in runs if r["samples_per_class"] == n and r["mode"] == mode)
                 for mode in ex.SIZE_MODES}
        assert seeds["ke"] == seeds["single"] == list(range(full.size_sweep_seeds))


def test_digits_training_images_are_nested_so_the_largest_test_set_is_shared():
    """The sweep scores every size on the test part of the largest split: valid only if a smaller
    split's training images are all inside the larger split's (so none of them is a test image)."""
    small, large = (load_small_data("digits", samples_per_class=n, size=16) for n in (5, 50))
    flat_small, flat_large = small.X_train.flatten(1), large.X_train.flatten(1)
    matches = (flat_small[:, None, :] == flat_large[None, :, :]).all(-1)
    assert matches.any(1).all()
    assert len(small.y_test) - len(large.y_test) == 450


def test_steps_per_generation_and_shared_test_set_in_a_run():
    run = train_generations("single", samples_per_class=5, num_generations=2, steps_per_generation=3,
                            test_samples_per_class=50, seed=0)
    test_size = len(load_small_data("digits", samples_per_class=50, size=16).y_test)
    assert run["steps_per_generation"] == 3 and run["epochs_per_generation"] == 1.5  # 50 images: 2 batches
    assert run["dense_correct"].shape == (2, test_size) and run["dense_correct"].dtype == bool
    np.testing.assert_allclose(run["dense"], run["dense_correct"].mean(1))
    with pytest.raises(ValueError, match="steps_per_generation"):
        train_generations("ke", samples_per_class=3, num_generations=1, steps_per_generation=-1)


def test_smoke_results_and_claims(smoke_results):
    res = smoke_results
    curves = ex.curves(res)
    assert set(curves) == set(ex.CONTROLS)
    assert curves["ke"]["dense"].shape == (1, 2) and curves["single"]["dense"].shape == (1, 2)
    run = ex.runs_of(res, "ke")[0]
    np.testing.assert_allclose(run["slim"], run["slim_correct"].mean(1))
    claims = ex.claims(res)
    assert [c.name.split(".")[0] for c in claims] == ["1", "2a", "2b", "3", "4a", "4b", "5", "6a", "6b"]
    statuses = {c.name.split(".")[0]: c.status for c in claims}
    assert statuses.pop("3") == "reported" and statuses.pop("5") == "not measured"
    assert set(statuses.values()) == {"inconclusive"}  # one seed: no interval
    assert "N1" in ex.dense_gain_verdict(res, claims)
    masks = res["masks"]
    assert len(masks["kels"]) == len(masks["split_rates"])


def test_slim_conv_cost_is_about_split_rate_squared():
    """What claim 3 used to check, an invariant of the width multiplier: conv MACs and parameters of
    the slim net are s_r² of dense within 5 points, counted by hooks, at every rate and backbone."""
    rows = ex.slim_costs(ex.from_budget("full"))
    assert {r["backbone"] for r in rows} == {"resnet", "plain"} and len(rows) == 6
    for row in rows:
        assert row["slim_macs"] < row["dense_macs"]
        for key in ("conv_macs_ratio", "conv_params_ratio"):
            assert row[key] == pytest.approx(row["split_rate"] ** 2, abs=0.05)
    half = next(r for r in rows if r["backbone"] == "resnet" and r["split_rate"] == 0.5)
    assert half["conv_macs_ratio"] != 0.25  # counted, not computed from the formula


def test_modes_differ_and_bad_mode_is_named():
    kwargs = dict(samples_per_class=3, num_generations=2, epochs_per_generation=1, seed=0)
    ke_run = train_generations("ke", **kwargs)
    restart = train_generations("restart_only", **kwargs)
    # the same first generation, then re-initialisation changes the watched layer
    assert np.array_equal(ke_run["magnitude"][0], restart["magnitude"][0])
    assert not np.array_equal(ke_run["magnitude"][1], restart["magnitude"][1])
    single = train_generations("single", **kwargs)
    assert len(single["dense"]) == 2 and len(single["slim"]) == 1
    wels = train_generations("ke", split_kind="wels", **kwargs)
    assert np.isnan(wels["slim"]).all() and wels["slim_correct"].shape == (2, 0)
    with pytest.raises(ValueError, match="mode='reset'"):
        train_generations("reset", **kwargs)


# ---- claims on hand-made results: each comparison can be held, not reproduced and inconclusive ----

NUM_ITEMS = 1000
BASE = {("ke", "dense"): [0.85, 0.90, 0.93], ("ke", "slim"): [0.10, 0.60, 0.91],
        ("single", "dense"): [0.85, 0.88, 0.90], ("restart_only", "dense"): [0.85, 0.89, 0.91],
        ("restart_only", "slim"): [0.10, 0.10, 0.10], ("full_reset", "dense"): [0.85, 0.85, 0.85],
        ("full_reset", "slim"): [0.10, 0.10, 0.10], ("single", "slim"): [0.10]}


def correct(accuracy: float, seed: int, generation: int = 0) -> np.ndarray:
    """NUM_ITEMS items, ``accuracy`` of them right give or take two (seed noise: the shared rule gives
    identical values over three seeds no interval): the easiest ones, in an order of difficulty that
    a seed fixes (so a more accurate network gets right what a less accurate one does)."""
    difficulty = np.random.default_rng(seed).permutation(NUM_ITEMS)
    noise = int(np.random.default_rng([seed, generation, round(accuracy * NUM_ITEMS)]).integers(-2, 3))
    return difficulty < round(accuracy * NUM_ITEMS) + noise


def fake_run(mode: str, seed: int, dense: list, slim: list, **fields) -> dict:
    dense_c = np.stack([correct(p, seed, g) for g, p in enumerate(dense)])
    slim_c = np.stack([correct(p, seed, g) for g, p in enumerate(slim)])
    return dict(mode=mode, seed=seed, chance=0.1, samples_per_class=15, num_generations=len(dense),
                steps_per_generation=75, epochs_per_generation=15, backbone="resnet", dense=dense_c.mean(1),
                slim=slim_c.mean(1), dense_correct=dense_c, slim_correct=slim_c, train=np.ones(len(dense))) | fields


def fake_results(seeds: int = 3, changes: dict | None = None, sizes: dict | None = None) -> dict:
    """``changes[(mode, key)]`` is a per-generation curve or a function seed → curve; ``sizes`` maps
    images per class to (KE, single) final accuracies, per-seed functions or numbers."""
    curves = BASE | (changes or {})

    def curve(mode, key, seed):
        value = curves[(mode, key)]
        return value(seed) if callable(value) else value

    main = [fake_run(mode, s, curve(mode, "dense", s), curve(mode, "slim", s))
            for mode in ex.CONTROLS for s in range(seeds)]
    size_runs = [fake_run(mode, s, [0.5, acc(s) if callable(acc) else acc], [0.1], samples_per_class=n)
                 for n, pair in (sizes or {}).items() for mode, acc in zip(ex.SIZE_MODES, pair) for s in range(seeds)]
    config = dict(backbone="resnet", split_rate=0.5, epochs_per_generation=15)
    costs = [dict(backbone="resnet", split_rate=0.5, dense_macs=100, slim_macs=27, dense_params=10, slim_params=3,
                  conv_macs_ratio=0.25, conv_params_ratio=0.25)]
    return dict(main=main, ablation=[], ablation_labels=[], sizes=size_runs, glyphs=[], config=config, costs=costs)


def claim(results: dict, number: str):
    return next(c for c in ex.claims(results) if c.name.split(".")[0] == number)


MIXED = lambda high, low: (lambda seed: [0.85, 0.9, (high, low, (high + low) / 2)[seed]])  # noqa: E731
SCENARIOS = {  # claim → {status: changes to BASE}
    "1": {"held": {}, "not reproduced": {("ke", "slim"): [0.35, 0.6, 0.91]},
          "inconclusive": {("ke", "slim"): lambda s: [(0.1, 0.3, 0.2)[s], 0.6, 0.91]}},
    "2a": {"held": {}, "not reproduced": {("ke", "slim"): [0.5, 0.3, 0.2]},
           "inconclusive": {("ke", "slim"): lambda s: [0.3, 0.4, (0.4, 0.2, 0.3)[s]]}},
    "2b": {"held": {("ke", "slim"): [0.10, 0.60, 0.925]}, "not reproduced": {("ke", "slim"): [0.1, 0.5, 0.7]},
           "inconclusive": {("ke", "slim"): lambda s: [0.1, 0.6, (0.93, 0.85, 0.90)[s]]}},
    "4a": {"held": {}, "not reproduced": {("ke", "dense"): [0.9, 0.85, 0.8]},
           "inconclusive": {("ke", "dense"): MIXED(0.95, 0.75)}},
    "4b": {"held": {("single", "dense"): [0.8, 0.82, 0.83]}, "not reproduced": {("single", "dense"): [0.9, 0.95, 0.99]},
           "inconclusive": {("ke", "dense"): MIXED(0.99, 0.81)}},
    "6a": {"held": {}, "not reproduced": {("restart_only", "slim"): [0.1, 0.5, 0.2]},
           "inconclusive": {("restart_only", "slim"): lambda s: [0.1, (0.3, 0.1, 0.2)[s], 0.1]}},
    "6b": {"held": {}, "not reproduced": {("full_reset", "dense"): [0.7, 0.8, 0.9]},
           "inconclusive": {("full_reset", "dense"): lambda s: [0.85, 0.85, (0.95, 0.8, 0.87)[s]]}},
}


@pytest.mark.parametrize("number,status", [(n, s) for n, statuses in SCENARIOS.items() for s in statuses])
def test_each_comparison_claim_can_come_out_each_way(number, status):
    result = claim(fake_results(changes=SCENARIOS[number][status]), number)
    assert result.status == status, (result.measured, result.low, result.high)


@pytest.mark.parametrize("number", list(SCENARIOS) + ["5"])
def test_one_seed_is_inconclusive(number):
    assert claim(fake_results(seeds=1, sizes={5: (0.9, 0.7), 50: (0.9, 0.9)}), number).status == "inconclusive"


@pytest.mark.parametrize("status,sizes", [
    ("held", {5: (0.90, 0.75), 50: (0.93, 0.92)}),
    ("not reproduced", {5: (0.80, 0.82), 50: (0.95, 0.80)}),
    ("inconclusive", {5: (lambda s: (0.95, 0.70, 0.82)[s], 0.80), 50: (0.92, 0.90)})])
def test_size_claim_compares_gains_over_the_compute_matched_run(status, sizes):
    result = claim(fake_results(sizes=sizes), "5")
    assert result.status == status, (result.measured, result.low, result.high)
    assert "compute-matched" in result.detail and "75 SGD steps" in result.detail
    if status == "held":  # the gains, not the accuracies: (0.90 − 0.75) − (0.93 − 0.92)
        assert result.measured == pytest.approx(0.14, abs=0.01)


def test_size_claim_needs_matching_seeds():
    results = fake_results(sizes={5: (0.9, 0.8), 50: (0.9, 0.9)})
    results["sizes"] = [r for r in results["sizes"] if not (r["mode"] == "single" and r["seed"] == 2)]
    with pytest.raises(ValueError, match="pair runs by seed"):
        ex.claims(results)


def test_cost_is_reported_not_judged():
    result = claim(fake_results(), "3")
    assert result.status == "reported" and result.measured == pytest.approx(0.73)


@pytest.mark.parametrize("status,changes,words", [
    ("held", {("single", "dense"): [0.8, 0.82, 0.83]}, "KE beats the compute-matched run"),
    ("not reproduced", {("single", "dense"): [0.9, 0.95, 0.99]}, "comes from the extra epochs"),
    ("inconclusive", {("ke", "dense"): MIXED(0.99, 0.81)}, "within noise")])
def test_dense_gain_verdict_follows_the_claims(status, changes, words):
    results = fake_results(changes=changes)
    claims = ex.claims(results)
    versus = next(c for c in claims if c.name.startswith("4b"))
    assert versus.status == status
    sentence = ex.dense_gain_verdict(results, claims)
    assert words in sentence and versus.interval_text() in sentence
    if status != "held":
        assert "beats the compute-matched" not in sentence and "KE beats" not in sentence


def test_size_and_tradeoff_tables():
    results = fake_results(sizes={5: (0.9, 0.8), 50: (0.95, 0.94)})
    rows = ex.size_table(results)
    assert [r["samples_per_class"] for r in rows] == [5, 50]
    # within the fixture's seed noise of two items in a thousand
    assert rows[0]["gain_matched"] == pytest.approx(0.1, abs=0.005) and rows[0]["gain_n1"] == pytest.approx(0.4, abs=0.005)
    assert rows[0]["num_seeds"] == 3 and rows[0]["steps_per_generation"] == 75
    tradeoff = ex.slim_tradeoff(results)
    assert len(tradeoff) == 1 and tradeoff[0]["source"] == "main runs" and tradeoff[0]["num_seeds"] == 3
    assert tradeoff[0]["slim_accuracy"] == pytest.approx(0.91, abs=0.005) and tradeoff[0]["macs_fraction"] == 0.27


def _same_layout(cpu, gpu, where="results"):
    """``gpu`` has ``cpu``'s keys, types and array shapes, every float finite (NaN where ``cpu`` has
    NaN: no slim net under WELS) and every tensor on the CPU."""
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
    elif isinstance(cpu, np.ndarray):
        assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype, where
        if cpu.dtype.kind == "f":
            np.testing.assert_array_equal(np.isfinite(gpu), np.isfinite(cpu), err_msg=where)
    elif isinstance(cpu, float):
        assert math.isfinite(gpu) == math.isfinite(cpu), where


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_smoke_budget_runs_end_to_end_on_cuda(smoke_results, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full-precision convolutions, as on the CPU
    on_gpu = ex.run(ex.from_budget("smoke", workers=1, device="cuda"))
    assert on_gpu["config"]["device"] == "cuda"
    on_gpu["config"]["device"] = "cpu"
    _same_layout(smoke_results, on_gpu)
    for cpu, gpu in zip(smoke_results["main"], on_gpu["main"]):
        assert (gpu["mode"], gpu["seed"]) == (cpu["mode"], cpu["seed"])
        # the same initial weights, masks and batches (all drawn on the CPU): a few SGD steps apart
        # in round-off only
        np.testing.assert_allclose(gpu["dense"], cpu["dense"], atol=0.1)
        np.testing.assert_allclose(gpu["magnitude"], cpu["magnitude"], rtol=0.05, atol=1e-3)
    assert [c.name for c in ex.claims(on_gpu)] == [c.name for c in ex.claims(smoke_results)]
