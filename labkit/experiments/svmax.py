"""Chapter 03 — SVMax: the config, the runs, the ablations and the claims.

``run(cfg)`` trains everything the chapter shows and returns plain results; every single run goes
through ``labkit.cache`` (so a widget that retrains one configuration reuses it) and the runs are
spread over the machine's cores. ``claims(results)`` turns results into the spec's checks.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import torch

from labkit.cache import cached_runs
from labkit.config import check_device, workers_for
from labkit.config import from_budget as _from_budget
from labkit.experiments.svmax_runs import train_retrieval, train_ring_gan, train_unit_circle
from labkit.methods import svmax
from labkit.report import LEVEL, Claim, Estimate, seed_interval, verdict

TITLE = "SVMax: A Feature Embedding Regularizer"
CHAPTER = "03-svmax"
# The paper's lambda per ranking loss (fixed across datasets, architectures, b and d).
PAPER_LAMBDA = {"contrastive": 1.0, "npair": 1.0, "triplet": 0.1, "angular": 2.0}


@dataclasses.dataclass
class SVMaxConfig:
    """Defaults are the quick budget; ``BUDGETS`` lists what the other budgets change."""

    budget: str = "quick"
    seed: int = 0
    device: str = "cpu"  # "cuda" on a GPU machine (the runs then go in this process)
    workers: int = 0  # 0: one process per core
    # Part A: retrieval on digits (train classes 0–4, test 5–9)
    losses: tuple = ("contrastive", "triplet")
    lrs: tuple = (0.5, 0.1, 0.01)
    num_seeds: int = 3
    num_steps: int = 600
    embedding_dim: int = 16
    classes_per_batch: int = 5
    samples_per_class: int = 30
    # ablation rows, contrastive at the largest lr
    ablation_seeds: int = 2
    # b/d sweep with fixed lambda (claim 5); empty at quick
    sweep_batch_sizes: tuple = ()
    sweep_dims: tuple = ()
    sweep_seeds: int = 3
    # Fig. 4 analogue: ten digits on the unit circle
    circle_epochs: int = 8
    # Part B: ring GAN
    gan_lrs: tuple = (0.025, 0.005)
    gan_lambda: float = 0.01
    gan_seeds: int = 2
    gan_steps: int = 600
    gan_checkpoints: int = 3
    gan_unrolled_lrs: tuple = ()  # lrs that also get unrolled-D rows (full only: 5x the cost)
    gan_unrolled_seeds: int = 4
    gan_unroll_steps: int = 5


BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(losses=("contrastive",), lrs=(0.5, 0.01), num_seeds=1, num_steps=60, ablation_seeds=1,
                  circle_epochs=1, gan_lrs=(0.025,), gan_seeds=1, gan_steps=60, gan_checkpoints=2),
    "quick": {},
    "full": dict(losses=("contrastive", "triplet", "npair", "angular"), num_seeds=5, ablation_seeds=5,
                 sweep_batch_sizes=(40, 80, 160), sweep_dims=(8, 16, 32), sweep_seeds=5, circle_epochs=64,
                 gan_seeds=8, gan_steps=5000, gan_checkpoints=5, gan_unrolled_lrs=(0.025,)),
}


def from_budget(budget: str = "quick", **overrides: Any) -> SVMaxConfig:
    cfg = _from_budget(SVMaxConfig, budget, BUDGETS, **overrides)
    check_device(cfg.device)
    return cfg


def _seeds(cfg: SVMaxConfig, count: int) -> list[int]:
    return [cfg.seed + i for i in range(count)]


def _common(cfg: SVMaxConfig) -> dict[str, Any]:
    return dict(num_steps=cfg.num_steps, embedding_dim=cfg.embedding_dim, device=cfg.device,
                classes_per_batch=cfg.classes_per_batch, samples_per_class=cfg.samples_per_class)


def grid_runs(cfg: SVMaxConfig) -> list[dict[str, Any]]:
    """Vanilla vs SVMax (paper lambda) for every loss × lr × seed; triplet also at lambda = 1."""
    runs = []
    for loss, lr, seed in itertools.product(cfg.losses, cfg.lrs, _seeds(cfg, cfg.num_seeds)):
        runs.append(dict(loss=loss, lr=lr, seed=seed, variant="vanilla", lam=0.0))
        runs.append(dict(loss=loss, lr=lr, seed=seed, variant="svmax", lam=PAPER_LAMBDA[loss]))
        if loss == "triplet":
            runs.append(dict(loss=loss, lr=lr, seed=seed, variant="svmax", lam=1.0))
    return [run | _common(cfg) for run in runs]


# The spec's ablation rows: (label, variant, lambda, overrides), contrastive at the largest lr.
ABLATIONS = (
    ("vanilla", "vanilla", 0.0, {}),
    ("SVMax exp, λ=1", "svmax", 1.0, {}),
    ("SVMax exp, λ=0.1", "svmax", 0.1, {}),
    ("SVMax plain (Eq. 1), λ/(U−L)", "svmax_plain", 1.0, {}),
    ("spread-out, α=1", "spread_out", 1.0, {}),
    ("SVMax on unnormalized", "svmax_unnormalized", 1.0, {}),
    ("SVMax, b < d (b=15, d=16)", "svmax", 1.0, {"samples_per_class": 3}),
)


def ablation_runs(cfg: SVMaxConfig) -> list[dict[str, Any]]:
    runs = []
    for (label, variant, lam, overrides), seed in itertools.product(ABLATIONS, _seeds(cfg, cfg.ablation_seeds)):
        runs.append(_common(cfg) | dict(loss="contrastive", lr=max(cfg.lrs), seed=seed, variant=variant,
                                        lam=lam) | overrides)
    return runs


def sweep_runs(cfg: SVMaxConfig) -> list[dict[str, Any]]:
    """Claim 5: one fixed lambda across batch sizes b and embedding sizes d (b >= d only)."""
    runs = []
    for b, d, seed, variant in itertools.product(cfg.sweep_batch_sizes, cfg.sweep_dims,
                                                 _seeds(cfg, cfg.sweep_seeds), ("vanilla", "svmax")):
        if b >= d:
            runs.append(_common(cfg) | dict(loss="contrastive", lr=max(cfg.lrs), seed=seed, variant=variant,
                                            lam=1.0 if variant == "svmax" else 0.0, embedding_dim=d,
                                            samples_per_class=b // cfg.classes_per_batch))
    return runs


def gan_runs(cfg: SVMaxConfig) -> list[dict[str, Any]]:
    runs = []
    for lr, lam, seed in itertools.product(cfg.gan_lrs, (0.0, cfg.gan_lambda), _seeds(cfg, cfg.gan_seeds)):
        runs.append(dict(lr=lr, lam=lam, seed=seed, unroll_steps=0))
    for lr, lam, seed in itertools.product(cfg.gan_unrolled_lrs, (0.0, cfg.gan_lambda),
                                           _seeds(cfg, cfg.gan_unrolled_seeds)):
        runs.append(dict(lr=lr, lam=lam, seed=seed, unroll_steps=cfg.gan_unroll_steps))
    return [run | dict(num_steps=cfg.gan_steps, num_checkpoints=cfg.gan_checkpoints, device=cfg.device)
            for run in runs]


def run(cfg: SVMaxConfig) -> dict[str, Any]:
    """Everything the chapter shows, as plain data; every run trains on ``cfg.device``."""
    workers = workers_for(cfg.device, cfg.workers)
    circle = [dict(variant=v, seed=cfg.seed, num_epochs=cfg.circle_epochs, device=cfg.device)
              for v in ("vanilla", "svmax")]
    sections = {"grid": grid_runs(cfg), "ablation": ablation_runs(cfg), "sweep": sweep_runs(cfg)}
    # one call for every retrieval run, so that the workers stay busy and shared runs train once
    retrieval = iter(cached_runs("svmax-retrieval", train_retrieval, sum(sections.values(), []), workers))
    results = {name: [next(retrieval) for _ in runs] for name, runs in sections.items()}
    return results | {
        "config": dataclasses.asdict(cfg),
        "circle": cached_runs("svmax-circle", train_unit_circle, circle, workers),
        "gan": cached_runs("svmax-gan", train_ring_gan, gan_runs(cfg), workers),
    }


# ---- summaries -------------------------------------------------------------------------------

LAST_CHECKPOINTS = 3  # the spec: GAN metrics averaged over the last 3 checkpoints


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1) of the finite values; the std is NaN below two seeds."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else float("nan")


def _summary(runs: list[dict], **metrics) -> dict[str, float]:
    """``{name: mean, name_std: std}`` over ``runs`` for each ``name=value_of_run``."""
    out = {}
    for name, value in metrics.items():
        out[name], out[f"{name}_std"] = _mean_std([value(r) for r in runs])
    return out


def _r1(run: dict) -> float:
    return run["recall"]["1"]


def _modes(run: dict, last: int = LAST_CHECKPOINTS) -> float:
    return float(np.mean(run["modes_covered"][-last:]))


def _quality(run: dict, last: int = LAST_CHECKPOINTS) -> float:
    return float(np.mean(run["high_quality"][-last:]))


def grid_table(results: dict) -> list[dict[str, Any]]:
    """One row per (loss, lr, variant, lambda): mean and std over seeds of R@1, NMI and spread."""
    groups: dict[tuple, list[dict]] = {}
    for r in results["grid"]:
        groups.setdefault((r["loss"], r["lr"], r["variant"], r["lam"]), []).append(r)
    return [dict(loss=loss, lr=lr, variant=variant, lam=lam, seeds=len(runs),
                 **_summary(runs, r1=_r1, nmi=lambda r: r["nmi"], spread=lambda r: r["spread"]))
            for (loss, lr, variant, lam), runs in groups.items()]


def ablation_table(results: dict) -> list[dict[str, Any]]:
    rows = []
    per_row = len(results["ablation"]) // len(ABLATIONS)
    for i, (label, *_rest) in enumerate(ABLATIONS):
        runs = results["ablation"][i * per_row:(i + 1) * per_row]
        rows.append(dict(row=label, seeds=len(runs), warning=(runs[0]["warnings"] or [""])[0],
                         **_summary(runs, r1=_r1, nmi=lambda r: r["nmi"], spread=lambda r: r["spread"])))
    return rows


def sweep_table(results: dict) -> list[dict[str, Any]]:
    """Per (b, d): mean R@1 of each variant and SVMax − vanilla paired by seed, with its interval."""
    rows = []
    for (b, d), gains in _sweep_cells(results).items():
        cell = [r for r in results["sweep"] if (r["batch_size"], r["embedding_dim"]) == (b, d)]
        gain = seed_interval(list(gains.values()), what="paired t over")
        rows.append(dict(b=b, d=d, seeds=len(gains), gain=gain.value, gain_low=gain.low, gain_high=gain.high,
                         **{v: _mean_std([_r1(r) for r in cell if r["variant"] == v])[0]
                            for v in ("vanilla", "svmax")}))
    return rows


def gan_table(results: dict, last: int = LAST_CHECKPOINTS) -> list[dict[str, Any]]:
    """Modes covered (of 8) and high-quality fraction over seeds and the last ``last`` checkpoints."""
    groups: dict[tuple, list[dict]] = {}
    for r in results["gan"]:
        groups.setdefault((r["lr"], r["unroll_steps"], r["lam"]), []).append(r)
    return [dict(lr=lr, row=("unrolled" if unroll else "vanilla") + (" + SVMax" if lam else ""), lam=lam,
                 unroll_steps=unroll, seeds=len(runs),
                 **_summary(runs, modes=lambda r: _modes(r, last), quality=lambda r: _quality(r, last)))
            for (lr, unroll, lam), runs in groups.items()]


def circle_spread(results: dict) -> dict[str, list[float]]:
    """Normalized spread (s_μ − L)/(U − L) of the unit-circle embeddings after each epoch."""
    return {run["variant"]: [float(svmax.normalized_spread(torch.as_tensor(E, dtype=torch.float64)))
                             for E in run["embeddings"]] for run in results["circle"]}


# ---- claims: every comparison paired by seed (vanilla and SVMax share each seed's init and batches) ----

TRIPLET_PAR_MARGIN = -0.03  # the spec's "within ±0.03 R@1 of vanilla or better"
EVERY_CELL_RULE = ("held: every cell's 95 % interval on the claimed side; not reproduced: one cell's "
                   "Bonferroni interval on the other (see every_cell)")
PAIRED = ("noise: training seeds; vanilla and SVMax runs of a seed share its initialisation and batches, "
          "and every run is tested on the same held-out images, so each seed gives one paired difference")
GAN_PAIRED = ("noise: training seeds; both runs of a seed share its initialisation, data stream and the "
              "2,500 latent draws they are scored on")
# Where the notebook asserts a claim: only where measured held at that budget. At quick (3 seeds)
# claim 3 held with its weakest cell's interval at [+0.17, +0.31] and 4b at [+0.03, +0.22] (threshold
# −0.03); 2a, 2b and 4a were inconclusive. Full-budget assertions wait for a full run measured on this rule.
ASSERTED: dict[str, tuple[str, ...]] = {"2a": (), "2b": (), "3": ("quick",), "4a": (), "4b": ("quick",), "5": ()}


def _seed_gains(runs: list[dict], value, method: dict, control: dict) -> dict[int, float]:
    """``{seed: value(method run) − value(control run)}`` over the seeds both were trained with."""
    def by_seed(fields: dict) -> dict[int, float]:
        return {r["seed"]: value(r) for r in runs if all(r[k] == v for k, v in fields.items())}

    a, b = by_seed(method), by_seed(control)
    if not a.keys() & b.keys():
        raise ValueError(f"no seed has both {method} and {control}: cannot pair them")
    return {s: a[s] - b[s] for s in sorted(a.keys() & b.keys())}


def _vanilla(**fields) -> dict:
    return dict(variant="vanilla", **fields)


def _svmax(loss: str, lam: float | None = None, **fields) -> dict:
    return dict(variant="svmax", loss=loss, lam=PAPER_LAMBDA[loss] if lam is None else lam, **fields)


def _sweep_cells(results: dict) -> dict[tuple[int, int], dict[int, float]]:
    cells = sorted({(r["batch_size"], r["embedding_dim"]) for r in results["sweep"]})
    return {(b, d): _seed_gains(results["sweep"], _r1, dict(variant="svmax", batch_size=b, embedding_dim=d),
                                dict(variant="vanilla", batch_size=b, embedding_dim=d)) for b, d in cells}


def cell_claims(results: dict) -> dict[str, tuple[dict[str, dict[int, float]], float, str]]:
    """The claims about *every* cell of a grid: ``{claim: ({cell: {seed: gain}}, threshold, direction)}``."""
    cfg, grid = _config(results), results["grid"]
    out = {"3": ({f"{loss}, lr {lr:g}": _seed_gains(grid, lambda r: r["spread"], _svmax(loss, lr=lr),
                                                     _vanilla(loss=loss, lr=lr))
                  for loss in cfg.losses for lr in cfg.lrs}, 0.0, ">")}
    if "triplet" in cfg.losses:
        out["4a"] = ({f"lr {lr:g}": _seed_gains(grid, _r1, _svmax("triplet", 1.0, lr=lr), _svmax("triplet", 0.1, lr=lr))
                      for lr in cfg.lrs}, 0.0, "<")
        out["4b"] = ({f"lr {lr:g}": _seed_gains(grid, _r1, _svmax("triplet", 0.1, lr=lr), _vanilla(loss="triplet", lr=lr))
                      for lr in cfg.lrs}, TRIPLET_PAR_MARGIN, ">")
    if results["sweep"]:
        out["5"] = ({f"b={b}, d={d}": gains for (b, d), gains in _sweep_cells(results).items()}, 0.0, ">")
    return out


def every_cell(cells: dict[str, dict[int, float]], threshold: float, direction: str) -> tuple[str, Estimate]:
    """The cell and estimate that decide "every cell lies ``direction`` ``threshold``".

    An intersection–union test: the claim is **held** when each cell's own 95 % interval lies on the
    claimed side (for a claim about every cell this is a 95 % test with no multiplicity correction);
    it is shown by its weakest cell. It is **not reproduced** when some cell's interval lies on the
    other side even at the Bonferroni level 1 − 0.05/k over the k cells (one noisy cell out of k is
    not evidence); shown by that cell. Otherwise it is **inconclusive**, shown by the weakest cell at
    the Bonferroni level (an interval that then contains the threshold). No max or min of noisy
    point estimates is taken as if it were one estimate.
    """
    k = len(cells)
    strict_level = 1 - (1 - LEVEL) / k
    usual = {n: seed_interval(list(g.values()), what="paired t over") for n, g in cells.items()}
    strict = {n: seed_interval(list(g.values()), level=strict_level, what="paired t over")
              for n, g in cells.items()}
    sign = 1.0 if direction == ">" else -1.0
    weakest = min(cells, key=lambda n: (usual[n].low if sign > 0 else -usual[n].high, sign * usual[n].value))
    if verdict(usual[weakest], threshold, direction) == "held":
        return weakest, dataclasses.replace(usual[weakest], method=f"{usual[weakest].method}; "
                                                                    f"weakest of {k} cells: {weakest}")
    refuting = [n for n in cells if verdict(strict[n], threshold, direction) == "not reproduced"]
    name = min(refuting, key=lambda n: sign * strict[n].value) if refuting else weakest
    role = "refuting cell" if refuting else "weakest cell"
    return name, dataclasses.replace(strict[name], method=f"{strict[name].method} at {100 * strict_level:.1f} % "
                                                          f"(Bonferroni over {k} cells); {role}: {name}")


def cell_table(results: dict) -> list[dict[str, Any]]:
    """Every cell of the every-cell claims: its paired difference and 95 % interval over seeds."""
    rows = []
    for claim, (cells, threshold, direction) in cell_claims(results).items():
        for cell, gains in cells.items():
            estimate = seed_interval(list(gains.values()), what="paired t over")
            rows.append(dict(claim=claim, cell=cell, seeds=len(gains), difference=estimate.value,
                             low=estimate.low, high=estimate.high, check=f"{direction} {threshold:+g}",
                             verdict=verdict(estimate, threshold, direction)))
    return rows


def _config(results: dict) -> SVMaxConfig:
    return SVMaxConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()})



def _every_cell_claim(name: str, paper: str, cells: dict, threshold: float, direction: str, check: str,
                      grid: str, asserted_at: tuple = ()) -> Claim:
    _, estimate = every_cell(cells, threshold, direction)
    return Claim.compare(name, paper, estimate, threshold=threshold, direction=direction,
                         check=f"{check} in each of {len(cells)} {grid} cells", asserted_at=asserted_at,
                         detail=f"{PAIRED}. {EVERY_CELL_RULE}.")


def claims(results: dict) -> list[Claim]:
    """The spec's "Expected outcomes" 2–6, measured on ``results`` (outcome 1, the bounds, is an
    invariant: tests/methods/test_svmax.py checks it in float64)."""
    cfg, grid = _config(results), results["grid"]
    high, low = max(cfg.lrs), min(cfg.lrs)
    gain_high = _seed_gains(grid, _r1, _svmax("contrastive", lr=high), _vanilla(loss="contrastive", lr=high))
    gain_low = _seed_gains(grid, _r1, _svmax("contrastive", lr=low), _vanilla(loss="contrastive", lr=low))
    both = sorted(gain_high.keys() & gain_low.keys())
    out = [
        Claim.compare(f"2a. contrastive R@1 gain at lr {high:g}", "+15.5 R@1 (CUB, lr 0.01)",
                      seed_interval(list(gain_high.values()), what="paired t over"), threshold=0.10,
                      check="R@1(SVMax) − R@1(vanilla) > +0.10", asserted_at=ASSERTED["2a"], detail=PAIRED),
        Claim.compare(f"2b. gain at lr {high:g} > gain at lr {low:g}", "gains largest at large lr",
                      seed_interval([gain_high[s] - gain_low[s] for s in both], what="paired t over"),
                      check=f"gain(lr {high:g}) − gain(lr {low:g}) > 0", asserted_at=ASSERTED["2b"],
                      detail=PAIRED + " (all four runs of a seed enter its difference of gains)"),
    ]
    cells = cell_claims(results)
    out.append(_every_cell_claim("3. normalized spread higher with SVMax", "embeddings spread over all dimensions",
                                 *cells["3"], "spread(SVMax) − spread(vanilla) > 0", "loss × lr",
                                 ASSERTED["3"]))
    if "4a" in cells:
        out.append(_every_cell_claim("4a. triplet: λ=1 not better than λ=0.1", "SOP: λ=1 loses 8.15 R@1",
                                     *cells["4a"], "R@1(λ=1) − R@1(λ=0.1) < 0 (λ=1 measurably worse)", "lr",
                                     ASSERTED["4a"]))
        out.append(_every_cell_claim("4b. triplet: λ=0.1 on par with vanilla or better", "SOP: 71.48 vs 71.96",
                                     *cells["4b"], "R@1(λ=0.1) − R@1(vanilla) > −0.03", "lr", ASSERTED["4b"]))
    if "5" in cells:
        out.append(_every_cell_claim("5. one λ works for every b, d", "Fig. 5: b ∈ {288, 72}, d ∈ {256, 64}",
                                     *cells["5"], "R@1(SVMax) − R@1(vanilla) > 0", "b × d (b ≥ d)", ASSERTED["5"]))
    else:
        out.append(Claim.not_measured("5. one λ works for every b, d", "Fig. 5: b ∈ {288, 72}, d ∈ {256, 64}",
                                      check="R@1(SVMax) − R@1(vanilla) > 0 in every b × d cell",
                                      detail="the b/d sweep runs at the full budget"))
    out += [_gan_claim(results, max(cfg.gan_lrs), unrolled=False),
            _gan_claim(results, max(cfg.gan_unrolled_lrs, default=None), unrolled=True)]
    return out


def _gan_claim(results: dict, lr: float | None, unrolled: bool) -> Claim:
    row = "unrolled" if unrolled else "vanilla"
    name = f"6{'b' if unrolled else 'a'}. ring GAN, {row} D: SVMax covers more modes"
    check = f"modes covered (of 8; mean of the last {LAST_CHECKPOINTS} checkpoints): {row} + SVMax − {row} > 0"
    if lr is None:
        return Claim.not_measured(name, "Fig. 3, qualitative, one seed", check=check,
                                  detail="the unrolled rows run at the full budget")
    runs = [r for r in results["gan"] if r["lr"] == lr and bool(r["unroll_steps"]) == unrolled]
    gains = _seed_gains(runs, _modes, dict(lam=max(r["lam"] for r in runs)), dict(lam=0.0))
    return Claim.compare(f"{name} (lr {lr:g})", "Fig. 3, qualitative, one seed",
                         seed_interval(list(gains.values()), what="paired t over"), check=check,
                         detail=f"{GAN_PAIRED}. The spec calls this "
                                "effect weak and dominated by seed noise; never asserted.")
