"""Chapter 01 — Dual contrastive loss and attention for GANs: the config, the runs, tables and claims.

``run(cfg)`` trains in two stages, every run cached and each stage spread over the cores:

1. the metric classifier and its real-vs-real floor, beside the 2-D ring runs (NS and DCL);
2. one image GAN per (ablation row, seed), the costliest rows first.

``claims(results)`` measures the spec's expected outcomes 2–6 (outcome 1, the loss identities, is
``tests/methods/test_dual_contrastive.py``) by the shared rule of ``labkit.report``: each is a
difference between two rows with a 95 % interval over training seeds (paired by seed), and the
probe adds its held-out images (a two-level bootstrap). On top, our convergence check
(``row_convergence``): a comparison whose rows have not converged is inconclusive whatever its
interval says, since before the plateau it measures training speed, not the end point.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from labkit import report
from labkit.cache import cached_runs
from labkit.config import check_choice, check_device, check_positive_int, workers_for
from labkit.config import from_budget as _from_budget
from labkit.experiments import dual_contrastive_runs as runs
from labkit.report import Claim

TITLE = "Dual Contrastive Loss and Attention for GANs"
CHAPTER = "01-dual-contrastive-gan"

#: the spec's ablation rows: name -> (loss, G self-attention, D attention)
ROWS: dict[str, tuple[str, bool, str]] = {
    "ns": ("ns", False, "none"),
    "hinge": ("hinge", False, "none"),
    "dcl": ("dcl", False, "none"),
    "ns+g-attn": ("ns", True, "none"),
    "dcl+g-attn": ("dcl", True, "none"),
    "dcl+g-attn+d-self": ("dcl", True, "self"),
    "dcl+g-attn+d-ref": ("dcl", True, "reference"),
}
FULL_MODEL = "dcl+g-attn+d-ref"
#: the rows the claims compare (2a/2c/3: ns, dcl, the full model; 4a: dcl+g-attn vs dcl; 5: ref vs
#: self); hinge (in no claim) and ns+g-attn (4b, the same question as 4a) run on request
CLAIM_ROWS = ("ns", "dcl", "dcl+g-attn", "dcl+g-attn+d-self", FULL_MODEL)
RING_LOSSES = ("ns", "dcl")
#: ms per training step of digits at 16² on one core (batch 64, width 16, loaded), longest runs first
STEP_MS = {"ns": 51, "hinge": 50, "dcl": 48, "ns+g-attn": 63, "dcl+g-attn": 63, "dcl+g-attn+d-self": 82,
           "dcl+g-attn+d-ref": 90}


@dataclasses.dataclass
class DCLConfig:
    """Defaults are the quick budget; ``BUDGETS`` lists what the other budgets change."""

    budget: str = "quick"
    seed: int = 0
    workers: int = 0  # 0: one process per core
    dataset: str = "digits"  # "digits" (16², one channel) or "scenes" (32² RGB, the CLEVR stand-in)
    image_size: int = 16
    width: int = 16  # the nets' base width (G: 4·width channels at 4², width at 16²)
    lr: float = 2e-3  # Adam, StyleGAN2's settings (the spec's 2e-4, β = (0.5, 0.999) had not
    betas: tuple = (0.0, 0.99)  # plateaued after 3,000 steps in our pilot)
    steps: int = 300
    seeds: int = 1  # seeds per row: seed, seed + 1, ...
    rows: tuple = ("ns", "dcl", FULL_MODEL)
    eval_every: int = 100
    num_eval: int = 800  # fakes per FD; the floor compares num_eval reals with num_eval others
    ring_seeds: int = 2
    ring_steps: int = 1000
    probe: bool = True  # linear probe of D's features: digit class (digits) or object count (scenes)
    classifier_steps: int = runs.CLASSIFIER_STEPS  # the metric classifier's training
    device: str = "cpu"  # "cuda" on a GPU machine (the runs then go in this process)


# Budgets (`labkit run 01-dual-contrastive-gan [--budget full]`). One 16² digit step at width 16 on
# one core, evaluations and probes included, measured on a loaded machine (idle is ~1.6× faster):
# NS/DCL ~50 ms, + G attention 63, + D self-attention 82, the full model 90 (``STEP_MS``).
# Quick (3 rows × 300 steps, one seed): ``run`` took 177 s loaded against 416 s for the old quick
# (width 32; 73 s idle for the whole notebook), so ~35 s idle. Full: 5 rows × 3 seeds × 2,000
# steps ≈ 2,000 core-s plus 12 ring runs of 5,000 steps (~280 core-s) at the loaded rates: under
# 20 min on 2 cores even at those rates; measured alone on 2 idle cores: 1,066 s. The old full budget (32² scenes, width 32,
# the spec's Adam, 2 seeds × 700 steps, 1,093 s) ended at FD 345–625 against a floor of 1.4; our
# digit pilots (seed 0) ended every claim row within 3× the floor at 2,000 steps.
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(rows=("ns", "dcl"), steps=20, eval_every=10, num_eval=200, ring_seeds=1, ring_steps=50,
                  classifier_steps=50),
    "quick": {},
    "full": dict(steps=2000, seeds=3, rows=CLAIM_ROWS, eval_every=100, num_eval=800, ring_seeds=6, ring_steps=5000),
}


def from_budget(budget: str = "quick", **overrides: Any) -> DCLConfig:
    cfg = _from_budget(DCLConfig, budget, BUDGETS, **overrides)
    check_choice("dataset", cfg.dataset, tuple(runs.DATASETS))
    check_device(cfg.device)
    check_choice("image_size", cfg.image_size, (16, 32))
    if not cfg.rows:
        raise ValueError(f"rows is empty; choose from: {', '.join(ROWS)}")
    for row in cfg.rows:
        check_choice("rows entry", row, tuple(ROWS))
    for name in ("steps", "seeds", "width", "eval_every", "num_eval", "classifier_steps"):
        check_positive_int(name, getattr(cfg, name))
    for name in ("ring_seeds", "ring_steps"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name}={getattr(cfg, name)!r} is not valid; it must be an int >= 0")
    available = runs.NUM_SCENES if cfg.dataset == "scenes" else 1797
    if 2 * cfg.num_eval > available:
        raise ValueError(f"num_eval={cfg.num_eval} is too large for {cfg.dataset}: the floor needs "
                         f"2·num_eval <= {available} real images")
    return cfg


# --- the plan --------------------------------------------------------------------------------

def seed_list(cfg: DCLConfig) -> list[int]:
    return [cfg.seed + k for k in range(cfg.seeds)]


def floor_kwargs(cfg: DCLConfig) -> dict:
    return dict(dataset=cfg.dataset, image_size=cfg.image_size, num_eval=cfg.num_eval,
                classifier_steps=cfg.classifier_steps)


def gan_plan(cfg: DCLConfig) -> list[tuple[str, dict]]:
    """(row, kwargs of ``runs.train_gan``) for every (row, seed), costliest first."""
    plan = []
    for row in cfg.rows:
        loss, g_attention, d_attention = ROWS[row]
        for seed in seed_list(cfg):
            plan.append((row, dict(dataset=cfg.dataset, image_size=cfg.image_size, loss=loss, g_attention=g_attention,
                                   d_attention=d_attention, steps=cfg.steps, seed=seed, width=cfg.width, lr=cfg.lr,
                                   betas=tuple(cfg.betas), eval_every=cfg.eval_every,
                                   num_eval=cfg.num_eval, probe=cfg.probe, classifier_steps=cfg.classifier_steps,
                                   device=cfg.device)))
    return sorted(plan, key=lambda p: -STEP_MS[p[0]])


def ring_plan(cfg: DCLConfig) -> list[dict]:
    return [dict(loss=loss, seed=cfg.seed + k, steps=cfg.ring_steps, device=cfg.device)
            for loss in RING_LOSSES for k in range(cfg.ring_seeds)] if cfg.ring_steps else []


def _stage1(kind: str, kwargs: dict) -> dict:
    return runs.real_floor_info(**kwargs) if kind == "floor" else runs.train_ring(**kwargs)


def run(cfg: DCLConfig) -> dict[str, Any]:
    """Every run of the chapter, staged as the module docstring says. The GANs (image and ring)
    train on ``cfg.device``; the metric classifier, the floor and every metric stay on the CPU
    (the classifier's cache entry is shared by every device, so all runs are measured alike)."""
    workers = workers_for(cfg.device, cfg.workers)
    ring_kwargs = ring_plan(cfg)
    stage1 = cached_runs("dcl-stage1", _stage1, [dict(kind="floor", kwargs=floor_kwargs(cfg))]
                         + [dict(kind="ring", kwargs=kw) for kw in ring_kwargs], workers)
    plan = gan_plan(cfg)
    done = cached_runs("dcl-gan", runs.train_gan, [kw for _, kw in plan], workers)
    by_row: dict[str, list] = {row: [] for row in cfg.rows}
    for (row, _), result in sorted(zip(plan, done), key=lambda p: p[1]["seed"]):
        by_row[row].append(result)
    ring: dict[str, list] = {loss: [] for loss in RING_LOSSES}
    for kw, result in zip(ring_kwargs, stage1[1:]):
        ring[kw["loss"]].append(result)
    return dict(config=dataclasses.asdict(cfg), floor=stage1[0]["floor"],
                classifier_accuracy=stage1[0]["classifier_accuracy"], runs=by_row, ring=ring,
                rows={row: dict(zip(("loss", "g_attention", "d_attention"), ROWS[row])) for row in cfg.rows})


# --- tables ----------------------------------------------------------------------------------

METRICS = ("fd", "precision", "recall", "validity", "probe")


def _values(results: dict, row: str, metric: str) -> list[float]:
    return [float(r[metric]) for r in results["runs"].get(row, []) if r.get(metric) is not None]


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (NaN std with fewer than two values; NaN mean with none)."""
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def ablation_table(results: dict) -> list[dict]:
    """Per row: mean ± std over seeds of classifier-FD, precision, recall, validity and probe
    accuracy (NaN where not measured); a last row holds the real-vs-real floor."""
    table = []
    for row, entries in results["runs"].items():
        out = dict(row=row, **results["rows"][row], seeds=len(entries))
        for metric in METRICS:
            out[f"{metric}_mean"], out[f"{metric}_std"] = _mean_std(_values(results, row, metric))
        table.append(out)
    floor = dict(row="real vs real (floor)", loss="", g_attention=False, d_attention="", seeds=0)
    floor.update({f"{m}_{s}": math.nan for m in METRICS for s in ("mean", "std")}, fd_mean=results["floor"])
    return table + [floor]


def logit_histograms(run_result: dict, bins: int = 40) -> list[dict]:
    """Per logit checkpoint of one GAN run: shared bin ``edges`` (bins + 1,) spanning that step's real
    and fake logits, and the ``real`` and ``fake`` counts (bins,). DCL's logits drift as a whole (the
    loss ignores a common shift), so each step gets its own range."""
    out = []
    logits = run_result["logits"]
    for step, real, fake in zip(logits["step"], logits["real"], logits["fake"]):
        edges = np.histogram_bin_edges(np.concatenate([real, fake]), bins=bins)
        out.append(dict(step=step, edges=edges, real=np.histogram(real, edges)[0], fake=np.histogram(fake, edges)[0]))
    return out


def ring_table(results: dict) -> list[dict]:
    """Per ring loss: modes covered (of 8) and high-quality fraction at the end, per seed and mean."""
    table = []
    for loss, entries in results["ring"].items():
        modes = [r["final"]["modes_covered"] for r in entries]
        quality = [r["final"]["high_quality_fraction"] for r in entries]
        table.append(dict(loss=loss, modes=modes, modes_mean=_mean_std(modes)[0], modes_std=_mean_std(modes)[1],
                          high_quality_mean=_mean_std(quality)[0]))
    return table


# --- convergence (our check, not the paper's) -----------------------------------------------

CONVERGENCE_WINDOW = 1 / 3  # the last third of training
CONVERGENCE_TOL = 0.10  # a plateau: |relative change of FD| over that window
FLOOR_FACTOR = 3.0  # or close to the data: FD within this factor of the real-vs-real floor
MIN_WINDOW_CHECKPOINTS = 3


def fd_change(steps: list[int], fds: list[float], window: float = CONVERGENCE_WINDOW) -> float:
    """Relative change of classifier-FD over the last ``window`` of training: the least-squares
    slope through the checkpoints there, times the window's span, over their mean FD (negative:
    still falling). NaN with fewer than ``MIN_WINDOW_CHECKPOINTS`` checkpoints in the window."""
    x, y = np.asarray(steps, dtype=float), np.asarray(fds, dtype=float)
    if x.size == 0:
        return math.nan
    start = x[-1] - window * x[-1]
    inside = x >= start
    if inside.sum() < MIN_WINDOW_CHECKPOINTS:
        return math.nan
    slope = np.polyfit(x[inside], y[inside], 1)[0]  # a line, not two endpoints: the curves are noisy
    return float(slope * (x[-1] - start) / y[inside].mean())


def row_convergence(results: dict, row: str) -> dict:
    """Has the row converged? Its FD curve averaged over seeds must have plateaued (``change``, the
    ``fd_change``, within ±``CONVERGENCE_TOL``) or ended within ``FLOOR_FACTOR`` × the floor
    (``in_floors``), where too little room is left for more training to reorder the rows much."""
    entries = results["runs"].get(row, [])
    if not entries:
        return dict(row=row, fd=math.nan, in_floors=math.nan, change=math.nan, converged=False)
    length = min(len(r["curve"]["fd"]) for r in entries)
    mean_curve = np.mean([r["curve"]["fd"][:length] for r in entries], axis=0)
    change = fd_change(entries[0]["curve"]["step"][:length], list(mean_curve))
    fd = float(np.mean([r["fd"] for r in entries]))
    in_floors = fd / results["floor"]
    plateau = bool(np.isfinite(change) and abs(change) <= CONVERGENCE_TOL)
    near_floor = bool(np.isfinite(change) and in_floors <= FLOOR_FACTOR)  # checkpoints needed either way
    return dict(row=row, fd=fd, in_floors=in_floors, change=change, converged=plateau or near_floor)


def convergence_table(results: dict) -> list[dict]:
    """``row_convergence`` of every row that ran."""
    return [row_convergence(results, row) for row in results["runs"]]


def unconverged_note(results: dict, rows: tuple[str, ...]) -> str:
    """Why the rows' comparison cannot be judged yet ("" when every row converged)."""
    failing = [c for c in (row_convergence(results, row) for row in rows) if not c["converged"]]
    if not failing:
        return ""
    parts = [f"{c['row']} at {c['in_floors']:.1f}× the floor, {100 * c['change']:+.0f} % over the last third"
             if np.isfinite(c["change"]) else f"{c['row']} (too few checkpoints to tell)" for c in failing]
    return (f"not converged, so not judged: {'; '.join(parts)} (our check: within ±{100 * CONVERGENCE_TOL:.0f} % "
            f"or within {FLOOR_FACTOR:g}× the floor)")


