"""Chapter 06's claims: the spec's expected outcomes 1–6, judged by the shared rule of ``labkit.report``.

Every comparison pairs runs by training seed: a student and its control start from the same
teacher. Recall comparisons add the test queries as a second level (the two-level bootstrap over
seeds, then queries; both rows are scored on the same queries). Pair precision, the separation of
the similarity distributions and the AUCs are per run, so their interval is over seeds alone.
"""
from __future__ import annotations

import numpy as np

from labkit import report
from labkit.experiments.slade import (ALL_PAIRS, CONTROL, CONTROL_EARLY, COSINE, SLADE, SSL_ONLY, SSL_TEACHER,
                                      TEACHER, novel_rows, separation)
from labkit.report import Claim

__all__ = ["claims", "ASSERTED"]

#: asserted at the full budget: the two checks whose margins the pilot runs showed wide (precision
#: 0.77 vs 0.57, R@1 0.93 vs 0.77 at seed 0); every other claim is reported, not asserted
ASSERTED = ("full",)


def _by_seed(results: dict, row: str) -> dict[int, dict]:
    return {e["seed"]: e for e in results["rows"].get(row, [])}


def _paired_values(results: dict, method: str, control: str, get) -> tuple[list[int], np.ndarray, np.ndarray]:
    a, b = _by_seed(results, method), _by_seed(results, control)
    common = sorted(set(a) & set(b))
    return common, np.array([get(a[s]) for s in common], float), np.array([get(b[s]) for s in common], float)


def _recall_claim(results: dict, name: str, paper: str, method: str, control: str, asserted_at: tuple = ()) -> Claim:
    check = f"R@1({method}) − R@1({control}) > 0"
    a, b = _by_seed(results, method), _by_seed(results, control)
    common = sorted(set(a) & set(b))
    if not common:
        return Claim.not_measured(name, paper, check=check, detail=f"needs rows {method!r} and {control!r}")
    estimate = report.bootstrap_difference([a[s]["test"]["hits"] for s in common],
                                           [b[s]["test"]["hits"] for s in common], what="test queries")
    detail = (f"R@1 {method} {[round(a[s]['test']['recall']['1'], 3) for s in common]} vs {control} "
              f"{[round(b[s]['test']['recall']['1'], 3) for s in common]} (seeds {common})")
    return Claim.compare(name, paper, report.bounded(estimate, -1.0, 1.0), check=check, detail=detail,
                         asserted_at=asserted_at)


def _paired_claim(results: dict, name: str, paper: str, method: str, control: str, get, label: str, *,
                  direction: str = ">", asserted_at: tuple = ()) -> Claim:
    check = f"{label}({method}) − {label}({control}) {direction} 0"
    seeds, x, y = _paired_values(results, method, control, get)
    if not seeds:
        return Claim.not_measured(name, paper, check=check, detail=f"needs rows {method!r} and {control!r}")
    detail = f"{label} {method} {np.round(x, 3).tolist()} vs {control} {np.round(y, 3).tolist()} (seeds {seeds})"
    return Claim.compare(name, paper, report.paired_difference(x, y), direction=direction, check=check,
                         detail=detail, asserted_at=asserted_at)


def _separation_claims(results: dict) -> list[Claim]:
    entries = results["rows"].get(SLADE, [])
    paper = "Eq. 5 separates the Gaussians and tightens them"
    specs = (("2a. μ⁺ − μ⁻ grows during student training", "gap", ">"),
             ("2b. σ⁺² does not grow", "var_same", "<"), ("2c. σ⁻² does not grow", "var_different", "<"))
    if not entries:
        return [Claim.not_measured(name, paper, check=f"{key}(end) − {key}(start) {d} 0") for name, key, d in specs]
    values = [separation(e) for e in entries]
    out = []
    for name, key, direction in specs:
        change = np.array([v[f"{key}_end"] - v[f"{key}_start"] for v in values])
        detail = (f"basis similarity of {SLADE}, same vs different pseudo labels: {key} "
                  f"{[round(v[f'{key}_start'], 3) for v in values]} at the end of the warm-up → "
                  f"{[round(v[f'{key}_end'], 3) for v in values]} at the end")
        out.append(Claim.compare(name, paper, report.seed_interval(change, what="t over"), direction=direction,
                                 check=f"{key}(end) − {key}(start) {direction} 0", detail=detail))
    return out


