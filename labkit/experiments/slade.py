"""Chapter 06 — SLADE: the config, the staged runs, and the tables.

``run(cfg)`` trains in stages; every run is cached and the runs of a stage are spread over the
cores. A stage hands weights to the next as files (``labkit.cache.artifact``):

1. the **teacher** (Eq. 1 on labeled data) per seed, and at the full budget the **SSL
   initialisation** (SimCLR NT-Xent on all images) per seed;
2. at the full budget, the **SSL-initialised teacher** and the **validation sweep** (seed 0) over
   k, δ and λ₁, one knob at a time around the spec's defaults;
3. the **compute-matched control** (the teacher trained for the student's extra steps on labels
   only, scoring validation R@1 as it goes, so the early-stopped control comes with it) and, with
   the values the sweep picked by *validation* R@1 (the defaults when there is no sweep), the
   **students** — SLADE (basis similarity), every pseudo-label pair, embedding cosine — per seed,
   the ``select="sim"`` row, and SLADE and all-pairs at other novel fractions;
4. the **second round** (the SLADE student as the next teacher) and the control trained for the
   same two rounds of extra steps.

``claims`` (``slade_claims``) judges the spec's outcomes 1–6.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from labkit.cache import artifact, cached_runs
from labkit.config import check_choice, check_device, check_positive_int, check_range, workers_for
from labkit.config import from_budget as _from_budget
from labkit.experiments import slade_runs as runs
from labkit.experiments import slade_student as student

TITLE = "SLADE: A Self-Training Framework for Distance Metric Learning"
CHAPTER = "06-slade"

TEACHER, SSL_ONLY, SSL_TEACHER = "teacher", "SSL init only", "teacher, SSL init"
CONTROL, CONTROL_EARLY = "control (same extra steps)", "control, early-stopped on validation"
ALL_PAIRS, SLADE, COSINE = "student, all pseudo pairs", "SLADE (basis selection)", "student, cosine selection"
SELECT_SIM = "SLADE, select = sim"
ROUND_2, CONTROL_2 = "SLADE, round 2", "control (two rounds of extra steps)"
#: the student rows run for every seed, by ``pair_source``
STUDENTS = {SLADE: "basis", ALL_PAIRS: "all", COSINE: "cosine"}


@dataclasses.dataclass
class SladeConfig:
    """Defaults are the quick budget; ``BUDGETS`` lists what the other budgets change."""

    budget: str = "quick"
    seed: int = 0
    workers: int = 0  # 0: one process per core
    device: str = "cpu"  # "cuda" on a GPU machine (the runs then go in this process)
    seeds: int = 1  # the main rows: teacher, control, the three students, SSL and round 2
    widths: tuple = (16, 32, 64)
    teacher_steps: int = 250
    student_steps: int = 250  # also the control's extra steps
    warmup: int = 50
    novel_fraction: float = 0.5
    k: int = 60  # the spec's defaults; the full budget's sweep picks on validation classes
    delta: float = 0.0
    lambda1: float = 1.0
    lambda2: float = 0.5
    sweep_k: tuple = ()
    sweep_delta: tuple = ()
    sweep_lambda1: tuple = ()
    novel_fractions: tuple = ()  # other novel fractions, for SLADE and all pairs
    select_sim: bool = False
    ssl_steps: int = 0  # 0: no SSL initialisation
    rounds: int = 1
    control_eval_every: int = 25


# Budgets (`labkit run 06-slade [--budget full]`). On one idle core at widths 32/64/128: a teacher
# step ~30 ms, a control step with its validation checks ~36 ms, a student step (two batches) ~58 ms,
# an SSL step (2 × 64 views) ~120 ms. Full: 3 × (600 teacher + 600 control + 3 × 600 students +
# 300 SSL + 600 SSL teacher + 600 round 2 + 600 control 2) + 5 sweep/sim runs + 12 novel runs ≈
# 1,300 core-s: ~11 minutes on 2 cores.
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(teacher_steps=30, student_steps=30, warmup=10, k=20, control_eval_every=10, sweep_k=(20, 30),
                  novel_fractions=(0.0,), select_sim=True, ssl_steps=10, rounds=2),
    "quick": {},
    "full": dict(seeds=3, widths=(32, 64, 128), teacher_steps=600, student_steps=600, sweep_k=(30, 60, 120),
                 sweep_delta=(0.0, 0.1), sweep_lambda1=(1.0, 2.0), novel_fractions=(0.0, 1.0), select_sim=True,
                 ssl_steps=300, rounds=2),
}


def from_budget(budget: str = "quick", **overrides: Any) -> SladeConfig:
    cfg = _from_budget(SladeConfig, budget, BUDGETS, **overrides)
    check_device(cfg.device)
    for name in ("seeds", "teacher_steps", "student_steps", "k", "control_eval_every"):
        check_positive_int(name, getattr(cfg, name))
    check_choice("rounds", cfg.rounds, (1, 2))
    if not 0 <= cfg.warmup < cfg.student_steps:
        raise ValueError(f"warmup={cfg.warmup} is not valid; it must lie in [0, student_steps={cfg.student_steps})")
    check_range("novel_fraction", cfg.novel_fraction, 0.0, 1.0)
    for value in cfg.novel_fractions:
        check_range("novel_fractions entry", value, 0.0, 1.0)
    for value in (*cfg.sweep_k,):
        check_positive_int("sweep_k entry", value)
    for value in (cfg.delta, *cfg.sweep_delta):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"delta={value!r} is not valid; it must be a finite number")
    for value in (cfg.lambda1, cfg.lambda2, *cfg.sweep_lambda1):
        check_range("lambda", value, 0.0)
    if cfg.ssl_steps < 0:
        raise ValueError(f"ssl_steps={cfg.ssl_steps} is not valid; it must be >= 0 (0 turns SSL off)")
    return cfg


# --- the plan ---------------------------------------------------------------------------------------

def pools(cfg: SladeConfig, novel_fraction: float | None = None, novel_from_test: bool = False) -> dict:
    """``make_pools``'s arguments; ``novel_from_test`` (the explorer's, never a chapter row's) draws
    the novel unlabeled images from the test classes."""
    out = dict(seed=cfg.seed, novel_fraction=cfg.novel_fraction if novel_fraction is None else novel_fraction)
    return dict(out, novel_from_test=True) if novel_from_test else out


def seeds(cfg: SladeConfig) -> list[int]:
    return [cfg.seed + i for i in range(cfg.seeds)]


def teacher_kwargs(cfg: SladeConfig, seed: int) -> dict:
    return dict(pools=pools(cfg), seed=seed, steps=cfg.teacher_steps, widths=tuple(cfg.widths), device=cfg.device)


def student_kwargs(cfg: SladeConfig, seed: int, teacher_file: str, *, pair_source: str = "basis",
                   select: str = "sim+label", novel_fraction: float | None = None, novel_from_test: bool = False,
                   **chosen: Any) -> dict:
    """``train_student``'s arguments; ``chosen`` overrides k, δ or λ₁ (else the config's)."""
    values = {**dict(k=cfg.k, delta=cfg.delta, lambda1=cfg.lambda1), **chosen}
    return dict(pools=pools(cfg, novel_fraction, novel_from_test), seed=seed, steps=cfg.student_steps, teacher_file=teacher_file,
                pair_source=pair_source, select=select, lambda2=cfg.lambda2, warmup=cfg.warmup,
                widths=tuple(cfg.widths), device=cfg.device, **values)


def _load_state(path: str) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def train(kind: str, **kwargs: Any) -> dict:
    """One run of any stage; weights of an earlier stage arrive as ``*_file`` paths."""
    if kind == "ssl":
        return runs.pretrain_simclr(**kwargs)
    init_file = kwargs.pop("init_file", None)
    if kind == "labeled":
        return runs.train_labeled(**kwargs, init_state=_load_state(init_file) if init_file else None)
    check_choice("kind", kind, ("ssl", "labeled", "student"))
    teacher_state = _load_state(kwargs.pop("teacher_file"))
    return student.train_student(**kwargs, teacher_state=teacher_state)


def _weights(name: str, kwargs: dict, result: dict) -> str:
    return artifact(name, kwargs, result["state"])


def _choose(sweep: dict[str, list[dict]], defaults: dict) -> dict:
    """The sweep's value of each knob with the best validation R@1 (the default on ties)."""
    chosen = {}
    for knob, entries in sweep.items():
        best = max(entries, key=lambda e: (e["validation"]["recall"]["1"], e[knob] == defaults[knob]))
        chosen[knob] = best[knob]
    return chosen


