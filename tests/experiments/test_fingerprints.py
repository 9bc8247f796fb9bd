"""Chapter 04 (scalable GAN fingerprinting): budgets and bad config, the plan, the smoke run's
structure, the tables and claims at smoke, the claim logic on hand-made multi-seed results, and the
analyses' helpers (``perturb``, ``registry``)."""
import copy
import dataclasses
import inspect
import math

import numpy as np
import pytest
import torch
from smoke import leaves, smoke_run_one_thread, structure

from labkit import report
from labkit.experiments import fingerprints as ex
from labkit.experiments import fingerprints_runs as runs
from labkit.experiments.fingerprints_claims import BIT_ACCURACY_TARGET
from labkit.methods import fingerprints as fp

SHORT_ROWS = ("d_c = 8", "λ_const = 0")


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    yield from smoke_run_one_thread(ex, tmp_path_factory)


# --- config and plan ---------------------------------------------------------------------------

def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.FingerprintConfig()
    full = ex.from_budget("full")
    assert full.seeds >= 3 and full.sweep_seeds >= 2
    assert tuple(full.sweep_dims) == ex.FINGERPRINT_DIMS == (8, 16, 32, 64)
    assert tuple(full.ablations) == tuple(ex.ABLATIONS) and len(full.ablations) == 5
    assert full.fingerprint_dim == 16 and full.steps % full.eval_every == full.short_steps % full.eval_every == 0
    smoke = ex.from_budget("smoke")
    assert smoke.seeds == 1 and smoke.steps < ex.from_budget("quick").steps
    with pytest.raises(ValueError, match="unknown config field.*num_stpes.*valid fields.*short_steps"):
        ex.from_budget("quick", num_stpes=3)
    with pytest.raises(ValueError, match="budget='medium'"):
        ex.from_budget("medium")
    with pytest.raises(ValueError, match="sweep_dims entry=12.*8, 16, 32, 64"):
        ex.from_budget("quick", sweep_dims=(8, 12))
    with pytest.raises(ValueError, match="ablations entry='no F'.*'λ_const = 0'"):
        ex.from_budget("quick", ablations=("no F",))
    with pytest.raises(ValueError, match="fingerprint_dim=12"):
        ex.from_budget("quick", fingerprint_dim=12)
    quick = ex.from_budget("quick")
    every, half = quick.eval_every, quick.eval_every // 2
    with pytest.raises(ValueError, match=f"short_steps={every + half}.*eval_every={every}"):
        ex.from_budget("quick", short_steps=every + half)
    with pytest.raises(ValueError, match=f"short_steps={quick.steps + every}.*short_steps <= steps"):
        ex.from_budget("quick", short_steps=quick.steps + every)
    with pytest.raises(ValueError, match=f"steps={quick.steps + half} must be multiples"):
        ex.from_budget("quick", steps=quick.steps + half)
    with pytest.raises(ValueError, match="sweep_seeds=4"):
        ex.from_budget("full", sweep_seeds=4)
    with pytest.raises(ValueError, match="num_eval=900 is too large"):
        ex.from_budget("quick", num_eval=900)
    for name in ("steps", "seeds", "eval_every", "num_bits", "classifier_steps"):
        with pytest.raises(ValueError, match=f"{name}=0"):
            ex.from_budget("quick", **{name: 0})
    with pytest.raises(ValueError, match="device='tpu'.*'cpu', 'cuda'"):
        ex.from_budget("smoke", device="tpu")
    assert ex.from_budget("smoke").device == "cpu"


def test_every_run_gets_the_device_and_cuda_runs_in_this_process(monkeypatch):
    calls = []

    def fake_cached_runs(name, fn, kwargs, workers):
        calls.append((name, kwargs, workers))
        if name == "fingerprints-floor":
            return [dict(floor=1.0, classifier_accuracy=0.9)]
        return [dict(seed=kw["seed"]) for kw in kwargs]

    monkeypatch.setattr(ex, "cached_runs", fake_cached_runs)
    cfg = ex.from_budget("smoke", workers=3)
    ex.run(cfg)
    assert [workers for *_, workers in calls] == [3, 3]
    calls.clear()
    ex.run(dataclasses.replace(cfg, device="cuda"))  # no check here: this machine may have no GPU
    assert [workers for *_, workers in calls] == [1, 1]  # one GPU: the runs go in this process
    for name, kwargs, _ in calls:
        assert kwargs and all(kw["device"] == "cuda" for kw in kwargs), name


