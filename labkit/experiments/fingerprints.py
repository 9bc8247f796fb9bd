"""Chapter 04 — Scalable GAN fingerprinting: the config, the runs, tables and claims.

``run(cfg)`` trains, every run cached and spread over the cores (``fingerprints_runs.train_run``):

- the **main row** (the paper's model at ``fingerprint_dim``), ``seeds`` seeds × ``steps``, with
  the analyses (baking, 100 baked models, detection, robustness);
- the **un-fingerprinted G** (same nets, no fingerprint, no F), the same seeds and steps;
- the **capacity sweep** over ``sweep_dims`` and the **ablation rows**, ``short_steps`` each.

Rows shorter than the main run are compared with the main run's checkpoint at ``short_steps``:
the same seed, the same batches up to there, so every comparison is compute-matched. The
d_c of the main row in the sweep is that checkpoint too.

With ``device="cuda"`` every run trains on the GPU, one after another in this process; what the
runs return is on the CPU either way.

``claims(results)`` judges the spec's expected outcomes 2–8 by the shared rule of
``labkit.report`` (outcome 1, the baking identity, is a unit test and an assertion).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from labkit.cache import cached_runs
from labkit.config import check_choice, check_device, check_positive_int, workers_for
from labkit.config import from_budget as _from_budget
from labkit.experiments import fingerprints_runs as runs

TITLE = "Responsible Disclosure of Generative Models Using Scalable Fingerprinting"
CHAPTER = "04-gan-fingerprinting"
MAIN = "fingerprinted G"
UNFINGERPRINTED = "un-fingerprinted G"
#: the spec's ablation rows: name -> overrides of ``train_run``
ABLATIONS: dict[str, dict[str, Any]] = {
    "λ_const = 0": dict(lambda_const=0.0),
    "λ_z = 0": dict(lambda_z=0.0),
    "c concatenated to z": dict(embedding="concat"),
    "modulation at 4² only": dict(modulated_resolutions=(4,)),
    "no R1": dict(r1_gamma=0.0),
}
#: ablation rows that claims compare (seeded like the main row); the others run one seed
SEEDED_ABLATIONS = ("λ_const = 0", "c concatenated to z")
FINGERPRINT_DIMS = (8, 16, 32, 64)


@dataclasses.dataclass
class FingerprintConfig:
    """Defaults are the quick budget; ``BUDGETS`` lists what the other budgets change."""

    budget: str = "quick"
    seed: int = 0
    workers: int = 0  # 0: one process per core
    device: str = "cpu"  # "cuda" on a GPU machine (the runs then go in this process)
    fingerprint_dim: int = 16  # d_c of the main row
    steps: int = 400  # the main row and the un-fingerprinted G
    short_steps: int = 200  # the sweep and the ablations (a checkpoint of the main row)
    seeds: int = 1  # seeds of the main row, the un-fingerprinted G and the seeded ablations
    sweep_seeds: int = 1
    sweep_dims: tuple = (8, 16)
    ablations: tuple = ()
    eval_every: int = 100
    num_bits: int = 500  # fresh (z, c) pairs per bit-accuracy point
    num_eval: int = 400  # fakes per FD; the floor compares num_eval reals with num_eval others
    classifier_steps: int = runs.CLASSIFIER_STEPS


# Budgets (`labkit run 04-gan-fingerprinting [--budget full]`). One step at batch 32 takes ~45 ms
# on one idle core (G's step, two passes of G through D and F, is 70 % of it); the un-fingerprinted
# G ~25 ms. Full: 3 × 3,600 (main) + 3 × 3,600 × 0.55 (un-fingerprinted) + 6 × 1,800 (sweep,
# d_c 8, 32, 64 × 2 seeds) + 6 × 1,800 (two seeded ablations) + 3 × 1,800 (three single-seed
# ablations) ≈ 43,700 step-equivalents ≈ 1,970 core-s: ~1,000 s on 2 cores.
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(steps=40, short_steps=20, eval_every=20, num_bits=200, num_eval=200, sweep_dims=(8, 16),
                  ablations=("λ_const = 0",), classifier_steps=50),
    "quick": {},
    "full": dict(steps=3600, short_steps=1800, seeds=3, sweep_seeds=2, sweep_dims=FINGERPRINT_DIMS,
                 ablations=tuple(ABLATIONS), eval_every=300, num_bits=2000, num_eval=800),
}


def from_budget(budget: str = "quick", **overrides: Any) -> FingerprintConfig:
    cfg = _from_budget(FingerprintConfig, budget, BUDGETS, **overrides)
    check_device(cfg.device)
    check_choice("fingerprint_dim", cfg.fingerprint_dim, FINGERPRINT_DIMS)
    for dim in cfg.sweep_dims:
        check_choice("sweep_dims entry", dim, FINGERPRINT_DIMS)
    for row in cfg.ablations:
        check_choice("ablations entry", row, tuple(ABLATIONS))
    for name in ("steps", "short_steps", "seeds", "sweep_seeds", "eval_every", "num_bits", "num_eval",
                 "classifier_steps"):
        check_positive_int(name, getattr(cfg, name))
    if cfg.short_steps > cfg.steps or cfg.short_steps % cfg.eval_every or cfg.steps % cfg.eval_every:
        raise ValueError(f"short_steps={cfg.short_steps} and steps={cfg.steps} must be multiples of "
                         f"eval_every={cfg.eval_every} with short_steps <= steps: the short rows are compared "
                         "with the main row's checkpoint at short_steps")
    if cfg.seeds > 1 and cfg.sweep_seeds > cfg.seeds:
        raise ValueError(f"sweep_seeds={cfg.sweep_seeds} is not valid; it must be <= seeds={cfg.seeds} (the "
                         "sweep's own d_c is the main row's checkpoint)")
    if 2 * cfg.num_eval > 1797:
        raise ValueError(f"num_eval={cfg.num_eval} is too large: the floor needs 2·num_eval <= 1797 digits")
    return cfg


# --- the plan --------------------------------------------------------------------------------

def _common(cfg: FingerprintConfig) -> dict:
    return dict(eval_every=cfg.eval_every, num_bits=cfg.num_bits, num_eval=cfg.num_eval,
                classifier_steps=cfg.classifier_steps, device=cfg.device)


def plan(cfg: FingerprintConfig) -> list[tuple[str, dict]]:
    """(row, kwargs of ``runs.train_run``) for every run, longest first."""
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    out = []
    for seed in seeds:
        out.append((MAIN, dict(embedding="modulation", fingerprint_dim=cfg.fingerprint_dim, seed=seed,
                               steps=cfg.steps, analyse=True, **_common(cfg))))
        out.append((UNFINGERPRINTED, dict(embedding="none", fingerprint_dim=cfg.fingerprint_dim, seed=seed,
                                          steps=cfg.steps, **_common(cfg))))
    for dim in cfg.sweep_dims:
        if dim != cfg.fingerprint_dim:
            for seed in seeds[:cfg.sweep_seeds]:
                out.append((f"d_c = {dim}", dict(embedding="modulation", fingerprint_dim=dim, seed=seed,
                                                 steps=cfg.short_steps, **_common(cfg))))
    for row in cfg.ablations:
        overrides = dict(ABLATIONS[row])
        for seed in seeds if row in SEEDED_ABLATIONS else seeds[:1]:
            kwargs = dict(embedding="modulation", fingerprint_dim=cfg.fingerprint_dim, seed=seed,
                          steps=cfg.short_steps, **_common(cfg))
            out.append((row, {**kwargs, **overrides}))
    cost = {"none": 0.55}
    return sorted(out, key=lambda p: -p[1]["steps"] * cost.get(p[1]["embedding"], 1.0))


def run(cfg: FingerprintConfig) -> dict[str, Any]:
    """Every run of the chapter (see the module docstring), grouped by row and sorted by seed."""
    steps = plan(cfg)
    workers = workers_for(cfg.device, cfg.workers)
    floor = cached_runs("fingerprints-floor", runs.real_floor, [dict(num_eval=cfg.num_eval,
                        classifier_steps=cfg.classifier_steps, device=cfg.device)], workers)[0]
    done = cached_runs("fingerprints-run", runs.train_run, [kw for _, kw in steps], workers)
    by_row: dict[str, list] = {}
    for (row, _), result in sorted(zip(steps, done), key=lambda p: p[1]["seed"]):
        by_row.setdefault(row, []).append(result)
    return dict(config=dataclasses.asdict(cfg), floor=floor["floor"],
                classifier_accuracy=floor["classifier_accuracy"], runs=by_row)


# --- reading the results -------------------------------------------------------------------------

def at_step(result: dict, metric: str, step: int) -> float:
    """``metric`` of one run's curve at ``step`` (NaN when the curve has no such checkpoint)."""
    curve = result["curve"]
    return float(curve[metric][curve["step"].index(step)]) if step in curve["step"] else math.nan


