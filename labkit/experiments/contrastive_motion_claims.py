"""Chapter 09's claims: the spec's expected outcomes 1–7, judged by the shared rule of ``labkit.report``.

Accuracy comparisons pair runs by training seed and add the test clips as a second level (the
two-level bootstrap; every row is scored on the same test clips). Probe accuracies, contrastive
top-1 and R² are one number per run, so their interval is a t interval over seeds. Outcome 7 (the
motion pathway is lightweight) is a property of the architecture, not of training: it is reported,
and a unit test checks the count.
"""
from __future__ import annotations

import numpy as np

from labkit import report
from labkit.data.moving_shapes import MOTIONS
from labkit.experiments.contrastive_motion import (APPEARANCE, CE_ONLY, RGB_DIFF, SSL, cost_table, entries)
from labkit.report import Claim

__all__ = ["claims", "CHANCE", "APPEARANCE_MARGIN", "TOP1_FACTOR", "ASSERTED"]

CHANCE = 1 / len(MOTIONS)
APPEARANCE_MARGIN = 0.10  # outcome 1: appearance only within chance + 10 points
TOP1_FACTOR = 10  # outcome 3: "far above" 1/|Ω|, read as ten times chance (ours)
ASSERTED = ("full",)
FUSION_TOP, ORACLE = "SSL, top-level fusion only", "oracle displacement input"


def _by_seed(results: dict, row: str, budget: int | None = None) -> dict[int, dict]:
    return {e["seed"]: e for e in entries(results, row, budget)}


def _accuracy(results: dict, row: str, name: str, paper: str, *, threshold: float, direction: str,
              asserted_at: tuple = ()) -> Claim:
    found = entries(results, row)
    check = f"accuracy({row}) {direction} {threshold:.3f}"
    if not found:
        return Claim.not_measured(name, paper, check=check)
    estimate = report.bootstrap_difference([e["test"]["correct"] for e in found], what="test clips")
    detail = f"{row}: {[round(e['test']['overall'], 3) for e in found]} (seeds {[e['seed'] for e in found]})"
    return Claim.compare(name, paper, report.bounded(estimate, 0.0, 1.0), threshold=threshold, direction=direction,
                         check=check, detail=detail, asserted_at=asserted_at)


def _accuracy_gain(results: dict, name: str, paper: str, method: str, control: str, budget: int | None = None,
                   key: str = "correct") -> Claim:
    a, b = _by_seed(results, method, budget), _by_seed(results, control, budget)
    seeds = sorted(set(a) & set(b))
    check = f"accuracy({method}) − accuracy({control}) > 0"
    if not seeds:
        return Claim.not_measured(name, paper, check=check, detail=f"needs rows {method!r} and {control!r}")
    estimate = report.bootstrap_difference([a[s]["test"][key] for s in seeds], [b[s]["test"][key] for s in seeds],
                                           what="test clips")
    detail = (f"{method} {[round(a[s]['test']['overall'], 3) for s in seeds]} vs {control} "
              f"{[round(b[s]['test']['overall'], 3) for s in seeds]} (seeds {seeds})")
    return Claim.compare(name, paper, report.bounded(estimate, -1.0, 1.0), check=check, detail=detail)


def _seed_values(name: str, paper: str, values: list[float], *, check: str, threshold: float = 0.0,
                 direction: str = ">", detail: str = "") -> Claim:
    if not values:
        return Claim.not_measured(name, paper, check=check)
    return Claim.compare(name, paper, report.seed_interval(values), threshold=threshold, direction=direction,
                         check=check, detail=detail or f"per seed {np.round(values, 3).tolist()}")