def rows_of(plan):
    counts = {}
    for row, _ in plan:
        counts[row] = counts.get(row, 0) + 1
    return counts


def test_the_plan_at_the_full_budget():
    cfg = ex.from_budget("full")
    plan = ex.plan(cfg)
    counts = rows_of(plan)
    assert counts[ex.MAIN] == counts[ex.UNFINGERPRINTED] == cfg.seeds
    for row in ex.ABLATIONS:
        assert counts[row] == (cfg.seeds if row in ex.SEEDED_ABLATIONS else 1), row
    for dim in cfg.sweep_dims:
        if dim == cfg.fingerprint_dim:  # the sweep's own d_c is the main row's checkpoint
            assert f"d_c = {dim}" not in counts
        else:
            assert counts[f"d_c = {dim}"] == cfg.sweep_seeds
    assert len(plan) == sum(counts.values()) == 2 * 3 + 3 * 2 + 2 * 3 + 3
    # longest first: the main rows, then the un-fingerprinted G, then the short rows
    cost = [kw["steps"] * (0.55 if kw["embedding"] == "none" else 1.0) for _, kw in plan]
    assert cost == sorted(cost, reverse=True)
    assert plan[0][0] == ex.MAIN and plan[-1][1]["steps"] == cfg.short_steps
    signature = inspect.signature(runs.train_run)
    for row, kwargs in plan:
        signature.bind(**kwargs)
        assert kwargs["analyse"] is (row == ex.MAIN) if "analyse" in kwargs else row != ex.MAIN
        assert kwargs["steps"] == (cfg.steps if row in (ex.MAIN, ex.UNFINGERPRINTED) else cfg.short_steps)
        assert kwargs["eval_every"] == cfg.eval_every and kwargs["num_bits"] == cfg.num_bits
    by_row = {}
    for row, kwargs in plan:
        by_row.setdefault(row, []).append(kwargs)
    assert sorted(kw["seed"] for kw in by_row[ex.MAIN]) == [cfg.seed + k for k in range(cfg.seeds)]
    assert sorted(kw["seed"] for kw in by_row["d_c = 32"]) == [cfg.seed, cfg.seed + 1]  # the first sweep_seeds
    assert {kw["embedding"] for kw in by_row[ex.UNFINGERPRINTED]} == {"none"}
    for row, overrides in ex.ABLATIONS.items():
        for kwargs in by_row[row]:
            assert all(kwargs[k] == v for k, v in overrides.items())
            assert kwargs["fingerprint_dim"] == cfg.fingerprint_dim
    assert [kw["fingerprint_dim"] for kw in by_row["d_c = 64"]] == [64, 64]


def test_the_sweep_skips_whichever_d_c_is_the_main_row():
    cfg = ex.from_budget("quick", fingerprint_dim=32, sweep_dims=(8, 16, 32), seed=5)
    counts = rows_of(ex.plan(cfg))
    assert "d_c = 32" not in counts and counts["d_c = 8"] == counts["d_c = 16"] == 1
    assert {kw["seed"] for _, kw in ex.plan(cfg)} == {5}


# --- the smoke run -----------------------------------------------------------------------------