def judged_after_convergence(claim: Claim, results: dict, rows: tuple[str, ...]) -> Claim:
    """``claim``, made inconclusive when a row it compares has not converged: before the plateau a
    comparison judges how fast a GAN trains, not the end point the paper measures (the spec's
    pilot saw DCL-vs-NS flip sign between 1,000 and 1,500 steps)."""
    note = unconverged_note(results, rows)
    if not note or claim.status not in ("held", "not reproduced"):
        return claim if not note else dataclasses.replace(claim, detail=f"{claim.detail}; {note}")
    return dataclasses.replace(claim, status="inconclusive",
                               detail=f"{note} (the interval alone says {claim.status}); {claim.detail}")


# --- claims ----------------------------------------------------------------------------------

LABELS = {"fd": "FD", "validity": "validity", "probe": "probe accuracy"}
LOWER_IS_BETTER = {"fd": True, "validity": False, "probe": False}


def _by_seed(results: dict, row: str, metric: str) -> dict[int, Any]:
    return {r["seed"]: r[metric] for r in results["runs"].get(row, []) if r.get(metric) is not None}


def difference(results: dict, metric: str, method: str, control: str) -> report.Estimate | None:
    """``metric(method) − metric(control)``: paired by seed when both rows ran the same seeds (the
    same evaluation latents and batch stream; rows with references draw extra reals), else Welch. The probe adds its test images: a two-level bootstrap
    over seeds × held-out images, paired. None when a row lacks the metric."""
    a, b = _by_seed(results, method, metric), _by_seed(results, control, metric)
    if not a or not b:
        return None
    if sorted(a) != sorted(b):
        return report.unpaired_difference(list(a.values()), list(b.values()))
    seeds = sorted(a)
    if metric == "probe":
        items_a, items_b = _by_seed(results, method, "probe_correct"), _by_seed(results, control, "probe_correct")
        if sorted(items_a) == sorted(items_b) == seeds:
            return report.bootstrap_difference([items_a[s] for s in seeds], [items_b[s] for s in seeds],
                                               what="held-out images")
    return report.paired_difference([a[s] for s in seeds], [b[s] for s in seeds])


