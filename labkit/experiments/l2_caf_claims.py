"""Chapter 10's claims: the spec's expected outcomes 1–8, judged by the shared rule of ``labkit.report``.

Localization and pointing are per test image, so every comparison is a two-level bootstrap: the
training seeds, then the test images within each seed (every method of a network is scored on the
same images, so they are resampled together). MaxBoxAcc is a maximum over τ, recomputed inside
every resample. Speed is measured in the notebook's process after the runs, one thing at a time;
its interval is a t interval over the timing repeats.

Outcome 1 is judged on the large objects (3–20 % of the image, the spec's 5–25 % range); outcome 8
on the medium ones, smaller than a cell of the 8×8 map. Outcome 2's Grad-CAM = CAM identity on the
GAP + linear head holds by construction: a unit test checks it, and the chapter only reports the
measured correlation.

No claim is asserted. Outcome 8 was, until the first full run: every one of its 300 values (3
seeds × 100 medium images) was 0, and the shared rule gives no interval to data without a spread
unless 6 seeds agree, so it is inconclusive at 3 seeds (as is 7a, every value 1).
"""
from __future__ import annotations

import numpy as np

from labkit import report
from labkit.experiments.l2_caf import size_mask
from labkit.experiments.l2_caf_runs import CENTRE, GRAD_CAM, OBLIVIOUS, SPECIFIC
from labkit.metrics.localization import CAM_TAU, TAUS
from labkit.report import Claim

__all__ = ["claims", "POINTING", "CENTRE_POINTING", "PAIR_RATE", "FAST_FACTOR", "SECONDS", "NEAR_ZERO"]

POINTING = 0.8  # outcome 1: pointing accuracy of the informative maps
CENTRE_POINTING = 0.35  # outcome 1: the centre prior's ceiling
PAIR_RATE = 0.7  # outcome 5
FAST_FACTOR = 5.0  # outcome 6
SECONDS = 1.0  # outcome 6: seconds per image on CPU
NEAR_ZERO = 0.1  # outcome 8: "near 0" read as below 10 % (ours)


def _max_box(hits: np.ndarray) -> float:
    return float(hits.mean(0).max())


def _entries(results: dict, kind: str) -> list[dict]:
    return results["nets"].get(kind, [])


def _pointing(results: dict, kind: str, method: str, name: str, paper: str, *, threshold: float,
              direction: str) -> Claim:
    found = _entries(results, kind)
    check = f"pointing({method}, {kind} net, large objects) {direction} {threshold}"
    if not found or method not in found[0]["methods"]:
        return Claim.not_measured(name, paper, check=check)
    large = size_mask(results, "large")
    per_seed = [e["methods"][method]["pointing"][large] for e in found]
    estimate = report.bounded(report.bootstrap_difference(per_seed, what="test images"), 0.0, 1.0)
    return Claim.compare(name, paper, estimate, threshold=threshold, direction=direction, check=check,
                         detail=f"per seed {[round(float(p.mean()), 3) for p in per_seed]}")


def _max_box_gain(results: dict, kind: str, method: str, control: str, name: str, paper: str) -> Claim:
    found = _entries(results, kind)
    check = f"MaxBoxAcc({method}) − MaxBoxAcc({control}) > 0 ({kind} net, all test images)"
    if not found or method not in found[0]["methods"] or control not in found[0]["methods"]:
        return Claim.not_measured(name, paper, check=check)
    a = [e["methods"][method]["hits"] for e in found]
    b = [e["methods"][control]["hits"] for e in found]
    estimate = report.bounded(report.bootstrap_difference(a, b, statistic=_max_box, what="test images"), -1.0, 1.0)
    detail = (f"{method} {[round(_max_box(h), 3) for h in a]} vs {control} {[round(_max_box(h), 3) for h in b]}"
              f" (seeds {[e['seed'] for e in found]})")
    return Claim.compare(name, paper, estimate, check=check, detail=detail)