def test_smoke_resultsstructure(smoke_results):
    res = smoke_results
    cfg = res["config"]
    assert cfg["budget"] == "smoke" and res["floor"] > 0 and 0 < res["classifier_accuracy"] <= 1
    assert set(res["runs"]) == {ex.MAIN, ex.UNFINGERPRINTED, *SHORT_ROWS}
    for row, entries in res["runs"].items():
        (r,) = entries  # one seed at smoke
        steps = cfg["steps"] if row in (ex.MAIN, ex.UNFINGERPRINTED) else cfg["short_steps"]
        assert r["seed"] == cfg["seed"] and r["steps"] == steps
        curve = r["curve"]
        assert curve["step"] == list(range(cfg["eval_every"], steps + 1, cfg["eval_every"]))
        assert all(step % cfg["eval_every"] == 0 for step in curve["step"])
        assert all(len(curve[k]) == len(curve["step"]) for k in ("bit_accuracy", "same_z", "fd"))
        assert r["fd"] == curve["fd"][-1] and np.isfinite(r["fd"]) and r["fd"] > 0
        fingerprinted = row != ex.UNFINGERPRINTED
        if fingerprinted:
            assert 0 <= r["bit_accuracy"] <= 1 and r["same_z"] >= 0 and r["bit_accuracy"] == curve["bit_accuracy"][-1]
        else:
            assert math.isnan(r["bit_accuracy"]) and math.isnan(r["same_z"]) and r["state"]["F"] == {}
        assert ("analysis" in r) == (row == ex.MAIN)
        G, F_net = runs.load_nets(r["spec"], r["state"])
        assert (F_net is not None) == fingerprinted and G.fingerprint_dim == r["fingerprint_dim"]
        assert "d_loss" in r["history"] and "adversarial" in r["history"]
    assert res["runs"]["d_c = 8"][0]["fingerprint_dim"] == 8
    assert res["runs"]["λ_const = 0"][0]["lambda_const"] == 0.0


def test_the_main_rows_analysis(smoke_results):
    (main,) = smoke_results["runs"][ex.MAIN]
    a = main["analysis"]
    images = runs.NUM_MODELS * runs.IMAGES_PER_MODEL
    assert images == 2000 and a["num_models"] == 100
    assert a["bake_max_error"] < 1e-5
    assert a["threshold"] == fp.detection_threshold(16, runs.ALPHA) == 14 and a["alpha"] == runs.ALPHA
    for key in ("attribution_correct", "detected", "hamming_own", "hamming_other"):
        assert a[key].shape == (images,), key
    for key in ("real_detected", "real_bit_accuracy", "hamming_real"):
        assert a[key].shape == (1797,), key
    assert set(np.unique(a["attribution_correct"])) <= {0, 1} and set(np.unique(a["real_detected"])) <= {0, 1}
    assert a["confusion"].shape == (100, 100) and int(a["confusion"].sum()) == images
    assert (a["confusion"].sum(1) == runs.IMAGES_PER_MODEL).all()  # model-major: 20 images per model
    assert int(np.trace(a["confusion"])) == int(a["attribution_correct"].sum())
    # the own fingerprint's distance, where it is strictly nearest, means a correct attribution
    strictly = a["hamming_own"] < a["hamming_other"]
    assert (a["attribution_correct"][strictly] == 1).all()
    assert ((0 <= a["hamming_own"]) & (a["hamming_own"] <= 16)).all()
    assert set(a["robustness"]) == set(runs.PERTURBATIONS)
    for kind, strengths in runs.PERTURBATIONS.items():
        entry = a["robustness"][kind]
        assert entry["strength"] == list(strengths)
        assert len(entry["bit_accuracy"]) == len(strengths)
        assert all(0 <= v <= 1 for v in entry["bit_accuracy"])
        assert entry["examples"].dtype == np.uint8 and entry["examples"].shape == (len(strengths), 16, 16)
    # every clean strength measures the same images
    clean = {a["robustness"][kind]["bit_accuracy"][0] for kind in ("noise", "blur", "shift")}
    assert len(clean) == 1


