"""A chapter's claims, judged by one rule shared by every chapter.

A paper's claim becomes a *comparison with an interval*: an ``Estimate`` (a point value and a
95 % interval from the right noise source) against a threshold in a stated direction. ``verdict``
is the one rule:

- **held**: the interval lies entirely on the claimed side of the threshold;
- **not reproduced**: it lies entirely on the other side;
- **inconclusive**: it contains the threshold ("within noise"; the page gives the interval).

Observations without a check are **reported**; a claim a budget does not measure is **not
measured**. Invariants (softmax rows sum to one, a mask keeps what it should) are unit tests, not
claims: nothing here can be true by construction.

Where the interval comes from (stated once in the book, ``book/claims.md``):

- ``seed_interval``: the mean of a per-seed quantity, Student-t interval over training seeds;
- ``paired_difference``: method − control, paired by seed (same data, same initialisation), t
  interval of the per-seed differences; ``unpaired_difference``: Welch's interval when the runs
  share nothing;
- ``bootstrap_difference``: seeds *and* test items resampled (a two-level bootstrap), for metrics
  whose test set is small enough that it adds noise of its own;
- ``bootstrap_interval``: test items only, for a single deterministic computation (no training).

One seed gives an infinite t interval: a comparison measured on one training run is inconclusive
by construction of the rule, which is the honest reading of one run. So does *no spread*: when
every seed (or every resample) gives exactly the same value, the data show no noise to size the
interval with (typically a discrete statistic, a rank correlation over a dozen tensors, that the
seeds do not move), and a zero-width interval would make any such difference held; the rule
then uses the distribution-free (sign-test) interval of the median, which needs 6 identical values
for 95 %. ``bounded``
clips an interval to the range a statistic can take (a correlation never exceeds 1).

``claims_table`` renders claims for the page; ``save_claims`` writes them as JSON next to the
executed notebook (``$LABKIT_OUTPUT_DIR``, set by ``labkit run``), where the book reads them. A
claim is *asserted* (the notebook fails unless it is held) at the budgets in ``asserted_at``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .cache import PACKAGE_DIR, write_text_atomic
from .config import BUDGETS, check_choice

LEVEL = 0.95
DIRECTIONS = (">", "<")
COUNTED = ("held", "not reproduced", "inconclusive")  # what the scoreboard counts
STATUSES = COUNTED + ("reported", "not measured")
NUM_RESAMPLES = 2000


# --------------------------------------------------------------------------- intervals

@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point value with its ``LEVEL`` interval and where the interval comes from."""

    value: float
    low: float
    high: float
    method: str  # e.g. "paired t over 5 seeds"
    num_seeds: int = 1


def _t_quantile(level: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof))


def _no_spread(value: float, method: str, num_seeds: int, level: float = LEVEL) -> Estimate:
    """Every seed gave the same value: a t interval would have zero width. Fall back to the
    distribution-free interval for the median, ``[min, max]`` of n values, whose coverage is
    ``1 − 2^(1−n)``: a point at ``level`` = 95 % from 6 values on, no interval below that."""
    if 1 - 2.0 ** (1 - num_seeds) >= level:
        return Estimate(value, value, value, f"{method}: identical values (sign-test interval)", num_seeds)
    return Estimate(value, -math.inf, math.inf,
                    f"{method}: identical values, too few to bound without a spread", num_seeds)


def bounded(estimate: Estimate, low: float, high: float) -> Estimate:
    """``estimate`` with its interval clipped to ``[low, high]``, the range its statistic can take."""
    if not low < high:
        raise ValueError(f"bounded needs low < high; got low={low!r}, high={high!r}")
    return dataclasses.replace(estimate, low=min(max(estimate.low, low), high),
                               high=max(min(estimate.high, high), low))


