"""Chapter 09 — hierarchical contrastive motion learning: the config, the runs and the tables.

``run(cfg)`` trains every row (``train_row``), each cached and spread over the cores. A row is one
network (``runs.KINDS``) trained with ``sup_steps`` supervised steps on the labeled clips — the
same number in every row, so SSL against no SSL is compute-fair on the labeled side — after
``ssl_steps`` of Stage A for the rows with self-supervision. Each row is measured:

- test accuracy overall and on the out-and-back pair;
- for motion rows, per-level linear probes at random init and after Stage A, the per-level
  contrastive top-1 after Stage A, and the R² of a linear map from each level to the true
  displacement;
- parameters and MACs of each pathway.

The main rows (appearance only, RGB difference, motion with CE only, motion with SSL) run ``seeds``
seeds; the label-budget sweep runs CE-only and SSL at each budget for every seed; the ablations
(one level, top-only fusion, L2 regression, no stop-gradient, spatial negatives, the oracle) run
the first seed, except the two that claims compare (top-level fusion, the oracle), which run every
seed.

With ``device="cuda"`` every row trains on the GPU, one after another in this process; what a row
returns (weights, histories, measurements) is on the CPU either way.

``claims(results)`` (``contrastive_motion_claims``) judges the spec's outcomes 1–7.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from labkit.cache import cached_runs
from labkit.config import check_device, check_positive_int, workers_for
from labkit.config import from_budget as _from_budget
from labkit.experiments import contrastive_motion_runs as runs
from labkit.metrics import count_cost

TITLE = "Hierarchical Contrastive Motion Learning for Video Action Recognition"
CHAPTER = "09-contrastive-motion"

APPEARANCE, RGB_DIFF, CE_ONLY, SSL = "appearance only", "RGB difference", "motion, CE only", "motion + SSL"
#: row name -> ``train_row`` overrides
MAIN_ROWS: dict[str, dict[str, Any]] = {
    APPEARANCE: dict(kind="appearance"), RGB_DIFF: dict(kind="rgb-difference"),
    CE_ONLY: dict(kind="motion"), SSL: dict(kind="motion", ssl=True),
}
ABLATIONS: dict[str, dict[str, Any]] = {
    "SSL, one level": dict(kind="motion", ssl=True, levels=1),
    "SSL, top-level fusion only": dict(kind="motion", ssl=True, fusion="top"),
    "SSL, L2 regression": dict(kind="motion", ssl=True, loss="l2"),
    "SSL, no stop-gradient": dict(kind="motion", ssl=True, stop_gradient=False),
    "SSL, spatial negatives only": dict(kind="motion", ssl=True, negatives="spatial"),
    "oracle displacement input": dict(kind="oracle"),
}
#: ablations that claims compare with the SSL row, so they run every seed (the others the first)
SEEDED_ABLATIONS = ("SSL, top-level fusion only", "oracle displacement input")


@dataclasses.dataclass
class MotionConfig:
    """Defaults are the quick budget; ``BUDGETS`` lists what the other budgets change."""

    budget: str = "quick"
    seed: int = 0
    workers: int = 0
    device: str = "cpu"  # "cuda" on a GPU machine (the runs then go in this process)
    seeds: int = 1
    widths: tuple = (8, 16, 32)
    frames: int = 6
    size: int = 24
    unlabeled: int = 600
    labeled_per_class: int = 10
    test_per_class: int = 50
    ssl_steps: int = 300
    sup_steps: int = 300
    batch_size: int = 8
    num_anchors: int = 256
    temperature: float = 0.1
    label_budgets: tuple = ()  # other labeled budgets per class, for CE only and SSL
    ablations: tuple = ()


BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(unlabeled=24, labeled_per_class=2, test_per_class=2, ssl_steps=4, sup_steps=4, size=16, frames=5,
                  widths=(4, 8, 8), num_anchors=16, label_budgets=(3,), ablations=("SSL, one level",)),
    "quick": {},
    "full": dict(seeds=3, unlabeled=1600, ssl_steps=800, sup_steps=800, label_budgets=(40, 100),
                 ablations=tuple(ABLATIONS)),
}


def from_budget(budget: str = "quick", **overrides: Any) -> MotionConfig:
    cfg = _from_budget(MotionConfig, budget, BUDGETS, **overrides)
    check_device(cfg.device)
    for name in ("seeds", "frames", "size", "unlabeled", "labeled_per_class", "test_per_class", "ssl_steps",
                 "sup_steps", "batch_size", "num_anchors"):
        check_positive_int(name, getattr(cfg, name))
    for value in cfg.label_budgets:
        check_positive_int("label_budgets entry", value)
    unknown = [row for row in cfg.ablations if row not in ABLATIONS]
    if unknown:
        raise ValueError(f"ablations entry {unknown[0]!r} is not valid; choose from {', '.join(map(repr, ABLATIONS))}")
    return cfg


def pool_kwargs(cfg: MotionConfig, labeled_per_class: int | None = None) -> dict:
    return dict(unlabeled=cfg.unlabeled, labeled_per_class=labeled_per_class or cfg.labeled_per_class,
                test_per_class=cfg.test_per_class, frames=cfg.frames, size=cfg.size, seed=cfg.seed)


def pathway_cost(net, frames: int, size: int) -> dict[str, dict[str, int]]:
    """Parameters and per-clip MACs of the appearance pathway (stem, stages, classifier) and of the
    motion pathway (encoders and fusion), by forward hooks (``labkit.metrics.count_cost``)."""
    shape = (1, frames, 1, size, size)
    if net.motion_input == "flow":
        return {}
    layers = count_cost(net, shape)["per_layer"]
    out = {"appearance": dict(params=0, macs=0), "motion": dict(params=0, macs=0)}
    for layer in layers:
        pathway = "motion" if layer["name"].startswith(("encoders", "fuse")) else "appearance"
        if layer["name"].startswith(("predictors", "targets")):
            continue
        out[pathway]["params"] += layer["params"]
        out[pathway]["macs"] += layer["macs"]
    return out


def train_row(kind: str, pools: dict, seed: int, ssl: bool = False, levels: int = 2, fusion: str = "all",
              loss: str = "nce", negatives: str = "dense", stop_gradient: bool = True, widths: tuple = (8, 16, 32),
              ssl_steps: int = 300, sup_steps: int = 300, batch_size: int = 8, num_anchors: int = 256,
              temperature: float = 0.1, device: str = "cpu") -> dict:
    """One row on ``device``: build, measure at init, Stage A (``ssl``), measure, Stage B, measure.
    The clips stay on the CPU (each batch is moved); the returned weights are CPU tensors."""
    data = runs.make_pools(**pools)
    torch.manual_seed(seed)
    net = runs.build_net(kind, widths, levels, fusion).to(device)  # initialised on the CPU, then moved
    loss_kwargs = dict(num_anchors=num_anchors, temperature=temperature, loss=loss, negatives=negatives,
                       stop_gradient=stop_gradient)
    out: dict[str, Any] = dict(kind=kind, seed=seed, ssl=ssl, levels=net.levels,
                               cost=pathway_cost(net, pools["frames"], pools["size"]))
    motion = net.levels and kind != "oracle"
    if motion:
        out["probe_init"] = runs.probe_accuracy(net, data.labeled, data.test)
    if ssl:
        out["stage_a"] = runs.stage_a(net, data.unlabeled, ssl_steps, seed, batch_size, **loss_kwargs)
        out["probe_ssl"] = runs.probe_accuracy(net, data.labeled, data.test)
        out["top1"] = runs.contrastive_top1(net, data.test, num_anchors, seed, temperature=temperature,
                                            negatives=negatives)
    if motion:
        out["r2"] = {f"m{level}": runs.displacement_r2(net, data.labeled, data.test, level)
                     for level in range(1, net.levels + 1)}
    out["stage_b"] = runs.stage_b(net, data.labeled, sup_steps, seed, batch_size)
    out["test"] = runs.accuracy(net, data.test)
    out["probe_final"] = runs.probe_accuracy(net, data.labeled, data.test)
    out["net"] = dict(kind=kind, widths=tuple(widths), levels=levels, fusion=fusion)
    out["state"] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return out


def _row_kwargs(cfg: MotionConfig, overrides: dict, seed: int, labeled_per_class: int | None = None) -> dict:
    return dict(pools=pool_kwargs(cfg, labeled_per_class), seed=seed, widths=tuple(cfg.widths),
                ssl_steps=cfg.ssl_steps, sup_steps=cfg.sup_steps, batch_size=cfg.batch_size,
                num_anchors=cfg.num_anchors, temperature=cfg.temperature, device=cfg.device, **overrides)


def plan(cfg: MotionConfig) -> list[tuple[str, int, dict]]:
    """(row, labeled per class, ``train_row`` kwargs) for every run."""
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    out = [(row, cfg.labeled_per_class, _row_kwargs(cfg, overrides, s)) for row, overrides in MAIN_ROWS.items()
           for s in seeds]
    for budget in cfg.label_budgets:
        for row in (CE_ONLY, SSL):
            out += [(row, budget, _row_kwargs(cfg, MAIN_ROWS[row], s, budget)) for s in seeds]
    for row in cfg.ablations:
        out += [(row, cfg.labeled_per_class, _row_kwargs(cfg, ABLATIONS[row], s))
                for s in (seeds if row in SEEDED_ABLATIONS else seeds[:1])]
    return out


def run(cfg: MotionConfig) -> dict[str, Any]:
    """Every run, grouped as ``rows[row][labeled per class]`` → list over seeds."""
    steps = plan(cfg)
    done = cached_runs("motion-run", train_row, [kw for *_, kw in steps], workers_for(cfg.device, cfg.workers))
    rows: dict[str, dict[int, list]] = {}
    for (row, budget, _), result in zip(steps, done):
        rows.setdefault(row, {}).setdefault(budget, []).append(result)
    return dict(config=dataclasses.asdict(cfg), rows=rows)


# --- reading the results ------------------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float, float]:
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def entries(results: dict, row: str, budget: int | None = None) -> list[dict]:
    """The runs of ``row`` at ``budget`` labels per class (default: the config's)."""
    return results["rows"].get(row, {}).get(budget or results["config"]["labeled_per_class"], [])


def accuracy_table(results: dict) -> list[dict]:
    """Per row at the main budget: test accuracy overall and on the out-and-back pair (mean ± std)."""
    table = []
    for row in [*MAIN_ROWS, *ABLATIONS]:
        found = entries(results, row)
        if not found:
            continue
        out = dict(row=row, seeds=len(found))
        for key in ("overall", "out_and_back"):
            out[f"{key}_mean"], out[f"{key}_std"] = mean_std([e["test"][key] for e in found])
        table.append(out)
    return table


def probe_table(results: dict) -> list[dict]:
    """Per motion row and level: probe accuracy at init, after Stage A, after training; top-1; R²."""
    table = []
    for row in [*MAIN_ROWS, *ABLATIONS]:
        found = [e for e in entries(results, row) if "probe_init" in e]
        if not found:
            continue
        for level in ["z0", *[f"m{l}" for l in range(1, found[0]["levels"] + 1)]]:
            out = dict(row=row, feature=level, seeds=len(found))
            for stage in ("probe_init", "probe_ssl", "probe_final"):
                out[f"{stage}_mean"], out[f"{stage}_std"] = mean_std([e[stage][level] for e in found if stage in e])
            if level != "z0":
                out["top1_mean"], out["top1_std"] = mean_std([e["top1"][f"level {level[1:]}"] for e in found
                                                              if "top1" in e])
                out["r2_mean"], out["r2_std"] = mean_std([e["r2"][level] for e in found])
            table.append(out)
    return table


def budget_table(results: dict) -> list[dict]:
    """Accuracy against the labeled budget for CE only and SSL (and appearance at the main budget)."""
    table = []
    for row in (APPEARANCE, CE_ONLY, SSL):
        for budget in sorted(results["rows"].get(row, {})):
            found = entries(results, row, budget)
            mean, std = mean_std([e["test"]["overall"] for e in found])
            table.append(dict(row=row, labeled_per_class=budget, seeds=len(found), accuracy_mean=mean,
                              accuracy_std=std))
    return table


def trained_net(results: dict, row: str = SSL, budget: int | None = None, seed_index: int = 0):
    """The trained network of one run (eval mode), rebuilt from its stored weights."""
    found = entries(results, row, budget)
    if not found:
        raise ValueError(f"no run of row {row!r} at this budget; rows: {', '.join(results['rows'])}")
    entry = found[seed_index]
    net = runs.build_net(**entry["net"])
    net.load_state_dict(entry["state"])
    return net.eval()


def chapter_pools(results: dict):
    """The pools the chapter trained on (the test clips are the same for every labeled budget)."""
    cfg = results["config"]
    return runs.make_pools(**dict(unlabeled=cfg["unlabeled"], labeled_per_class=cfg["labeled_per_class"],
                                  test_per_class=cfg["test_per_class"], frames=cfg["frames"], size=cfg["size"],
                                  seed=cfg["seed"]))


def cost_table(results: dict) -> dict[str, dict[str, int]]:
    """The motion row's pathway costs (the same for every seed)."""
    found = entries(results, SSL) or entries(results, CE_ONLY)
    return found[0]["cost"] if found else {}


from labkit.experiments.contrastive_motion_claims import claims  # noqa: E402  (the claims read the tables above)

__all__ = ["claims", "SEEDED_ABLATIONS", "MotionConfig", "BUDGETS", "from_budget", "plan", "run", "train_row", "pathway_cost", "accuracy_table",
           "probe_table", "budget_table", "cost_table", "trained_net", "chapter_pools", "MAIN_ROWS", "ABLATIONS", "APPEARANCE", "RGB_DIFF",
           "CE_ONLY", "SSL"]