def test_tables(smoke_results):
    res = smoke_results
    ablation = ex.ablation_table(res)
    assert [r["row"] for r in ablation] == [ex.MAIN, "λ_const = 0"]
    assert all(r["seeds"] == 1 and r["steps"] == res["config"]["short_steps"] for r in ablation)
    assert all(math.isnan(r["bit_accuracy_std"]) for r in ablation)  # one seed
    main_short = ex.at_step(res["runs"][ex.MAIN][0], "bit_accuracy", res["config"]["short_steps"])
    assert ablation[0]["bit_accuracy_mean"] == main_short  # the main row's checkpoint
    assert math.isnan(ex.at_step(res["runs"][ex.MAIN][0], "fd", 7))  # no such checkpoint
    capacity = ex.capacity_table(res)
    assert [r["fingerprint_dim"] for r in capacity] == [8, 16] and [r["models"] for r in capacity] == ["2^8", "2^16"]
    assert capacity[1]["per_seed"] == [main_short] and capacity[0]["seeds"] == 1
    main = ex.main_table(res)
    assert [r["row"] for r in main] == [ex.MAIN, ex.UNFINGERPRINTED, "real vs real (floor)"]
    assert main[-1]["fd_mean"] == res["floor"]
    a = res["runs"][ex.MAIN][0]["analysis"]
    assert main[0]["attribution_mean"] == pytest.approx(a["attribution_correct"].mean())
    assert main[0]["fpr_mean"] == pytest.approx(a["real_detected"].mean())
    assert math.isnan(main[1]["attribution_mean"]) and math.isnan(main[1]["bit_accuracy_mean"])
    assert len(ex.analyses(res)) == 1


def test_claims_at_smoke(smoke_results):
    claims = ex.claims(smoke_results)
    assert all(isinstance(c, report.Claim) and c.status in report.STATUSES for c in claims)
    names = [c.name.split(".")[0] for c in claims]
    assert names == ["1", "Distance to the real-vs-real floor", "2", "3a", "3b", "4", "5a", "5b", "5c", "5d", "6",
                     "7", "8a", "8b"]
    by_name = dict(zip(names, claims))
    assert by_name["1"].status == "reported" and by_name["1"].measured < 1e-5
    assert by_name["5c"].status == by_name["5d"].status == "not measured"  # no concat row at smoke
    # one seed: no comparison is judged
    for c in claims:
        assert c.status in ("inconclusive", "reported", "not measured"), (c.name, c.status)
        if c.direction is not None:
            assert c.status == "inconclusive"
    # only the wide-margin checks are asserted, and only at the full budget
    asserted = {c.name.split(".")[0] for c in claims if c.asserted_at}
    assert asserted == {"3a", "3b", "6", "8a", "8b"}
    assert all(c.asserted_at == ("full",) for c in claims if c.asserted_at)
    assert not any(c.asserted("quick") or c.asserted("smoke") for c in claims)


# --- claim logic on hand-made results -----------------------------------------------------------

def with_seeds(results, per_seed: dict, rows=(ex.MAIN,)):
    """A copy of ``results`` with ``len(values)`` seeds for each row in ``rows``: copies of its seed-0
    run, edited by ``per_seed[row](run, k)``."""
    out = copy.deepcopy({k: v for k, v in results.items() if k != "runs"})
    out["runs"] = dict(results["runs"])
    for row in rows:
        (base,) = results["runs"][row]
        entries = []
        for k in range(3):
            run = {key: value for key, value in base.items() if key not in ("state", "history")}
            run = copy.deepcopy(run)
            run["seed"] = k
            per_seed[row](run, k)
            entries.append(run)
        out["runs"][row] = entries
    out["config"] = dict(out["config"], seeds=3)
    return out


def claim(results, key):
    return next(c for c in ex.claims(results) if c.name.split(".")[0] == key)


def bits_around(value, noise=(-0.01, 0.0, 0.01)):
    def edit(run, k):
        run["bit_accuracy"] = value + noise[k]
        run["curve"]["bit_accuracy"][-1] = value + noise[k]
    return edit


def test_bit_accuracy_claim_held_or_not(smoke_results):
    held = claim(with_seeds(smoke_results, {ex.MAIN: bits_around(0.97)}), "2")
    assert held.status == "held" and held.low > BIT_ACCURACY_TARGET
    assert held.noise == "t over 3 seeds" and held.measured == pytest.approx(0.97)
    low = claim(with_seeds(smoke_results, {ex.MAIN: bits_around(0.80)}), "2")
    assert low.status == "not reproduced" and low.high < 0.93
    noisy = claim(with_seeds(smoke_results, {ex.MAIN: bits_around(0.93, (-0.03, 0.0, 0.04))}), "2")
    assert noisy.status == "inconclusive"