def seed_interval(values: Sequence[float], level: float = LEVEL, what: str = "t over") -> Estimate:
    """Mean of per-seed values with a Student-t interval; fewer than 2 seeds: (−inf, inf)."""
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("values is empty: an estimate needs at least one seed")
    mean = float(x.mean())
    if x.size < 2 or not np.isfinite(x).all():
        return Estimate(mean, -math.inf, math.inf, f"{what} {x.size} seed(s): no interval", int(x.size))
    if np.ptp(x) == 0:
        return _no_spread(mean, f"{what} {x.size} seeds", int(x.size), level)
    half = _t_quantile(level, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Estimate(mean, mean - half, mean + half, f"{what} {x.size} seeds", int(x.size))


def paired_difference(method: Sequence[float], control: Sequence[float], level: float = LEVEL) -> Estimate:
    """Mean of ``method[i] − control[i]`` (seed ``i`` for both) with a t interval over seeds."""
    a, b = np.asarray(method, dtype=float).ravel(), np.asarray(control, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs one control per seed: method has {a.size} "
                         f"values, control {b.size}")
    return seed_interval(a - b, level, what="paired t over")


def unpaired_difference(method: Sequence[float], control: Sequence[float], level: float = LEVEL) -> Estimate:
    """``mean(method) − mean(control)`` with Welch's interval (runs that share no seed)."""
    from scipy import stats

    a, b = np.asarray(method, dtype=float).ravel(), np.asarray(control, dtype=float).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("unpaired_difference needs at least one value on each side")
    diff = float(a.mean() - b.mean())
    seeds = int(min(a.size, b.size))
    if a.size < 2 or b.size < 2:
        return Estimate(diff, -math.inf, math.inf, "Welch t: one seed on a side, no interval", seeds)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return _no_spread(diff, f"Welch t over {a.size} and {b.size} seeds", seeds, level)
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return Estimate(diff, diff - half, diff + half, f"Welch t over {a.size} and {b.size} seeds", seeds)


def bootstrap_interval(values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean, *,
                       level: float = LEVEL, num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                       what: str = "test items", t_scaled: bool = False) -> Estimate:
    """``statistic(values)`` with a bootstrap over the items (rows of ``values``) of one deterministic run.

    Percentile interval; ``t_scaled``: ``value ± t_{n−1} · sd* · sqrt(n / (n − 1))`` as in
    ``bootstrap_difference``, for a handful of items (test folds) where percentiles are too narrow.
    """
    x = np.asarray(values, dtype=float)
    n = x.shape[0] if x.ndim else 0
    if n == 0:
        raise ValueError("values is empty: a bootstrap needs at least one item")
    value = float(statistic(x))
    method = f"bootstrap over {n} {what}" + (" (t-scaled)" if t_scaled else "")
    if t_scaled and n < 2:
        return Estimate(value, -math.inf, math.inf, f"{method}: one item, no interval", 1)
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(x[rng.integers(0, n, n)]) for _ in range(num_resamples)])
    if np.ptp(stats) == 0:
        return _no_spread(value, method, n, level)
    if t_scaled:
        half = _t_quantile(level, n - 1) * float(np.std(stats, ddof=1)) * math.sqrt(n / (n - 1))
        return Estimate(value, value - half, value + half, method, 1)
    low, high = np.quantile(stats, [0.5 - level / 2, 0.5 + level / 2])
    return Estimate(value, float(low), float(high), method, 1)


def bootstrap_difference(method: Sequence[np.ndarray], control: Sequence[np.ndarray] | None = None,
                         statistic: Callable[[np.ndarray], float] = np.mean, *, level: float = LEVEL,
                         num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                         what: str = "test items") -> Estimate:
    """Two-level bootstrap: seeds, then test items within each seed.

    The interval is ``value ± t_{n−1} · sd*`` with ``sd*`` the bootstrap standard deviation scaled
    by ``sqrt(n / (n − 1))`` (``n`` seeds), so it never claims more certainty than a t interval
    over the seeds would. ``method[s]`` holds seed ``s``'s per-item scores (``control[s]`` the control's on the same items,
    so items are resampled together); fewer than 2 seeds give (−inf, inf), since test items alone
    would hide the training noise. The value is the mean over seeds of
    ``statistic(method[s]) − statistic(control[s])`` (no control: of ``statistic(method[s])``).
    """
    a = [np.asarray(m, dtype=float) for m in method]
    b = None if control is None else [np.asarray(c, dtype=float) for c in control]
    if not a:
        raise ValueError("method is empty: a bootstrap needs at least one seed")
    if b is not None and [len(x) for x in a] != [len(x) for x in b]:
        raise ValueError("bootstrap_difference pairs items: method and control need the same seeds "
                         "and the same number of items per seed")

    def per_seed(s: int, items: np.ndarray) -> float:
        own = statistic(a[s][items])
        return own - statistic(b[s][items]) if b is not None else own

    value = float(np.mean([per_seed(s, np.arange(len(a[s]))) for s in range(len(a))]))
    if len(a) < 2:  # test items alone would hide the training noise
        return Estimate(value, -math.inf, math.inf, "one training seed: no interval", 1)
    rng = np.random.default_rng(seed)
    stats = np.empty(num_resamples)
    for r in range(num_resamples):
        seeds = rng.integers(0, len(a), len(a))
        stats[r] = np.mean([per_seed(s, rng.integers(0, len(a[s]), len(a[s]))) for s in seeds])
    # A percentile interval over so few seeds is too narrow: resampling n seeds shrinks their
    # variance by (n − 1)/n and normal quantiles ignore that the spread is estimated. Undo the
    # first and use t_{n−1}; with no item noise this is exactly the paired t interval.
    n = len(a)
    if np.ptp(stats) == 0:
        return _no_spread(value, f"two-level bootstrap over {n} seeds × {len(a[0])} {what}", n, level)
    half = _t_quantile(level, n - 1) * float(np.std(stats, ddof=1)) * math.sqrt(n / (n - 1))
    return Estimate(value, value - half, value + half,
                    f"two-level bootstrap over {n} seeds × {len(a[0])} {what} (t-scaled)", n)