def run(cfg: SladeConfig) -> dict[str, Any]:
    """Every run of the chapter (see the module docstring), grouped by row and sorted by seed."""
    main_seeds = seeds(cfg)
    workers = workers_for(cfg.device, cfg.workers)
    # stage 1: teachers and SSL initialisations
    stage1 = [("teacher", s, dict(kind="labeled", **teacher_kwargs(cfg, s))) for s in main_seeds]
    if cfg.ssl_steps:
        stage1 += [("ssl", s, dict(kind="ssl", pools=pools(cfg), seed=s, steps=cfg.ssl_steps, widths=tuple(cfg.widths),
                                   device=cfg.device)) for s in main_seeds]
    done1 = cached_runs("slade-run", train, [kw for *_, kw in stage1], workers)
    files = {(name, s): _weights(f"slade-{name}", kw, r) for (name, s, kw), r in zip(stage1, done1)}
    results = {(name, s): r for (name, s, _), r in zip(stage1, done1)}

    # stage 2: SSL teachers and the validation sweep (seed 0)
    stage2 = [("ssl teacher", s, dict(kind="labeled", **teacher_kwargs(cfg, s), init_file=files["ssl", s]))
              for s in main_seeds if cfg.ssl_steps]
    sweep_plan = [(knob, value) for knob, values in (("k", cfg.sweep_k), ("delta", cfg.sweep_delta),
                                                     ("lambda1", cfg.sweep_lambda1)) for value in values]
    stage2 += [(f"sweep {knob}", value, dict(kind="student", **student_kwargs(cfg, cfg.seed, files["teacher", cfg.seed],
                                                                              **{knob: value})))
               for knob, value in sweep_plan]
    for (name, s, _), r in zip(stage2, cached_runs("slade-run", train, [kw for *_, kw in stage2], workers)):
        results[name, s] = r
    sweep: dict[str, list[dict]] = {}
    for knob, value in sweep_plan:
        sweep.setdefault(knob, []).append(dict(results[f"sweep {knob}", value], **{knob: value}))
    defaults = dict(k=cfg.k, delta=cfg.delta, lambda1=cfg.lambda1)
    chosen = {**defaults, **_choose(sweep, defaults)}

    # stage 3: the controls, the students with the chosen knobs, and their ablations
    stage3 = [(row, s, dict(kind="student", **student_kwargs(cfg, s, files["teacher", s], pair_source=source, **chosen)))
              for row, source in STUDENTS.items() for s in main_seeds]
    stage3 += [("control", s, dict(kind="labeled", pools=pools(cfg), seed=s, steps=cfg.student_steps,
                                   widths=tuple(cfg.widths), eval_every=cfg.control_eval_every,
                                   init_file=files["teacher", s], device=cfg.device)) for s in main_seeds]
    if cfg.select_sim:
        stage3.append((SELECT_SIM, cfg.seed, dict(kind="student", **student_kwargs(
            cfg, cfg.seed, files["teacher", cfg.seed], select="sim", **chosen))))
    for fraction in cfg.novel_fractions:
        for row, source in ((SLADE, "basis"), (ALL_PAIRS, "all")):
            stage3 += [(f"{row} · novel {fraction:.0%}", s, dict(kind="student", **student_kwargs(
                cfg, s, files["teacher", s], pair_source=source, novel_fraction=fraction, **chosen)))
                for s in main_seeds]
    done3 = cached_runs("slade-run", train, [kw for *_, kw in stage3], workers)
    for (name, s, kw), r in zip(stage3, done3):
        results[name, s] = r
        if name in (SLADE, "control"):
            files[name, s] = _weights(f"slade-{name}", kw, r)

    # stage 4: a second round, and the control for two rounds of extra steps
    if cfg.rounds == 2:
        stage4 = [(ROUND_2, s, dict(kind="student", **student_kwargs(cfg, s, files[SLADE, s], **chosen)))
                  for s in main_seeds]
        stage4 += [(CONTROL_2, s, dict(kind="labeled", pools=pools(cfg), seed=s, steps=cfg.student_steps,
                                       widths=tuple(cfg.widths), init_file=files["control", s], device=cfg.device))
                   for s in main_seeds]
        for (name, s, _), r in zip(stage4, cached_runs("slade-run", train, [kw for *_, kw in stage4], workers)):
            results[name, s] = r
    return _group(cfg, results, sweep, chosen)