def analysis_edit(bits, attribution, fpr=0.01, real_bits=0.5, noise=(-0.01, 0.0, 0.01)):
    def edit(run, k):
        bits_around(bits, noise)(run, k)
        rng = np.random.default_rng(k)
        a = run["analysis"]
        a["attribution_correct"] = (rng.random(2000) < attribution + noise[k]).astype(np.uint8)
        a["detected"] = (rng.random(2000) < attribution).astype(np.uint8)
        a["real_detected"] = (rng.random(1797) < fpr).astype(np.uint8)
        a["real_bit_accuracy"] = np.clip(real_bits + 0.12 * rng.standard_normal(1797), 0, 1).astype(np.float32)
    return edit


def test_attribution_claim_needs_its_premise(smoke_results):
    held = claim(with_seeds(smoke_results, {ex.MAIN: analysis_edit(0.97, 0.97)}), "4")
    assert held.status == "held" and "bootstrap" in held.noise and "3 seeds" in held.noise
    missed = claim(with_seeds(smoke_results, {ex.MAIN: analysis_edit(0.97, 0.6)}), "4")
    assert missed.status == "not reproduced"
    # bits at 0.8 < 0.9: the premise fails, so even a high attribution is not judged
    premise = claim(with_seeds(smoke_results, {ex.MAIN: analysis_edit(0.80, 0.97)}), "4")
    assert premise.status == "inconclusive" and "premise" in premise.detail
    assert "the interval alone says held" in premise.detail and premise.low > 0.9  # the interval is kept


def test_real_digit_claims(smoke_results):
    good = with_seeds(smoke_results, {ex.MAIN: analysis_edit(0.97, 0.97, fpr=0.002, real_bits=0.5)})
    assert claim(good, "3a").status == "held" and claim(good, "3b").status == "held"
    bad = with_seeds(smoke_results, {ex.MAIN: analysis_edit(0.97, 0.97, fpr=0.2, real_bits=0.7)})
    assert claim(bad, "3a").status == "not reproduced" and claim(bad, "3b").status == "not reproduced"


def same_z_at_short(value, noise=(-0.002, 0.0, 0.003)):
    def edit(run, k):
        steps = run["curve"]["step"]
        index = steps.index(20)  # the smoke budget's short_steps
        run["curve"]["same_z"][index] = value * (1 + noise[k])
    return edit


def test_a_paired_short_row_claim(smoke_results):
    rows = (ex.MAIN, "λ_const = 0")
    assert smoke_results["config"]["short_steps"] == 20
    other = (0.003, -0.002, 0.0)  # seed noise of its own, or every ratio would be the same
    larger = with_seeds(smoke_results, {ex.MAIN: same_z_at_short(0.1), "λ_const = 0": same_z_at_short(0.3, other)},
                        rows)
    held = claim(larger, "5a")
    assert held.status == "held" and held.measured == pytest.approx(3.0, rel=0.01) and "log scale" in held.noise
    similar = with_seeds(smoke_results, {ex.MAIN: same_z_at_short(0.1), "λ_const = 0": same_z_at_short(0.11, other)},
                         rows)
    assert claim(similar, "5a").status == "not reproduced"  # 1.1× < 1.5×, tightly


def test_the_fd_ratio_claim_pairs_seeds(smoke_results):
    def fd(value, noise=(-0.02, 0.0, 0.03)):
        def edit(run, k):
            run["fd"] = value * (1 + noise[k])
        return edit

    rows = (ex.MAIN, ex.UNFINGERPRINTED)
    other = (0.03, -0.01, 0.0)
    cheap = with_seeds(smoke_results, {ex.MAIN: fd(11.0), ex.UNFINGERPRINTED: fd(10.0, other)}, rows)
    assert claim(cheap, "7").status == "held"
    costly = with_seeds(smoke_results, {ex.MAIN: fd(30.0), ex.UNFINGERPRINTED: fd(10.0, other)}, rows)
    assert claim(costly, "7").status == "not reproduced"


# --- helpers of the analyses ---------------------------------------------------------------------

def test_perturb_shift_moves_pixels_and_fills_the_background():
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for s in (1, 2, 4):
        y = runs.perturb(x, "shift", s)
        assert y.shape == x.shape
        assert (y[..., :s, :] == -1).all() and (y[..., :, :s] == -1).all()  # background of the digits
        assert torch.equal(y[..., s:, s:], x[..., :-s, :-s])  # right and down
    assert runs.perturb(x, "shift", 0) is x