# --------------------------------------------------------------------------- the rule

def verdict(estimate: Estimate, threshold: float, direction: str) -> str:
    """held / not reproduced / inconclusive: where ``estimate``'s interval lies from ``threshold``.

    ``direction`` ``">"``: the paper claims the value exceeds the threshold; ``"<"``: stays below.
    """
    check_choice("direction", direction, DIRECTIONS)
    low, high = estimate.low, estimate.high
    if not all(map(math.isfinite, (estimate.value, threshold))) or math.isnan(low) or math.isnan(high):
        return "inconclusive"
    above, below = low > threshold, high < threshold
    if direction == ">":
        return "held" if above else "not reproduced" if below else "inconclusive"
    return "held" if below else "not reproduced" if above else "inconclusive"


def format_number(x: float | None) -> str:
    """A value as the claims table writes it: three significant digits, ∞ and — spelled out."""
    if x is None:
        return "—"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.3g}" if x and not 1e-2 <= abs(x) < 1e4 else f"{x:.3f}"


@dataclasses.dataclass
class Claim:
    """One claim of the paper, measured and judged. Build it with ``compare``, ``reported`` or
    ``not_measured``; ``status`` is then one of ``STATUSES``."""

    name: str
    paper: str
    measured: float | str | None  # the point estimate (None: not measured at this budget)
    check: str  # what is compared, in words: "R@1(SVMax) − R@1(vanilla) > 0"
    status: str
    low: float | None = None  # the interval (None: no interval, e.g. a reported observation)
    high: float | None = None
    threshold: float | None = None
    direction: str | None = None
    noise: str = ""  # where the interval comes from: "paired t over 5 seeds"
    asserted_at: tuple[str, ...] = ()
    detail: str = ""

    def __post_init__(self):
        check_choice("status", self.status, STATUSES)
        for budget in self.asserted_at:
            check_choice("asserted_at", budget, BUDGETS)
        if self.direction is not None:
            check_choice("direction", self.direction, DIRECTIONS)
        self.asserted_at = tuple(self.asserted_at)

    @classmethod
    def compare(cls, name: str, paper: str, estimate: Estimate, *, threshold: float = 0.0,
                direction: str = ">", check: str, asserted_at: Sequence[str] = (),
                detail: str = "") -> "Claim":
        """A comparison judged by ``verdict``: is ``estimate`` ``direction`` ``threshold``?"""
        if not isinstance(estimate, Estimate):
            raise TypeError(f"estimate must be a labkit.report.Estimate, got {type(estimate).__name__}")
        return cls(name, paper, float(estimate.value), check, verdict(estimate, threshold, direction),
                   low=float(estimate.low), high=float(estimate.high), threshold=float(threshold),
                   direction=direction, noise=estimate.method, asserted_at=tuple(asserted_at),
                   detail=detail)

    @classmethod
    def reported(cls, name: str, paper: str, measured: float | str, *, check: str = "observation, no check",
                 detail: str = "") -> "Claim":
        return cls(name, paper, measured, check, "reported", detail=detail)

    @classmethod
    def not_measured(cls, name: str, paper: str, *, check: str, detail: str = "") -> "Claim":
        return cls(name, paper, None, check, "not measured", detail=detail)

    @property
    def held(self) -> bool:
        return self.status == "held"

    def asserted(self, budget: str) -> bool:
        return budget in self.asserted_at

    def measured_text(self) -> str:
        if self.measured is None:
            return "—"
        if isinstance(self.measured, (int, float)) and not isinstance(self.measured, bool):
            return format_number(float(self.measured))
        return str(self.measured)

    def interval_text(self) -> str:
        if self.low is None or self.high is None:
            return ""
        return f"[{format_number(self.low)}, {format_number(self.high)}]"

    def verdict_text(self) -> str:
        """The status, with "within noise" for an inconclusive comparison."""
        return "inconclusive (within noise)" if self.status == "inconclusive" else self.status