def short_row(results: dict, row: str) -> dict[int, dict]:
    """seed → {bit_accuracy, same_z, fd} of ``row`` at ``short_steps`` (the main row's checkpoint
    there; the sweep's ``d_c = <main d_c>`` is the same)."""
    cfg = results["config"]
    step = cfg["short_steps"]
    main_dim = f"d_c = {cfg['fingerprint_dim']}"
    source = MAIN if row in (MAIN, main_dim) else row
    entries = results["runs"].get(source, [])
    if source == MAIN and row == main_dim:
        entries = entries[:cfg["sweep_seeds"]]
    return {r["seed"]: {m: at_step(r, m, step) for m in ("bit_accuracy", "same_z", "fd")} for r in entries}


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def ablation_table(results: dict) -> list[dict]:
    """At ``short_steps``: the main row, every ablation row and the un-fingerprinted G's checkpoint
    there; mean ± std over seeds of bit accuracy, same-z difference and classifier-FD."""
    cfg = results["config"]
    rows = [MAIN, *[r for r in ABLATIONS if r in results["runs"]]]
    table = []
    for row in rows:
        values = short_row(results, row)
        out = dict(row=row, steps=cfg["short_steps"], seeds=len(values))
        for metric in ("bit_accuracy", "same_z", "fd"):
            out[f"{metric}_mean"], out[f"{metric}_std"] = _mean_std([v[metric] for v in values.values()])
        table.append(out)
    return table