def _group(cfg: SladeConfig, results: dict, sweep: dict, chosen: dict) -> dict[str, Any]:
    """Rows of per-seed results; weights are kept only where the views and the explorer need them."""
    names = {"teacher": TEACHER, "ssl": SSL_ONLY, "ssl teacher": SSL_TEACHER, "control": CONTROL}
    rows: dict[str, list[dict]] = {}
    for (name, s), r in sorted(results.items(), key=lambda item: item[0][1]):
        if name.startswith("sweep "):
            continue
        keep = s == cfg.seed and name in ("teacher", SLADE)
        rows.setdefault(names.get(name, name), []).append({k: v for k, v in r.items() if keep or k != "state"})
        if name == "control":
            stopped = r["early_stopped"]
            rows.setdefault(CONTROL_EARLY, []).append(dict(seed=s, step=stopped["step"], test=stopped["test"],
                                                           validation=dict(recall={"1": stopped["validation_r1"]})))
    for entries in sweep.values():
        for entry in entries:
            entry.pop("state", None)
    return dict(config=dataclasses.asdict(cfg), rows=rows, sweep=sweep, chosen=chosen)


# --- reading the results ----------------------------------------------------------------------------

#: the order of rows in tables and bars
ROW_ORDER = (TEACHER, SSL_ONLY, SSL_TEACHER, CONTROL, CONTROL_EARLY, ALL_PAIRS, SLADE, COSINE, SELECT_SIM,
             ROUND_2, CONTROL_2)