def _novel_gap_claim(results: dict) -> Claim:
    name, paper = "4b. the selection gain grows with the novel fraction", "noisier clusters, larger gain (spec)"
    fractions = novel_rows(results)
    check = "gain(most novel) − gain(least novel) > 0, gain = R@1(SLADE) − R@1(all pairs)"
    if len(fractions) < 2:
        return Claim.not_measured(name, paper, check=check, detail="needs SLADE and all-pairs rows at two novel fractions")
    low, high = min(fractions), max(fractions)

    def gains(fraction: float) -> dict[int, float]:
        a, b = (_by_seed(results, row) for row in fractions[fraction])
        return {s: a[s]["test"]["recall"]["1"] - b[s]["test"]["recall"]["1"] for s in sorted(set(a) & set(b))}

    g_low, g_high = gains(low), gains(high)
    seeds = sorted(set(g_low) & set(g_high))
    x, y = np.array([g_high[s] for s in seeds]), np.array([g_low[s] for s in seeds])
    detail = (f"gain at novel {high:.0%}: {np.round(x, 3).tolist()}, at {low:.0%}: {np.round(y, 3).tolist()} "
              f"(seeds {seeds})")
    return Claim.compare(name, paper, report.paired_difference(x, y), check=check, detail=detail)


def claims(results: dict) -> list[Claim]:
    precision = lambda e: e["pair_precision"]["positive"]  # noqa: E731
    out = [_paired_claim(results, "1. selection purifies the positive pairs", "basis selection keeps cleaner pairs",
                         SLADE, ALL_PAIRS, precision, "precision", asserted_at=ASSERTED)]
    out += _separation_claims(results)
    out += [
        _recall_claim(results, "3a. SLADE beats the compute-matched control", "student > teacher (Tables 1–2)",
                      SLADE, CONTROL, asserted_at=ASSERTED),
        _recall_claim(results, "3b. SLADE beats the early-stopped control", "student > teacher (Tables 1–2)",
                      SLADE, CONTROL_EARLY),
        _recall_claim(results, "3c. SLADE beats SSL alone (no labels)", "ours: does the gain need the labels?",
                      SLADE, SSL_ONLY),
        _recall_claim(results, "4a. SLADE beats the student on all pseudo pairs", "basis selection > no selection",
                      SLADE, ALL_PAIRS),
        _novel_gap_claim(results),
        _auc_claim(results),
        _recall_claim(results, "5b. basis selection beats cosine selection", "basis > embedding cosine",
                      SLADE, COSINE),
        _recall_claim(results, "6. SSL initialisation helps the teacher", "SSL init helps (ablation)",
                      SSL_TEACHER, TEACHER),
    ]
    return out


def _auc_claim(results: dict) -> Claim:
    name, paper = "5a. basis similarity separates true pairs better than cosine", "the basis 'better measures pairwise similarity'"
    check = "AUC(basis) − AUC(embedding cosine) > 0 on unlabeled pairs, SLADE student"
    entries = results["rows"].get(SLADE, [])
    if not entries:
        return Claim.not_measured(name, paper, check=check)
    x = np.array([e["auc"]["basis"] for e in entries])
    y = np.array([e["auc"]["cosine"] for e in entries])
    detail = f"AUC basis {np.round(x, 4).tolist()} vs cosine {np.round(y, 4).tolist()} (seeds {[e['seed'] for e in entries]})"
    return Claim.compare(name, paper, report.paired_difference(x, y), check=check, detail=detail)