def _compare(results: dict, name: str, paper: str, metric: str, method: str, control: str) -> Claim:
    label = LABELS[metric]
    direction = "<" if LOWER_IS_BETTER[metric] else ">"
    check = f"{label}({method}) − {label}({control}) {direction} 0"
    estimate = difference(results, metric, method, control)
    if estimate is None:
        needs = {"validity": " on scenes", "probe": " with probe=True"}.get(metric, "")
        return Claim.not_measured(name, paper, check=check, detail=f"needs rows {method} and {control}{needs}")
    (ma, sa), (mb, sb) = (_mean_std(_values(results, row, metric)) for row in (method, control))
    detail = (f"{method} {ma:.3g} ± {0 if np.isnan(sa) else sa:.2g} vs {control} {mb:.3g} ± "
              f"{0 if np.isnan(sb) else sb:.2g} (mean ± std over seeds)")
    if metric == "fd":
        detail += f"; {100 * (ma - mb) / mb:+.1f} % of {control}'s FD; floor {results['floor']:.3g}"
    if metric == "probe":
        detail += _probe_init(results)
    claim = Claim.compare(name, paper, estimate, threshold=0.0, direction=direction, check=check, detail=detail)
    return judged_after_convergence(claim, results, (method, control))


def _probe_init(results: dict) -> str:
    init = [r["probe_init"] for entries in results["runs"].values() for r in entries
            if r.get("probe_init") is not None]
    return f"; D at initialisation probes at {np.mean(init):.3f}" if init else ""


