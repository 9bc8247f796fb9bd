"""Chapter 04's claims: the spec's expected outcomes 2–8, judged by the shared rule of ``labkit.report``.

Each claim is a comparison with an interval over training seeds. Where a claim is about test images
of one trained model (detection, attribution, real digits decoded), the interval is the two-level
bootstrap over seeds, then images. Ratios (same-z difference, FD) are judged on the log scale and
shown back as ratios. Shorter rows are compared with the main row's checkpoint at the same step,
paired by seed (the same initialisation and batches up to there).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from labkit import report
from labkit.experiments.fingerprints import MAIN, UNFINGERPRINTED, analyses, short_row
from labkit.report import Claim, Estimate

__all__ = ["claims", "BIT_ACCURACY_TARGET", "CHANCE_BAND", "FPR_LIMIT", "ATTRIBUTION_TARGET", "SAME_Z_RATIO",
           "FD_RATIO"]

BIT_ACCURACY_TARGET = 0.93  # outcome 2, full budget, d_c = 16
CHANCE_BAND = 0.05  # outcome 3: real digits decode at 0.5 ± 0.05
FPR_LIMIT = 0.02  # outcome 3
ATTRIBUTION_TARGET = 0.9  # outcome 4, when bit accuracy ≥ 0.9
SAME_Z_RATIO = 1.5  # outcome 5
FD_RATIO = 1.5  # outcome 7
#: asserted at the full budget: the checks the reproduction held by a wide margin (claims 2 and 4
#: held with intervals close to their thresholds, so they are reported, not asserted)
ASSERTED = ("full",)


def _exp(estimate: Estimate) -> Estimate:
    """A log-scale estimate shown as a ratio (exp is monotone, so the verdict is unchanged)."""
    return dataclasses.replace(estimate, value=math.exp(estimate.value), low=math.exp(estimate.low),
                               high=math.exp(estimate.high), method=f"{estimate.method}, on the log scale")


def _abs(estimate: Estimate) -> Estimate:
    """The interval of |x| from the interval of x."""
    low, high = estimate.low, estimate.high
    inner = 0.0 if low <= 0 <= high else min(abs(low), abs(high))
    return dataclasses.replace(estimate, value=abs(estimate.value), low=inner, high=max(abs(low), abs(high)))


def _paired(results: dict, metric: str, method: str, control: str, log: bool = False) -> tuple[Estimate, str] | None:
    """``metric(method) − metric(control)`` at ``short_steps``, paired by seed (None when a row lacks
    seeds in common); with ``log`` the difference of logs. Returns the estimate and a detail text."""
    a, b = short_row(results, method), short_row(results, control)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    x = np.array([a[s][metric] for s in seeds])
    y = np.array([b[s][metric] for s in seeds])
    estimate = report.paired_difference(np.log(x), np.log(y)) if log else report.paired_difference(x, y)
    detail = (f"{method} {np.round(x, 3).tolist()} vs {control} {np.round(y, 3).tolist()} (seeds {seeds}, "
              f"{results['config']['short_steps']} steps)")
    return estimate, detail


def _compare(results: dict, name: str, paper: str, metric: str, method: str, control: str, *, direction: str,
             threshold: float = 0.0, ratio: bool = False, label: str, asserted_at: tuple = ()) -> Claim:
    check = (f"{label}({method}) / {label}({control}) {direction} {threshold:g}" if ratio
             else f"{label}({method}) − {label}({control}) {direction} 0")
    found = _paired(results, metric, method, control, log=ratio)
    if found is None:
        return Claim.not_measured(name, paper, check=check, detail=f"needs rows {method} and {control}")
    estimate, detail = found
    return Claim.compare(name, paper, _exp(estimate) if ratio else estimate, threshold=threshold, direction=direction,
                         check=check, detail=detail, asserted_at=asserted_at)


def _main_values(results: dict, key: str) -> list[float]:
    return [float(r[key]) for r in results["runs"].get(MAIN, [])]


def _bootstrap(results: dict, key: str, what: str) -> Estimate | None:
    items = [a[key] for a in analyses(results)]
    return report.bootstrap_difference(items, what=what) if items else None


def claims(results: dict) -> list[Claim]:
    """Outcomes 2–8 of the spec, plus observations: the baking error and the distance to the floor."""
    cfg = results["config"]
    out = [_baking(results), _floor(results), _bit_accuracy(results), *_real_digits(results), _attribution(results)]
    out.append(_compare(results, "5a. λ_const = 0 enlarges the same-z difference ≥ 1.5×", "2.1× in the pilot",
                        "same_z", "λ_const = 0", MAIN, direction=">", threshold=SAME_Z_RATIO, ratio=True,
                        label="same-z"))
    out.append(_compare(results, "5b. λ_const = 0 decodes better at the same step", "reaches a bit accuracy faster",
                        "bit_accuracy", "λ_const = 0", MAIN, direction=">", label="bit acc"))
    out.append(_compare(results, "5c. c concatenated to z decodes better at the same step",
                        "decodes faster than modulation", "bit_accuracy", "c concatenated to z", MAIN,
                        direction=">", label="bit acc"))
    out.append(_compare(results, "5d. c concatenated to z changes content more", "larger same-z difference",
                        "same_z", "c concatenated to z", MAIN, direction=">", label="same-z"))
    dims = sorted(cfg["sweep_dims"])
    out.append(_compare(results, f"6. capacity: bit accuracy falls from d_c {dims[0]} to {dims[-1]}",
                        "does not increase with d_c", "bit_accuracy", f"d_c = {dims[-1]}", f"d_c = {dims[0]}",
                        direction="<", label="bit acc", asserted_at=ASSERTED))
    out.append(_fd_ratio(results))
    out += [_robustness(results, kind) for kind in ("noise", "blur")]
    return out


def _baking(results: dict) -> Claim:
    found = analyses(results)
    measured = max(a["bake_max_error"] for a in found) if found else math.nan
    detail = f"{len(found)} trained model(s) × {found[0]['num_models']} baked fingerprints × 20 z" if found else ""
    return Claim.reported("1. Baking: max |baked(z) − G(z, c)|", "exact (weights folded)", measured,
                          check="a unit test (tests/methods/test_fingerprints.py); measured here too", detail=detail)


def _floor(results: dict) -> Claim:
    fds = _main_values(results, "fd")
    measured = float(np.mean(fds)) / results["floor"] if fds else math.nan
    return Claim.reported("Distance to the real-vs-real floor", "—", f"{measured:.1f}× the floor",
                          check="mean FD of the fingerprinted G / floor",
                          detail=f"FD {np.mean(fds):.3g}, floor {results['floor']:.3g} "
                                 f"({results['config']['num_eval']} vs {results['config']['num_eval']} images)"
                          if fds else "")


def _bit_accuracy(results: dict) -> Claim:
    name, paper = f"2. bit accuracy at d_c = {results['config']['fingerprint_dim']} ≥ 0.93", "0.99 at 128² (README)"
    values = _main_values(results, "bit_accuracy")
    estimate = report.bounded(report.seed_interval(values), 0.0, 1.0)
    return Claim.compare(name, paper, estimate, threshold=BIT_ACCURACY_TARGET, direction=">",
                         check=f"mean bit accuracy over seeds > {BIT_ACCURACY_TARGET}",
                         detail=f"per seed {np.round(values, 3).tolist()} after {results['config']['steps']} steps "
                                f"on {results['config']['num_bits']} fresh (z, c)")


def _real_digits(results: dict) -> list[Claim]:
    chance = _bootstrap(results, "real_bit_accuracy", "real digits")
    a = Claim.not_measured("3a. real digits decode at chance (0.5 ± 0.05)", "—", check="|bit acc − 0.5| < 0.05")
    b = Claim.not_measured("3b. detection FPR on real digits ≤ 2 %", "—", check="FPR < 0.02")
    if chance is None:
        return [a, b]
    shifted = dataclasses.replace(chance, value=chance.value - 0.5, low=chance.low - 0.5, high=chance.high - 0.5)
    a = Claim.compare(a.name, "≈ 0.5 (bits independent of a real image)", _abs(shifted), threshold=CHANCE_BAND,
                      direction="<", check=a.check, asserted_at=ASSERTED,
                      detail=f"real bit accuracy {chance.value:.3f} [{chance.low:.3f}, {chance.high:.3f}] against a "
                             "random registered fingerprint per digit")
    threshold = analyses(results)[0]["threshold"]
    fpr = report.bounded(_bootstrap(results, "real_detected", "real digits"), 0.0, 1.0)
    b = Claim.compare(b.name, f"α = {analyses(results)[0]['alpha']}", fpr, threshold=FPR_LIMIT, direction="<",
                      check=b.check, asserted_at=ASSERTED, detail=f"binomial test: ≥ {threshold} of {results['config']['fingerprint_dim']} "
                                            "bits matching a random registered fingerprint")
    return [a, b]


def _attribution(results: dict) -> Claim:
    name, paper = "4. attribution among 100 models ≥ 0.9 when bit accuracy ≥ 0.9", "easy once bits are reliable"
    check = f"attribution accuracy > {ATTRIBUTION_TARGET}"
    estimate = _bootstrap(results, "attribution_correct", "images")
    if estimate is None:
        return Claim.not_measured(name, paper, check=check)
    estimate = report.bounded(estimate, 0.0, 1.0)
    bits = float(np.mean(_main_values(results, "bit_accuracy")))
    tpr = float(np.mean([np.mean(a["detected"]) for a in analyses(results)]))
    detail = f"bit accuracy {bits:.3f}; detection TPR {tpr:.3f} against the own fingerprint"
    claim = Claim.compare(name, paper, estimate, threshold=ATTRIBUTION_TARGET, direction=">", check=check,
                          detail=detail)
    if bits < ATTRIBUTION_TARGET and claim.status != "inconclusive":
        return dataclasses.replace(claim, status="inconclusive",
                                   detail=f"the premise fails: mean bit accuracy {bits:.3f} < 0.9, so the claim "
                                          f"is not tested (the interval alone says {claim.status}); {detail}")
    return claim


def _fd_ratio(results: dict) -> Claim:
    name, paper = "7. FD(fingerprinted) ≤ 1.5 × FD(un-fingerprinted)", "small FID cost (paper, unverified)"
    check = f"FD({MAIN}) / FD({UNFINGERPRINTED}) < {FD_RATIO:g}"
    a = {r["seed"]: r["fd"] for r in results["runs"].get(MAIN, [])}
    b = {r["seed"]: r["fd"] for r in results["runs"].get(UNFINGERPRINTED, [])}
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return Claim.not_measured(name, paper, check=check)
    # the same seed draws the same batches and evaluation latents for both: paired on the log scale
    estimate = _exp(report.paired_difference(np.log([a[s] for s in seeds]), np.log([b[s] for s in seeds])))
    detail = (f"FD {np.round([a[s] for s in seeds], 2).tolist()} vs {np.round([b[s] for s in seeds], 2).tolist()}; "
              f"floor {results['floor']:.3g}")
    return Claim.compare(name, paper, estimate, threshold=FD_RATIO, direction="<", check=check, detail=detail)


def _robustness(results: dict, kind: str) -> Claim:
    found = [a["robustness"][kind] for a in analyses(results)]
    label = {"noise": "noise σ", "blur": "blur σ"}[kind]
    name = f"8{'a' if kind == 'noise' else 'b'}. {kind} lowers bit accuracy"
    if not found:
        return Claim.not_measured(name, "monotone decrease", check="")
    strongest = found[0]["strength"][-1]
    check = f"bit acc({label} {strongest}) − bit acc(clean) < 0"
    drops = [f["bit_accuracy"][-1] - f["bit_accuracy"][0] for f in found]
    curve = np.mean([f["bit_accuracy"] for f in found], axis=0)
    monotone = bool(np.all(np.diff(curve) <= 0))
    detail = (f"mean curve {np.round(curve, 3).tolist()} over {label} {found[0]['strength']}: "
              f"{'monotone' if monotone else 'not monotone'}; no augmentation in training")
    return Claim.compare(name, "decreases monotonically; toward 0.5 at strong blur", report.seed_interval(drops),
                         threshold=0.0, direction="<", check=check, detail=detail, asserted_at=ASSERTED)
