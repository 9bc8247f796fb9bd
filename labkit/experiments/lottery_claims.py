"""Chapter 05's claims: the spec's E1–E9 judged by ``labkit.report`` over the training seeds.

Split from ``labkit.experiments.lottery`` (which re-exports ``claims``) to keep each file readable.
"""
from __future__ import annotations

from typing import Any

from labkit.experiments.lottery import (_ap, _find, bucket_changes, class_changes, main_ticket,
                                        seed_results, ticket_rows)
from labkit.report import Claim, Estimate, paired_difference, seed_interval

# --- claims ----------------------------------------------------------------------------------
# Every claim is a statistic per training seed (a difference paired within the seed, where a seed's
# ticket and dense run share scenes and initialisation), judged by ``labkit.report``'s interval
# over the seeds that trained it. Secondary analyses run on the first seed only: one value, no
# interval, inconclusive by the rule.

def _per_seed(results: dict, stat) -> list[tuple[int, Any]]:
    """(seed, value) for every seed where ``stat(seed_results)`` is not None."""
    out = [(r["config"]["seed"], stat(r)) for r in seed_results(results)]
    return [(seed, value) for seed, value in out if value is not None]


def _values_text(values: list[tuple[int, Any]]) -> str:
    return "per seed: " + ", ".join(f"{seed}: {v:+.3g}" if isinstance(v, float) else f"{seed}: {v}"
                                    for seed, v in values)


def _judge(name: str, paper: str, estimate: Estimate | None, *, threshold: float, direction: str, check: str,
           detail: str) -> Claim:
    if estimate is None:
        return Claim.not_measured(name, paper, check=check, detail=detail)
    return Claim.compare(name, paper, estimate, threshold=threshold, direction=direction, check=check, detail=detail)


def _difference_claim(name, paper, results, method, control, *, threshold, direction, check, detail="") -> Claim:
    """``method(seed) − control(seed)`` paired by seed (either None: that seed did not train it)."""
    pairs = _per_seed(results, lambda r: (method(r), control(r)) if None not in (method(r), control(r)) else None)
    estimate = paired_difference([m for _, (m, _) in pairs], [c for _, (_, c) in pairs]) if pairs else None
    values = [(seed, m - c) for seed, (m, c) in pairs]
    return _judge(name, paper, estimate, threshold=threshold, direction=direction, check=check,
                  detail=" ".join(x for x in (detail, _values_text(values)) if x))


def _seed_claim(name, paper, results, stat, *, threshold, direction, check, detail="") -> Claim:
    """The mean over seeds of ``stat(seed)`` with a t interval."""
    values = _per_seed(results, stat)
    estimate = seed_interval([v for _, v in values]) if values else None
    return _judge(name, paper, estimate, threshold=threshold, direction=direction, check=check,
                  detail=" ".join(x for x in (detail, _values_text(values)) if x))


def claims(results: dict) -> list[Claim]:
    """E1–E9 of the spec, none asserted: the spec expects some not to reproduce at this scale."""
    cfg = results["config"]
    control = cfg["control_sparsity"]
    dense = lambda r: _ap(r["dense"])  # noqa: E731
    ticket = lambda s: (lambda r: _ap(main_ticket(r, s)))  # noqa: E731
    out = []
    if 0.8 in cfg["sparsities"]:
        out.append(_difference_claim("E1a. ticket at 80 % keeps dense AP", "tickets up to ~80 % (Fig. 1/3)", results,
                                     ticket(0.8), dense, threshold=-1.5, direction=">",
                                     check="AP(ticket 80 %) − AP(dense) > −1.5 points"))
    out.append(_where_it_breaks(results))
    if 0.95 in cfg["sparsities"]:
        out.append(_difference_claim("E1c. ticket at 95 % loses ≥ 3 AP points", "collapse past 80 %", results,
                                     ticket(0.95), dense, threshold=-3.0, direction="<",
                                     check="AP(ticket 95 %) − AP(dense) < −3 points"))
    keep = round(1 - control, 6)
    for section, label, short in (("random_reinit", "the same mask, heads re-drawn", "heads re-drawn"),
                                  ("random_mask", "a random mask", "random mask")):
        out.append(_difference_claim(f"E2. ticket beats {label}", "ticket > controls by ≥ 2 AP (LTH)", results,
                                     ticket(control), lambda r, section=section: _ap(_find(r, section, keep)),
                                     threshold=2.0, direction=">", check=f"AP(ticket) − AP({short}) > 2 points",
                                     detail=f"at {control:.0%} prunable sparsity."))
    out += _transfer_claims(results) + _layerwise_claims(results)
    out.append(_difference_claim("E5. one-shot ≥ iterative", "one-shot beats iterative (Fig. 2d; noisy)", results,
                                 ticket(control), lambda r: _ap(_find(r, "iterative", keep)), threshold=0.0,
                                 direction=">", check="AP(one-shot) − AP(iterative) > 0",
                                 detail=f"{cfg['iterative_rounds'] - 1} pruning rounds, same final sparsity."))
    out += _bucket_claims(results) + _rewind_claims(results)
    out.append(_seed_claim("E8. early-bird mask IoU at 50 % of training", "IoU ≈ 0.96 (Fig. 2f)", results,
                           lambda r: _early_bird_iou(r, keep, 0.5), threshold=0.9, direction=">",
                           check="IoU(mask at 50 %, final mask) > 0.9", detail=f"at {control:.0%} sparsity."))
    return out + _class_claims(results)