def claims(results: dict) -> list[Claim]:
    """The spec's expected outcomes 2–6 as comparisons by the shared rule (``labkit.report``), an
    FD comparison made inconclusive while its rows have not converged (``judged_after_convergence``),
    plus two observations: the distance to the floor and how many rows converged."""
    out = [_floor_observation(results), _convergence_observation(results)]
    out.append(_compare(results, "2a. DCL lowers classifier-FD vs NS", "FID −17.5 % or more (abstract)",
                        "fd", "dcl", "ns"))
    out.append(_compare(results, "2b. full model's composition validity ≥ NS", "more valid CLEVR scenes",
                        "validity", FULL_MODEL, "ns"))
    out.append(_compare(results, "2c. full model lowers classifier-FD vs NS", "up to −47.5 % on CLEVR (abstract)",
                        "fd", FULL_MODEL, "ns"))
    out.append(_compare(results, "3. DCL's D features probe better than NS's", "more general representations",
                        "probe", "dcl", "ns"))
    out.append(_compare(results, "4a. G attention lowers FD (DCL)", "attention in G helps", "fd", "dcl+g-attn", "dcl"))
    out.append(_compare(results, "4b. G attention lowers FD (NS)", "attention in G helps", "fd", "ns+g-attn", "ns"))
    out.append(_compare(results, "5. reference attention beats self attention in D", "D self-attn hurts, ref helps",
                        "fd", "dcl+g-attn+d-ref", "dcl+g-attn+d-self"))
    return out + [_ring_claim(results)]