def _correlation_claims(results: dict) -> list[Claim]:
    out = []
    cam = _entries(results, "cam")
    if cam:
        values = np.concatenate([e["correlation"] for e in cam])
        out.append(Claim.reported("2a. Grad-CAM equals ReLU(CAM) on the GAP + linear net", "exact, up to scale (spec)",
                                  f"min correlation {values.min():.6f}",
                                  check="an identity: a unit test checks it; here measured on the chapter's nets",
                                  detail=f"{len(values)} test maps over {len(cam)} seeds"))
    mlp = _entries(results, "mlp")
    name, paper = "2b. on the MLP head Grad-CAM differs from CAM", "Grad-CAM ≠ CAM beyond GAP + linear (spec)"
    check = "mean correlation(Grad-CAM, ReLU(CAM with W₂W₁)) < 0.999 (MLP net)"
    if not mlp:
        out.append(Claim.not_measured(name, paper, check=check))
    else:
        estimate = report.bounded(report.bootstrap_difference([e["correlation"] for e in mlp], what="test images"),
                                  -1.0, 1.0)
        out.append(Claim.compare(name, paper, estimate, threshold=0.999, direction="<", check=check,
                                 detail=f"per seed {[round(float(e['correlation'].mean()), 4) for e in mlp]}"))
    return out


def _pair_claim(results: dict) -> list[Claim]:
    found = _entries(results, "cam")
    name, paper = "5. class-specific maps find the queried object", "class-specific maps separate objects"
    check = f"peak of class-specific L2-CAF in the queried object's box > {PAIR_RATE} (two-object images)"
    if not found:
        return [Claim.not_measured(name, paper, check=check)]
    per_seed = [e["pairs"][SPECIFIC]["on_queried"].ravel() for e in found]
    estimate = report.bounded(report.bootstrap_difference(per_seed, what="(image, class) queries"), 0.0, 1.0)
    oblivious = np.mean([e["pairs"][OBLIVIOUS]["on_queried"].mean() for e in found])
    return [Claim.compare(name, paper, estimate, threshold=PAIR_RATE, check=check,
                          detail=f"per seed {[round(float(p.mean()), 3) for p in per_seed]}; class-oblivious "
                                 f"(one map per image) on the queried object {oblivious:.3f}")]


def _speed_claims(timing: dict | None) -> list[Claim]:
    names = ("6a. fast mode is ≥ 5× faster per iteration", "6b. under a second per image on CPU")
    papers = ("fast ≈ 0.3 s vs slow ≈ 4 s per image (README, GPU)", "fast mode ≈ 0.3 s per image (GPU)")
    checks = (f"seconds per iteration slow / fast > {FAST_FACTOR} (one image at a time)",
              f"seconds per image, official loop in fast mode < {SECONDS}")
    if not timing:
        return [Claim.not_measured(n, p, check=c) for n, p, c in zip(names, papers, checks)]
    ratio = np.array(timing["slow_iteration"]) / np.array(timing["fast_iteration"])
    loop = np.array(timing["loop"])
    where = f"{timing['network']} net, {timing['images']} images, {timing['threads']} threads"
    return [
        Claim.compare(names[0], papers[0], report.seed_interval(ratio, what="t over timing repeats"),
                      threshold=FAST_FACTOR, check=checks[0],
                      detail=f"per repeat {np.round(ratio, 1).tolist()} ({where})"),
        Claim.compare(names[1], papers[1], report.seed_interval(loop, what="t over timing repeats"),
                      threshold=SECONDS, direction="<", check=checks[1],
                      detail=f"per repeat {np.round(loop, 4).tolist()} s; batched "
                             f"{np.round(timing['batched'], 4).tolist()} s ({where})"),
        Claim.reported("6c. batched filters against the one-image loop", "beyond both official codes (ours)",
                       f"{np.mean(loop / np.array(timing['batched'])):.1f}× images per second",
                       check="observation: the benchmark in benchmarks/l2_caf.py measures it with 1 and 2 threads"),
    ]


def _convergence_claim(results: dict) -> Claim:
    found = _entries(results, "cam")
    name, paper = "7a. with the L2 constraint most images stop before max_iter", "converges (spec)"
    check = "fraction of images whose class-specific filter stopped before max_iters > 0.5"
    if not found:
        return Claim.not_measured(name, paper, check=check)
    limit = results["config"]["max_iters"]
    per_seed = [(e["methods"][SPECIFIC]["iterations"] < limit).astype(float) for e in found]
    estimate = report.bounded(report.bootstrap_difference(per_seed, what="test images"), 0.0, 1.0)
    return Claim.compare(name, paper, estimate, threshold=0.5, check=check,
                         detail=f"mean iterations per seed {[round(float(e['methods'][SPECIFIC]['iterations'].mean())) for e in found]}")