def row_names(results: dict) -> list[str]:
    """The rows present, in ``ROW_ORDER`` and then the novel-fraction rows."""
    present = results["rows"]
    return [r for r in ROW_ORDER if r in present] + sorted(r for r in present if r not in ROW_ORDER)


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def recall_table(results: dict) -> list[dict]:
    """Per row: test Recall@{1,2,4,8} and NMI, mean ± std over seeds, and validation R@1."""
    table = []
    for row in row_names(results):
        entries = results["rows"][row]
        out = dict(row=row, seeds=len(entries))
        for k in runs.RECALL_KS:
            out[f"r{k}_mean"], out[f"r{k}_std"] = mean_std([e["test"]["recall"][str(k)] for e in entries])
        out["nmi_mean"], out["nmi_std"] = mean_std([e["test"].get("nmi", math.nan) for e in entries])
        out["val_r1_mean"], out["val_r1_std"] = mean_std([e["validation"]["recall"]["1"] for e in entries])
        table.append(out)
    return table


def pair_table(results: dict) -> list[dict]:
    """Per student row: mined-pair precision and recall against the hidden labels, pseudo-label NMI
    and purity, and the AUCs of basis similarity and embedding cosine (mean ± std over seeds)."""
    table = []
    for row in row_names(results):
        entries = [e for e in results["rows"][row] if "pair_precision" in e]
        if not entries:
            continue
        out = dict(row=row, seeds=len(entries))
        for name, get in (("pos_precision", lambda e: e["pair_precision"]["positive"]),
                          ("neg_precision", lambda e: e["pair_precision"]["negative"]),
                          ("pos_recall", lambda e: e["pair_recall"]["positive"]),
                          ("pseudo_nmi", lambda e: e["pseudo_quality"]["nmi"]),
                          ("pseudo_purity", lambda e: e["pseudo_quality"]["purity"]),
                          ("auc_basis", lambda e: e["auc"]["basis"]), ("auc_cosine", lambda e: e["auc"]["cosine"])):
            out[f"{name}_mean"], out[f"{name}_std"] = mean_std([get(e) for e in entries])
        out["pos_selected"] = float(np.mean([e["pair_counts"]["pos_selected"] for e in entries]))
        table.append(out)
    return table


def sweep_table(results: dict) -> list[dict]:
    """The validation sweep (seed 0): validation and test R@1 per knob value, and what was chosen."""
    return [dict(knob=knob, value=entry[knob], validation_r1=entry["validation"]["recall"]["1"],
                 test_r1=entry["test"]["recall"]["1"], chosen=entry[knob] == results["chosen"][knob])
            for knob, entries in results["sweep"].items() for entry in entries]


def separation(entry: dict) -> dict[str, float]:
    """From a student's similarity snapshots: μ⁺ − μ⁻ and σ⁺², σ⁻² when mining starts (the end of
    the warm-up) and at the end of training."""
    snapshots = {s["step"]: s for s in entry["snapshots"]}
    start, end = snapshots[entry["warmup"]], snapshots[max(snapshots)]
    out = {}
    for name, snap in (("start", start), ("end", end)):
        out[f"gap_{name}"] = snap["mu_same"] - snap["mu_different"]
        out[f"var_same_{name}"], out[f"var_different_{name}"] = snap["var_same"], snap["var_different"]
    return out


def novel_rows(results: dict) -> dict[float, tuple[str, str]]:
    """novel fraction → (SLADE row, all-pairs row) trained at it, the main fraction included."""
    out = {float(results["config"]["novel_fraction"]): (SLADE, ALL_PAIRS)}
    for fraction in results["config"]["novel_fractions"]:
        out[float(fraction)] = (f"{SLADE} · novel {fraction:.0%}", f"{ALL_PAIRS} · novel {fraction:.0%}")
    return {f: rows for f, rows in sorted(out.items()) if all(r in results["rows"] for r in rows)}


def config_of(results: dict) -> SladeConfig:
    """The config a results dict was run with."""
    return SladeConfig(**results["config"])


def first_seed(results: dict, row: str) -> dict | None:
    entries = results["rows"].get(row, [])
    return entries[0] if entries else None


from labkit.experiments.slade_claims import claims  # noqa: E402  (the claims read the tables above)

__all__ = ["SladeConfig", "BUDGETS", "from_budget", "run", "train", "recall_table", "pair_table", "sweep_table",
           "separation", "claims", "row_names", "first_seed", "novel_rows", "config_of", "pools", "teacher_kwargs",
           "student_kwargs", "TEACHER", "CONTROL", "CONTROL_EARLY", "SLADE",
           "ALL_PAIRS", "COSINE", "SSL_TEACHER", "SSL_ONLY", "ROUND_2", "CONTROL_2", "SELECT_SIM"]