def capacity_table(results: dict) -> list[dict]:
    """Per d_c of the sweep, at ``short_steps``: bit accuracy (mean ± std, per seed) and FD."""
    cfg = results["config"]
    table = []
    for dim in sorted(cfg["sweep_dims"]):
        values = short_row(results, f"d_c = {dim}")
        accuracy = [v["bit_accuracy"] for v in values.values()]
        mean, std = _mean_std(accuracy)
        fd_mean, _ = _mean_std([v["fd"] for v in values.values()])
        table.append(dict(fingerprint_dim=dim, steps=cfg["short_steps"], seeds=len(values), bit_accuracy_mean=mean,
                          bit_accuracy_std=std, per_seed=accuracy, fd_mean=fd_mean, models=f"2^{dim}"))
    return table


def main_table(results: dict) -> list[dict]:
    """The main row against the un-fingerprinted G and the floor, at ``steps``, and the analyses."""
    table = []
    for row in (MAIN, UNFINGERPRINTED):
        entries = results["runs"].get(row, [])
        out = dict(row=row, steps=results["config"]["steps"], seeds=len(entries))
        for metric in ("bit_accuracy", "same_z", "fd"):
            out[f"{metric}_mean"], out[f"{metric}_std"] = _mean_std([r[metric] for r in entries])
        analyses = [r["analysis"] for r in entries if "analysis" in r]
        for name, key in (("attribution", "attribution_correct"), ("tpr", "detected"), ("fpr", "real_detected"),
                          ("real_bit_accuracy", "real_bit_accuracy")):
            out[f"{name}_mean"], out[f"{name}_std"] = _mean_std([float(np.mean(a[key])) for a in analyses])
        table.append(out)
    floor = dict(row="real vs real (floor)", steps=0, seeds=0, fd_mean=results["floor"], fd_std=math.nan)
    return table + [floor]


def analyses(results: dict) -> list[dict]:
    """The main row's analysis dicts, one per seed."""
    return [r["analysis"] for r in results["runs"].get(MAIN, []) if "analysis" in r]


from labkit.experiments.fingerprints_claims import claims  # noqa: E402  (the claims use the tables above)

__all__ = ["FingerprintConfig", "BUDGETS", "from_budget", "plan", "run", "ablation_table", "capacity_table",
           "main_table", "analyses", "claims", "at_step", "short_row", "ABLATIONS", "MAIN", "UNFINGERPRINTED"]
