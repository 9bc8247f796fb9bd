"""The book's scoreboard page: every chapter's claims, judged by the shared rule.

For each chapter the page the book shows (the fresh full-budget reproduction, or the quick run
when there is none) gives the claims: ours with the 95 % interval and where it comes from, and the
verdict (``labkit.report``). Only held / not reproduced / inconclusive are counted; reported
observations are listed. When the page shows the quick run and an older full-budget record is
committed, its outcome is shown beside, marked stale.
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import Mapping

from .report import COUNTED, claim_status, format_number

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|$~&])")  # what is special inside a table cell
_MARK = {"held": "✓ held", "not reproduced": "✗ not reproduced", "inconclusive": "～ inconclusive",
         "reported": "reported", "not measured": "not measured at this budget"}


def md(text: object) -> str:
    """Plain text for a pipe-table cell: escape Markdown/MyST syntax and keep it on one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def number(x: object) -> str:
    """A saved value as the claims table writes it (``labkit.report``), text left as it is."""
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
        return "—" if x is None else str(x)
    return str(x) if isinstance(x, int) else format_number(x)


def outcome(claim: dict | None) -> str:
    """``0.210 [0.135, 0.285] · ✓ held`` for one saved claim."""
    if claim is None:
        return "—"
    status = claim_status(claim)
    if status == "not measured":
        return _MARK[status]
    interval = ""
    if claim.get("low") is not None and claim.get("high") is not None:
        interval = f" [{number(claim['low'])}, {number(claim['high'])}]"
    mark = _MARK.get(status, status)
    return f"{md(number(claim.get('measured')) + interval)} · {mark}"


def _when(record: dict) -> _dt.datetime | None:
    stamp = record.get("date") or record.get("provenance", {}).get("finished")
    try:
        when = _dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def age(record: dict, now: _dt.datetime) -> str:
    when = _when(record)
    if when is None:
        return "date unknown"
    days = max((now - when).days, 0)
    return f"{when.date().isoformat()}, {days} day{'s' if days != 1 else ''} old"


def counts(record: dict | None) -> dict[str, int]:
    statuses = [claim_status(c) for c in (record or {}).get("claims", [])]
    return {s: statuses.count(s) for s in COUNTED + ("reported",)}


def _duration(record: dict | None) -> str:
    seconds = ((record or {}).get("provenance") or {}).get("duration_s")
    return "—" if seconds is None else f"{seconds:.0f} s"


def scoreboard_markdown(shown: Mapping[str, dict | None], budgets: Mapping[str, str],
                        full: Mapping[str, dict], *, now: _dt.datetime | None = None) -> str:
    """The page. ``shown``: slug → claims record of the run the book shows (None: no claims file);
    ``budgets``: slug → that run's budget; ``full``: slug → the committed full-budget record."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    slugs = sorted(set(shown) | set(full), key=lambda s: (int(s[:2]) if s[:2].isdigit() else 99, s))
    out = ["# Scoreboard", "",
           "Every chapter's claims as the book shows them: from the chapter's full-budget "
           "reproduction where one is committed and up to date, else from the quick plumbing run "
           "(marked *quick*). A claim is **held** only when its 95 % interval excludes the "
           "threshold on the paper's side, **not reproduced** when it excludes it on the other side, "
           "and **inconclusive** (within noise) otherwise; see [How claims are judged](claims.md). "
           "Reported observations carry no check and are not counted.", "",
           "| Chapter | Page shows | Held | Not reproduced | Inconclusive | Reported | Run time |",
           "|---|---|---|---|---|---|---|"]
    for slug in slugs:
        rec = shown.get(slug)
        if slug not in shown:
            out.append(f"| {md(slug)} | not in this build | | | | | |")
            continue
        if rec is None:
            out.append(f"| [{md(slug)}](#scoreboard-{slug}) | no claims recorded | | | | | |")
            continue
        n = counts(rec)
        page = f"{budgets.get(slug, rec.get('budget', '?'))} ({md(age(rec, now))})"
        out.append(f"| [{md(slug)}](#scoreboard-{slug}) | {page} | {n['held']} | {n['not reproduced']} | "
                   f"{n['inconclusive']} | {n['reported']} | {_duration(rec)} |")
    for slug in slugs:
        out += _chapter_section(slug, shown.get(slug), budgets.get(slug), full.get(slug), slug in shown, now)
    return "\n".join(out) + "\n"


def _chapter_section(slug: str, rec: dict | None, budget: str | None, frec: dict | None, built: bool,
                     now: _dt.datetime) -> list[str]:
    title = (rec or frec or {}).get("title") or slug
    heading = md(slug) if title == slug else f"{md(slug)} · {md(title)}"
    out = ["", f"(scoreboard-{slug})=", f"## {heading}", ""]
    if not built:
        return out + [f"Not in this build; committed full run: {md(age(frec or {}, now))}.", ""]
    if rec is None:
        return out + ["No claims recorded.", ""]
    budget = budget or rec.get("budget", "?")
    prov = rec.get("provenance") or {}
    out += [f"Shown: the **{md(budget)}** run of {md(age(rec, now))} on {md(rec.get('device', '?'))}"
            f" ({_duration(rec)}, `{md(prov.get('command', '?'))}`). Read [the chapter](chapters/{slug}.ipynb).", ""]
    stale_full = frec if budget != "full" and frec else None
    head = ["Claim", "Paper", f"Ours ({md(budget)}) [95 % interval] · verdict", "Check", "Interval from"]
    if stale_full:
        head.insert(3, f"Committed full run (stale, {md(age(stale_full, now))})")
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    full_by_name = {c["name"]: c for c in (stale_full or {}).get("claims", [])}
    for claim in rec.get("claims", []):
        check = claim.get("check", "") + (f"; {claim['detail']}" if claim.get("detail") else "")
        row = [md(claim["name"]), md(claim.get("paper", "")), outcome(claim), md(check),
               md(claim.get("noise", "") or "—")]
        if stale_full:
            row.insert(3, outcome(full_by_name.get(claim["name"])) if claim["name"] in full_by_name else "—")
        out.append("| " + " | ".join(row) + " |")
    return out