def failed_assertions(claims: Iterable[Claim], budget: str) -> list[Claim]:
    """The claims asserted at ``budget`` that were not held."""
    return [c for c in claims if c.asserted(budget) and not c.held]


_COLOURS = {"held": "#e6f4ea", "not reproduced": "#fce8e6", "inconclusive": "#fef7e0",
            "reported": "#f1f3f4", "not measured": "#f1f3f4"}


class ClaimsTable:
    """Renders as an HTML table in Lab and the book, and as rounded plain text for nbval."""

    HEADERS = ("Claim", "Paper", "Ours", "95 % interval", "Check", "Verdict")

    def __init__(self, claims: Sequence[Claim], budget: str):
        self.claims, self.budget = list(claims), budget

    def rows(self) -> list[tuple[str, ...]]:
        out = []
        for c in self.claims:
            status = c.verdict_text()
            if c.status == "not measured":
                status = f"not measured at {self.budget}"
            elif c.asserted_at:
                status += "; asserted" if c.asserted(self.budget) else f"; asserted at {'/'.join(c.asserted_at)}"
            interval = c.interval_text() + (f" ({c.noise})" if c.noise else "")
            out.append((c.name, c.paper, c.measured_text(), interval, c.check, status))
        return out

    def __repr__(self) -> str:
        return "\n".join(" | ".join(row) for row in [tuple(h.lower() for h in self.HEADERS)] + self.rows())

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h if h != 'Ours' else f'Ours ({self.budget})'}</th>" for h in self.HEADERS)
        body = []
        for c, row in zip(self.claims, self.rows()):
            cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
            title = html.escape(c.detail, quote=True)
            body.append(f'<tr style="background:{_COLOURS[c.status]}" title="{title}">{cells}</tr>')
        counts = ", ".join(f"{sum(c.status == s for c in self.claims)} {s}" for s in COUNTED)
        return (f'<table class="labkit-claims"><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table>"
                f"<p><small>{counts}. A claim is held only when its 95 % interval excludes the "
                f"threshold (see <em>How claims are judged</em>).</small></p>")


def claims_table(claims: Sequence[Claim], budget: str) -> ClaimsTable:
    return ClaimsTable(claims, budget)


def output_dir() -> Path:
    """Where a run's claims go: ``$LABKIT_OUTPUT_DIR`` under ``labkit run``, else ``build/lab``."""
    if os.environ.get("LABKIT_OUTPUT_DIR"):
        return Path(os.environ["LABKIT_OUTPUT_DIR"])
    return PACKAGE_DIR.parent / "build" / "lab"


def claim_record(claim: Claim) -> dict:
    return dataclasses.asdict(claim) | {"asserted_at": list(claim.asserted_at), "held": claim.held}


def save_claims(chapter: str, title: str, budget: str, claims: Sequence[Claim], *,
                device: str = "cpu", extra: dict | None = None) -> Path:
    """Write ``<chapter>.claims.json`` atomically and return its path."""
    from . import __version__

    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"claims must be labkit.report.Claim, got {type(c).__name__}")
    record = {
        "chapter": chapter,
        "title": title,
        "budget": budget,
        "labkit_version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "rule": "held / not reproduced / inconclusive by a 95 % interval against the threshold",
        "claims": [claim_record(c) for c in claims],
        **(extra or {}),
    }
    path = output_dir() / f"{chapter}.claims.json"
    write_text_atomic(json.dumps(record, indent=2, allow_nan=True) + "\n", path)
    return path


def load_claims(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def claim_status(record: dict) -> str:
    """A saved claim's status; records written before the shared rule had only ``held``."""
    if record.get("status") in STATUSES:
        return record["status"]
    if record.get("measured") is None:
        return "not measured"
    return "unjudged (old rule)"