def _floor_observation(results: dict) -> Claim:
    best = min(convergence_table(results), key=lambda c: c["fd"])  # every row here ran
    return Claim.reported("Distance to the real-vs-real floor", "—",
                          f"{best['in_floors']:.1f}× the floor", check="best row's mean FD / floor",
                          detail=f"{best['row']} FD {best['fd']:.3g}, floor {results['floor']:.3g} "
                                 f"({results['config']['num_eval']} vs {results['config']['num_eval']} images)")


def _convergence_observation(results: dict) -> Claim:
    table = convergence_table(results)
    rows = "; ".join(f"{c['row']} {c['in_floors']:.1f}× floor, {100 * c['change']:+.0f} %"
                     for c in table if np.isfinite(c["change"]))
    return Claim.reported("Rows whose FD converged (our check)", "—",
                          f"{sum(c['converged'] for c in table)} of {len(table)}",
                          check=f"FD change over the last third within ±{100 * CONVERGENCE_TOL:.0f} % or FD ≤ "
                                f"{FLOOR_FACTOR:g}× floor",
                          detail=f"per row, FD in floors and its change over the last third: "
                                 f"{rows or 'too few checkpoints to tell'}")


def _ring_claim(results: dict) -> Claim:
    name, paper = "6. ring: DCL covers fewer modes than NS", "pilot: NS {6,6,6,8,2,8}, DCL {2,4,2,3,3,2}"
    check = "modes(DCL) − modes(NS) < 0 (a counter-example: the loss does not help here)"
    modes = {loss: {r["seed"]: r["final"]["modes_covered"] for r in results["ring"].get(loss, [])}
             for loss in RING_LOSSES}
    if not all(modes.values()):
        return Claim.not_measured(name, paper, check=check, detail="no ring runs at this budget")
    ns, dcl = modes["ns"], modes["dcl"]
    seeds = sorted(ns)
    # the same seed gives both losses the same initial nets and data stream: paired
    estimate = (report.paired_difference([dcl[s] for s in seeds], [ns[s] for s in seeds]) if sorted(dcl) == seeds
                else report.unpaired_difference(list(dcl.values()), list(ns.values())))
    quality = {row["loss"]: row["high_quality_mean"] for row in ring_table(results)}
    return Claim.compare(name, paper, estimate, threshold=0.0, direction="<", check=check,
                         detail=f"NS {[ns[s] for s in seeds]} (high-quality {quality['ns']:.2f}), DCL "
                                f"{[dcl[s] for s in sorted(dcl)]} (high-quality {quality['dcl']:.2f}) modes of 8 "
                                f"after {results['config']['ring_steps']} steps")
