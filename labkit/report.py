"""A chapter's claims: what the paper says, what we measured, and whether it held.

``Claim`` is one row. ``claims_table`` renders rows for the page; ``save_claims`` writes them as
JSON next to the executed notebook (``$LABKIT_OUTPUT_DIR``, set by ``labkit run``), where the book's
scoreboard reads them. A claim is *asserted* at the budgets in ``asserted_at``; at other budgets it
is measured and shown but not expected to hold.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from .cache import PACKAGE_DIR, write_text_atomic
from .config import BUDGETS, check_choice


@dataclasses.dataclass
class Claim:
    """One measurable claim. ``held`` is computed by the caller from ``measured``."""

    name: str
    paper: str
    measured: float | str | None  # None: not measured at this budget
    check: str
    held: bool
    asserted_at: tuple[str, ...] = ("quick", "full")
    detail: str = ""

    def __post_init__(self):
        for budget in self.asserted_at:
            check_choice("asserted_at", budget, BUDGETS)
        self.held = bool(self.held)

    def asserted(self, budget: str) -> bool:
        return budget in self.asserted_at

    def measured_text(self, digits: int = 3) -> str:
        if self.measured is None:
            return "—"
        if isinstance(self.measured, float):
            return "nan" if math.isnan(self.measured) else f"{self.measured:.{digits}f}"
        return str(self.measured)


def failed_assertions(claims: Iterable[Claim], budget: str) -> list[Claim]:
    """The claims asserted at ``budget`` that did not hold."""
    return [c for c in claims if c.asserted(budget) and not c.held]


class ClaimsTable:
    """Renders as an HTML table in Lab and the book, and as rounded plain text for nbval."""

    def __init__(self, claims: Sequence[Claim], budget: str):
        self.claims, self.budget = list(claims), budget

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        out = []
        for c in self.claims:
            if c.measured is None:
                out.append((c.name, c.paper, "—", c.check, f"not measured at {self.budget}"))
                continue
            status = "held" if c.held else "not reproduced"
            where = "asserted" if c.asserted(self.budget) else f"shown (asserted at {'/'.join(c.asserted_at) or 'none'})"
            out.append((c.name, c.paper, c.measured_text(), c.check, f"{status}; {where}"))
        return out

    def __repr__(self) -> str:
        return "\n".join(" | ".join(row) for row in [("claim", "paper", "ours", "check", "status")] + self.rows())

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("Claim", "Paper", f"Ours ({self.budget})", "Check", "Status"))
        body = []
        for c, row in zip(self.claims, self.rows()):
            colour = "#f1f3f4" if c.measured is None else "#e6f4ea" if c.held else "#fce8e6"
            cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
            body.append(f'<tr style="background:{colour}">{cells}</tr>')
        return (f'<table class="labkit-claims"><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table>")


def claims_table(claims: Sequence[Claim], budget: str) -> ClaimsTable:
    return ClaimsTable(claims, budget)


def output_dir() -> Path:
    """Where a run's claims go: ``$LABKIT_OUTPUT_DIR`` under ``labkit run``, else ``build/lab``."""
    if os.environ.get("LABKIT_OUTPUT_DIR"):
        return Path(os.environ["LABKIT_OUTPUT_DIR"])
    return PACKAGE_DIR.parent / "build" / "lab"


def save_claims(chapter: str, title: str, budget: str, claims: Sequence[Claim], *,
                device: str = "cpu", extra: dict | None = None) -> Path:
    """Write ``<chapter>.claims.json`` atomically and return its path."""
    from . import __version__

    record = {
        "chapter": chapter,
        "title": title,
        "budget": budget,
        "labkit_version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "claims": [dataclasses.asdict(c) | {"asserted_at": list(c.asserted_at)} for c in claims],
        **(extra or {}),
    }
    path = output_dir() / f"{chapter}.claims.json"
    write_text_atomic(json.dumps(record, indent=2, allow_nan=True) + "\n", path)
    return path


def load_claims(path: Path) -> dict:
    return json.loads(Path(path).read_text())