def _threshold_claim(results: dict) -> Claim:
    found = _entries(results, "cam")
    name, paper = "8. at τ = 0.2 every method is near 0 on small objects", "the threshold convention (spec)"
    check = f"best accuracy at τ = {CAM_TAU} over methods, medium objects < {NEAR_ZERO}"
    if not found:
        return Claim.not_measured(name, paper, check=check)
    medium, column = size_mask(results, "medium"), TAUS.index(CAM_TAU)
    methods = [m for m in found[0]["methods"] if m != CENTRE]
    best = max(methods, key=lambda m: np.mean([e["methods"][m]["hits"][medium, column].mean() for e in found]))
    per_seed = [e["methods"][best]["hits"][medium, column].astype(float) for e in found]
    estimate = report.bounded(report.bootstrap_difference(per_seed, what="test images"), 0.0, 1.0)
    maxbox = np.mean([_max_box(e["methods"][best]["hits"][medium]) for e in found])
    return Claim.compare(name, paper, estimate, threshold=NEAR_ZERO, direction="<", check=check, detail=f"best at τ = 0.2: {best}; its MaxBoxAcc on medium objects "
                                                      f"{maxbox:.3f}")


def claims(results: dict, timing: dict | None = None) -> list[Claim]:
    return [
        _pointing(results, "cam", SPECIFIC, "1a. class-specific L2-CAF points at the object", "informative maps",
                  threshold=POINTING, direction=">"),
        _pointing(results, "cam", OBLIVIOUS, "1b. class-oblivious L2-CAF points at the object", "informative maps",
                  threshold=POINTING, direction=">"),
        _pointing(results, "cam", GRAD_CAM, "1c. Grad-CAM points at the object", "informative maps",
                  threshold=POINTING, direction=">"),
        _pointing(results, "cam", CENTRE, "1d. a centre prior does not", "the control",
                  threshold=CENTRE_POINTING, direction="<"),
        *_correlation_claims(results),
        _max_box_gain(results, "cam", SPECIFIC, GRAD_CAM, "3a. L2-CAF localizes better than Grad-CAM (CAM net)",
                      "state of the art on classification nets (Table 1)"),
        _max_box_gain(results, "mlp", SPECIFIC, GRAD_CAM, "3b. L2-CAF localizes better than Grad-CAM (MLP head)",
                      "state of the art on classification nets (Table 1)"),
        _max_box_gain(results, "retrieval", OBLIVIOUS, GRAD_CAM,
                      "4. on the retrieval net, class-oblivious L2-CAF beats embedding Grad-CAM",
                      "large margins over Grad-CAM on retrieval nets (Table 3)"),
        *_pair_claim(results),
        *_speed_claims(timing),
        _convergence_claim(results),
        _constraint_claim(results),
        _threshold_claim(results),
        _best_tau_observation(results),
    ]


def _best_tau_observation(results: dict) -> Claim:
    """On large objects the networks see the object, so what τ = 0.2 loses is the threshold's doing."""
    found = _entries(results, "cam")
    name, paper = "8b. on large objects the best τ is far above 0.2", "use best-τ (spec)"
    if not found:
        return Claim.not_measured(name, paper, check="observation")
    large, column = size_mask(results, "large"), TAUS.index(CAM_TAU)
    parts = []
    for method in (SPECIFIC, OBLIVIOUS, GRAD_CAM):
        best = [TAUS[int(np.argmax(e["methods"][method]["hits"][large].mean(0)))] for e in found]
        at = np.mean([e["methods"][method]["hits"][large, column].mean() for e in found])
        maxbox = np.mean([_max_box(e["methods"][method]["hits"][large]) for e in found])
        parts.append(f"{method}: {at:.2f} at τ = 0.2, {maxbox:.2f} at best τ {best}")
    return Claim.reported(name, paper, "; ".join(parts), check="observation (MaxBoxAcc ≥ accuracy at any one τ by "
                                                               "construction; the size of the gap is the finding)")


def _constraint_claim(results: dict) -> Claim:
    found = _entries(results, "cam")
    name, paper = "7b. without the constraint class-oblivious maps lose the object", "the constraint (ablation)"
    variant = "oblivious, constraint: none"
    check = f"MaxBoxAcc(L2-CAF oblivious) − MaxBoxAcc({variant}) > 0 (cam net, all test images)"
    if not found or variant not in found[0].get("ablations", {}):
        return Claim.not_measured(name, paper, check=check)
    a = [e["methods"][OBLIVIOUS]["hits"] for e in found]
    b = [e["ablations"][variant]["hits"] for e in found]
    estimate = report.bounded(report.bootstrap_difference(a, b, statistic=_max_box, what="test images"), -1.0, 1.0)
    return Claim.compare(name, paper, estimate, check=check,
                         detail=f"with L2 {[round(_max_box(h), 3) for h in a]}, without {[round(_max_box(h), 3) for h in b]}")
