"""Result tables a reader can read: full headers with units, numbers rounded, nothing unmeasured.

``result_table(rows, columns)`` returns a ``ResultTable``: it renders as an HTML table in JupyterLab
and the book (no truncated headers, unlike a plotly table) and as aligned plain text for nbval and
terminals. A column whose every value is missing (``None`` or NaN: a std over one seed, a metric a
budget does not measure) is left out, and the caption says which were.

``columns`` maps a row key to a ``Column`` (or just a header string): the header, its unit and how to
format the number. ``mean_std`` fuses a mean and its std into one ``0.81 ± 0.02`` cell.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import Any, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Column:
    header: str
    unit: str = ""
    digits: int = 3
    percent: bool = False  # show a fraction as a percentage

    def title(self) -> str:
        return f"{self.header} ({self.unit})" if self.unit else self.header

    def format(self, value: Any) -> str:
        if _missing(value):
            return "—"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)
        if self.percent:
            return f"{100 * value:.{max(self.digits - 2, 0)}f} %"
        if isinstance(value, int):
            return f"{value:,}"
        return f"{value:.{self.digits}f}" if abs(value) < 1e5 else f"{value:.3g}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``"0.812 ± 0.021"``; just the mean when the std is missing (one seed)."""
    if _missing(mean):
        return "—"
    return f"{mean:.{digits}f}" if _missing(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


class ResultTable:
    def __init__(self, rows: Sequence[Mapping[str, Any]], columns: Mapping[str, Column | str],
                 title: str = "", note: str = ""):
        cols = {k: c if isinstance(c, Column) else Column(str(c)) for k, c in columns.items()}
        self.dropped = [c.title() for k, c in cols.items() if rows and all(_missing(r.get(k)) for r in rows)]
        self.columns = {k: c for k, c in cols.items() if c.title() not in self.dropped}
        self.rows, self.title, self.note = list(rows), title, note

    def cells(self) -> list[list[str]]:
        return [[c.format(row.get(k)) for k, c in self.columns.items()] for row in self.rows]

    def caption(self) -> str:
        parts = [self.note] if self.note else []
        if self.dropped:
            parts.append(f"Not measured at this budget: {', '.join(self.dropped)}.")
        return " ".join(parts)

    def __repr__(self) -> str:
        table = [[c.title() for c in self.columns.values()]] + self.cells()
        widths = [max(len(r[i]) for r in table) for i in range(len(self.columns))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
        head = [self.title] if self.title else []
        return "\n".join(head + lines + ([self.caption()] if self.caption() else []))

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c.title())}</th>" for c in self.columns.values())
        body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>"
                       for row in self.cells())
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        note = f"<p><small>{html.escape(self.caption())}</small></p>" if self.caption() else ""
        return (f'<table class="labkit-results">{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>{note}")


def result_table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, Column | str], *,
                 title: str = "", note: str = "") -> ResultTable:
    """A readable table of ``rows`` (dicts) over ``columns`` (key → ``Column`` or header)."""
    if not isinstance(columns, Mapping) or not columns:
        raise ValueError("columns must be a non-empty mapping of row key -> Column or header")
    return ResultTable(rows, columns, title, note)