def _where_it_breaks(results: dict) -> Claim:
    rows = [r for r in ticket_rows(results) if r["method"] == "global"]
    dense = ticket_rows(results)[0]["AP"]
    kept = [r["prunable_sparsity"] for r in rows if dense - r["AP"] <= 1.5]
    return Claim.reported("E1b. where the ticket breaks", "past ~80 %, collapses faster for R18",
                          f"within 1.5 points up to {max(kept):.0%}" if kept else "below the lowest level",
                          check="observation: the largest sparsity whose mean AP is within 1.5 points of dense",
                          detail=f"dense {dense:.2f}; " + ", ".join(f"{r['prunable_sparsity']:.0%}: {r['AP']:.2f} "
                                                                   f"({r['num_seeds']} seed(s))" for r in rows))


def _early_bird_iou(r: dict, keep: float, fraction: float) -> float | None:
    steps = r["dense"]["snapshot_steps"]
    at = [k for k, step in enumerate(steps) if abs(step / r["config"]["steps"] - fraction) < 0.02]
    ious = r["dense"]["early_bird"].get(str(keep))
    return float(ious[at[0]]) if at and ious else None


def _transfer_claims(results: dict) -> list[Claim]:
    transfers = results["tickets"].get("transfer", [])
    if not transfers:
        return []
    transfer = max(transfers, key=lambda r: r["backbone_sparsity"])
    level, net = transfer["backbone_sparsity"], transfer["sparsity"]["network"]
    out = [Claim.reported("E3a. transfer ticket: network sparsity", "28–32 % net at 80–90 % backbone (Table 1)",
                          f"{net:.1%}", check="observation (bookkeeping: only the backbone is pruned)",
                          detail=f"{level:.0%} of the backbone pruned; the backbone holds "
                                 f"{results.get('module_shares', {}).get('base', float('nan')):.1%} of the parameters")]
    # matched sparsity: the least sparse direct ticket at least as sparse as the transfer one
    levels = [s for s in sorted(results["config"]["sparsities"])
              if main_ticket(results, s) and main_ticket(results, s)["sparsity"]["network"] >= net]
    if levels:
        out.append(_difference_claim(
            "E3b. transfer ticket has lower AP than a sparser direct ticket", "COCO loses 7–8 AP (Table 1)", results,
            lambda r: _ap(main_ticket(r, levels[0])),
            lambda r: _ap(next((t for t in r["tickets"].get("transfer", []) if t["backbone_sparsity"] == level), None)),
            threshold=0.0, direction=">", check="AP(direct) − AP(transfer) > 0",
            detail=f"direct at {main_ticket(results, levels[0])['sparsity']['network']:.1%} network sparsity vs "
                   f"transfer at {net:.1%}."))
    return out


def _layerwise_gap(r: dict, sparsity: float) -> float | None:
    global_, layerwise = _ap(main_ticket(r, sparsity)), _ap(_find(r, "layerwise", round(1 - sparsity, 6)))
    return None if global_ is None or layerwise is None else global_ - layerwise