def test_perturb_noise_blur_and_jpeg():
    x = runs.real_digits()[0][:20]
    assert runs.perturb(x, "noise", 0.0) is x and runs.perturb(x, "blur", 0.0) is x
    rng = torch.Generator().manual_seed(1)
    noisy = runs.perturb(x, "noise", 0.3, rng)
    assert (noisy - x).std().item() == pytest.approx(0.3, rel=0.05)
    again = runs.perturb(x, "noise", 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)
    blurred = runs.perturb(x, "blur", 1.0)
    assert blurred.shape == x.shape and blurred.var().item() < x.var().item()
    close = runs.perturb(x, "jpeg", 100)
    assert close.shape == x.shape and close.dtype == torch.float32
    assert (close - x).abs().max().item() < 0.1 and (close - x).abs().mean().item() < 0.01
    coarse = runs.perturb(x, "jpeg", 10)
    assert (coarse - x).abs().mean().item() > (close - x).abs().mean().item()
    with pytest.raises(ValueError, match="kind='rotate'.*noise, blur, jpeg, shift"):
        runs.perturb(x, "rotate", 1)


def test_the_registry_is_distinct_and_fixed():
    torch.manual_seed(1)
    first = runs.registry(16)
    torch.manual_seed(2)  # the global RNG does not matter
    assert torch.equal(first, runs.registry(16))
    assert first.shape == (runs.NUM_MODELS, 16) and ((first == 0) | (first == 1)).all()
    assert len({tuple(row.tolist()) for row in first}) == runs.NUM_MODELS
    for dim in (8, 32, 64):
        book = runs.registry(dim)
        assert book.shape == (runs.NUM_MODELS, dim) and len({tuple(r.tolist()) for r in book}) == runs.NUM_MODELS
    small = runs.registry(16, 10)
    assert torch.equal(small, first[:10])  # a prefix: fewer models, the same first fingerprints


# --- on a GPU ----------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_smoke_run_on_cuda_matches_the_cpu_run(smoke_results, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    gpu = ex.run(ex.from_budget("smoke", device="cuda", workers=1))
    assert gpu["config"] == {**smoke_results["config"], "device": "cuda"}
    assert structure(gpu) == structure(smoke_results)
    tensors = [x for x in leaves(gpu) if isinstance(x, torch.Tensor)]
    assert tensors and all(x.device.type == "cpu" for x in tensors)  # results never depend on the device
    for ours, theirs in zip(leaves(gpu), leaves(smoke_results)):
        if isinstance(ours, float):  # NaN only where the CPU run has it (the un-fingerprinted G's bits)
            assert math.isnan(ours) == math.isnan(theirs) and not math.isinf(ours)
    assert all(torch.isfinite(w).all() for w in tensors if w.is_floating_point())
    # the metric classifier is the CPU's cache entry; the reals and the split are the same
    assert gpu["classifier_accuracy"] == smoke_results["classifier_accuracy"]
    assert gpu["floor"] == pytest.approx(smoke_results["floor"], rel=0.05)
    for row, entries in gpu["runs"].items():
        (ours,), (theirs,) = entries, smoke_results["runs"][row]
        # same initialisation and first batch: D's first loss agrees (TF32 convolutions aside)
        first = (ours["history"]["d_loss"]["value"][0], theirs["history"]["d_loss"]["value"][0])
        assert first[0] == pytest.approx(first[1], rel=2e-2), row
        assert 0 < ours["fd"] < 3 * theirs["fd"] + 10, row
        G, F_net = runs.load_nets(ours["spec"], ours["state"])
        assert (F_net is not None) == (row != ex.UNFINGERPRINTED)
    a = gpu["runs"][ex.MAIN][0]["analysis"]
    assert a["bake_max_error"] < 1e-5  # the analyses run on the CPU: the identity holds as there
    assert int(a["confusion"].sum()) == runs.NUM_MODELS * runs.IMAGES_PER_MODEL