def _budget_gap_claim(results: dict) -> Claim:
    name, paper = "2b. the SSL gain shrinks with more labels", "spec: SSL matters most when labels are scarce"
    budgets = sorted(set(results["rows"].get(SSL, {})) & set(results["rows"].get(CE_ONLY, {})))
    check = "gain(fewest labels) − gain(most labels) > 0, gain = accuracy(SSL) − accuracy(CE only)"
    if len(budgets) < 2:
        return Claim.not_measured(name, paper, check=check, detail="needs two labeled budgets")

    def gains(budget: int) -> dict[int, float]:
        a, b = _by_seed(results, SSL, budget), _by_seed(results, CE_ONLY, budget)
        return {s: a[s]["test"]["overall"] - b[s]["test"]["overall"] for s in set(a) & set(b)}

    low, high = gains(budgets[0]), gains(budgets[-1])
    seeds = sorted(set(low) & set(high))
    x, y = np.array([low[s] for s in seeds]), np.array([high[s] for s in seeds])
    detail = f"gain at {budgets[0]} labels/class {np.round(x, 3).tolist()}, at {budgets[-1]}: {np.round(y, 3).tolist()}"
    return Claim.compare(name, paper, report.paired_difference(x, y), check=check, detail=detail)


def _ssl_entries(results: dict) -> list[dict]:
    return [e for e in entries(results, SSL) if "probe_ssl" in e]


def claims(results: dict) -> list[Claim]:
    cfg = results["config"]
    ssl = _ssl_entries(results)
    motion_rows = [r for r in (CE_ONLY, SSL, RGB_DIFF) if entries(results, r)]
    weakest = min(motion_rows, key=lambda r: np.mean([e["test"]["overall"] for e in entries(results, r)]),
                  default=CE_ONLY)
    out = [
        _accuracy(results, APPEARANCE, "1a. appearance alone is near chance", "by design (spec)",
                  threshold=CHANCE + APPEARANCE_MARGIN, direction="<", asserted_at=ASSERTED),
        _accuracy(results, weakest, "1b. every motion row beats 2× chance (judged on the weakest)", "by design (spec)",
                  threshold=2 * CHANCE, direction=">"),
        _accuracy_gain(results, "2a. SSL helps when labels are scarce", "SSL gains (abstract)", SSL, CE_ONLY),
        _budget_gap_claim(results),
    ]
    chance = 1 / cfg["num_anchors"]
    for level in (1, 2):
        values = [e["top1"][f"level {level}"] for e in ssl if f"level {level}" in e["top1"]]
        out.append(_seed_values(f"3{'ab'[level - 1]}. level-{level} contrastive top-1 far above chance",
                                "the contrastive task is learnable", values,
                                check=f"top-1 > {TOP1_FACTOR} × 1/|Ω| = {TOP1_FACTOR * chance:.3f}",
                                threshold=TOP1_FACTOR * chance))
    out.append(_seed_values("4a. level 2 probes at least as well as level 1 after SSL",
                            "higher levels are more semantic", [e["probe_ssl"]["m2"] - e["probe_ssl"]["m1"] for e in ssl
                                                                if "m2" in e["probe_ssl"]],
                            check="probe(m2) − probe(m1) > 0"))
    for level in ("m1", "m2"):
        out.append(_seed_values(f"4{'bc'[int(level[1]) - 1]}. SSL lifts the {level} probe above random init",
                                "motion learned without labels",
                                [e["probe_ssl"][level] - e["probe_init"][level] for e in ssl if level in e["probe_ssl"]],
                                check=f"probe({level}, after SSL) − probe({level}, random init) > 0"))
    out.append(_seed_values("5. level 1 is the more flow-like", "low-level movement at level 1",
                            [e["r2"]["m1"] - e["r2"]["m2"] for e in ssl if "m2" in e["r2"]],
                            check="R²(m1 → displacement) − R²(m2 → displacement) > 0"))
    out.append(_accuracy_gain(results, "6a. fusion at every level beats top-level only", "multi-level fusion",
                              SSL, FUSION_TOP))
    out.append(_accuracy_gain(results, "6b. the oracle's true displacement bounds the RGB models", "an upper bound",
                              ORACLE, SSL))
    cost = cost_table(results)
    if cost:
        ratio = cost["motion"]["macs"] / cost["appearance"]["macs"]
        out.append(Claim.reported("7. the motion pathway is lightweight", "lightweight motion module",
                                  f"motion / appearance MACs = {ratio:.2f}",
                                  check="MACs(motion) / MACs(appearance) < 1: a fixed property of the widths, no noise",
                                  detail=f"motion {cost['motion']}, appearance {cost['appearance']}"))
    return out