def _layerwise_claims(results: dict) -> list[Claim]:
    levels = sorted(s for s in results["config"]["layerwise_sparsities"]
                    if s >= 0.8 and _layerwise_gap(results, s) is not None)
    out = [_seed_claim(f"E4a. global ≥ layer-wise at {s:.0%}", "layer-wise worse above 60 % (Fig. 2e)", results,
                       lambda r, s=s: _layerwise_gap(r, s), threshold=0.0, direction=">",
                       check="AP(global) − AP(layer-wise) > 0") for s in levels]
    if len(levels) >= 2:
        low, high = levels[0], levels[-1]
        widen = lambda r: (None if None in (_layerwise_gap(r, low), _layerwise_gap(r, high))  # noqa: E731
                           else _layerwise_gap(r, high) - _layerwise_gap(r, low))
        out.append(_seed_claim("E4b. the gap widens with sparsity", "gap widens (Fig. 2e)", results, widen,
                               threshold=0.0, direction=">", check=f"gap at {high:.0%} − gap at {low:.0%} > 0"))
    control = results["config"]["control_sparsity"]
    out.append(_seed_claim(
        "E4c. global pruning spares lower layers, beyond the initial scales", "Fig. 2c", results,
        lambda r: (r["depth_rho"]["final"] - r["depth_rho"]["initial"]) if "depth_rho" in r else None,
        threshold=0.0, direction=">", check="ρ(depth, pruned | final) − ρ(same | initial weights) > 0",
        detail=f"Spearman ρ over the prunable tensors at {control:.0%}; the control computes the same global "
               f"mask on the weights training started from (final ρ {results.get('depth_rho', {}).get('final', 0):+.2f}, "
               f"initial {results.get('depth_rho', {}).get('initial', 0):+.2f} for the first seed)."))
    return out


def _bucket_gap(r: dict, control: float) -> float | None:
    rows = {row["bucket"]: row for row in bucket_changes(r) if abs(row["sparsity"] - control) < 1e-9}
    return rows["small"]["change"] - rows["large"]["change"] if rows else None


def _bucket_claims(results: dict) -> list[Claim]:
    control = results["config"]["control_sparsity"]
    rows = {row["bucket"]: row for row in bucket_changes(results) if abs(row["sparsity"] - control) < 1e-9}
    detail = (f"mean relative change small {rows['small']['change']:+.1%}, large {rows['large']['change']:+.1%}; "
              f"dense AP_small {rows['small']['dense_AP']:.2f} points (undefined where it is 0)." if rows else "")
    return [_seed_claim("E6. small objects lose more than large", "small −17 % at 90 % (Fig. 4)", results,
                        lambda r: _bucket_gap(r, control), threshold=0.0, direction="<",
                        check="relative change small − relative change large < 0", detail=detail)]


def _class_gap(r: dict, control: float) -> float | None:
    classes = class_changes(r, control)
    if not classes:
        return None
    rare, common = min(classes, key=lambda c: c["frequency"]), max(classes, key=lambda c: c["frequency"])
    return rare["change"] - common["change"]


def _class_claims(results: dict) -> list[Claim]:
    control = results["config"]["control_sparsity"]
    classes = class_changes(results, control)
    detail = ""
    if classes:
        rare, common = min(classes, key=lambda c: c["frequency"]), max(classes, key=lambda c: c["frequency"])
        detail = f"{rare['class_name']} {rare['change']:+.1%} vs {common['class_name']} {common['change']:+.1%} (means)."
    return [_seed_claim("E9. the rarest class loses more than the most frequent", "rare classes collapse first (Fig. 5)",
                        results, lambda r: _class_gap(r, control), threshold=0.0, direction="<",
                        check="relative change rarest − most frequent < 0", detail=detail)]


def _rewind_ap(r: dict, fraction: float) -> float | None:
    cfg = r["config"]
    return _ap(next((t for t in r["tickets"].get("rewind", [])
                     if t["rewind_step"] == int(round(fraction * cfg["steps"]))), None))


def _rewind_claims(results: dict) -> list[Claim]:
    """Pre-specified points of the rewind study (each retrains the whole schedule): the spec's early
    points (0, the end of warm-up, 25 %) and its first point after the LR decay."""
    cfg = results["config"]
    fracs = sorted(set(cfg["rewind_fracs"]))
    early = [f for f in fracs if f in (0.0, cfg["rewind_frac"], 0.25)]
    late = [f for f in fracs if f > cfg["decay_at"]]
    out = []
    if len(early) >= 2:
        def spread(r):
            aps = [_rewind_ap(r, f) for f in early]
            return None if None in aps else max(aps) - min(aps)
        out.append(_seed_claim("E7a. early rewind points agree", "rewind point barely matters (Fig. 2b)", results,
                               spread, threshold=1.0, direction="<", check="max − min AP over the early points < 1",
                               detail=f"points {', '.join(f'{f:.0%}' for f in early)}."))
    if cfg["rewind_frac"] in fracs and late:
        out.append(_difference_claim(
            "E7b. rewinding after the LR decay is worse", "fails after the decay (Fig. 2b)", results,
            lambda r: _rewind_ap(r, cfg["rewind_frac"]), lambda r: _rewind_ap(r, late[0]), threshold=0.0,
            direction=">", check=f"AP(rewind {cfg['rewind_frac']:.0%}) − AP(rewind {late[0]:.0%}) > 0",
            detail="both retrain the whole schedule from their rewound weights."))
    return out
