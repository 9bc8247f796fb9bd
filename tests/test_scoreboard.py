"""The scoreboard page: counts by the shared rule, intervals, stale full records, escaping."""
import datetime as dt

from labkit import scoreboard

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)


def record(chapter, budget, date, claims, title="SVMax"):
    return {"chapter": chapter, "title": title, "budget": budget, "date": date, "device": "cpu",
            "claims": claims, "provenance": {"command": f"labkit run {chapter} --budget {budget}",
                                             "duration_s": 61.5, "finished": date}}


def claim(name, measured, status, low=None, high=None):
    return {"name": name, "paper": "+0.1", "measured": measured, "check": "gain > 0", "status": status,
            "low": low, "high": high, "noise": "paired t over 5 seeds", "asserted_at": [], "detail": ""}


CLAIMS = [claim("gain", 0.21, "held", 0.13, 0.29), claim("spread", -0.3, "not reproduced", -0.5, -0.1),
          claim("ring", 0.1, "inconclusive", -0.2, 0.4), claim("curve", "flat", "reported"),
          claim("sweep", None, "not measured")]


def test_counts_only_the_three_verdicts_and_shows_intervals():
    md = scoreboard.scoreboard_markdown({"03-svmax": record("03-svmax", "full", "2026-11-20T09:00:00+00:00", CLAIMS)},
                                        {"03-svmax": "full"}, {}, now=NOW)
    row = next(line for line in md.splitlines() if line.startswith("| [03-svmax]"))
    assert "| full (2026-11-20, 7 days old) | 1 | 1 | 1 | 1 | 62 s |" in row
    assert "0.210 \\[0.130, 0.290\\] · ✓ held" in md
    assert "-0.300 \\[-0.500, -0.100\\] · ✗ not reproduced" in md
    assert "～ inconclusive" in md and "not measured at this budget" in md
    assert "paired t over 5 seeds" in md and "(claims.md)" in md


def test_quick_page_shows_the_stale_full_record_beside():
    old = record("03-svmax", "full", "2026-11-01T09:00:00+00:00",
                 [{"name": "gain", "measured": 0.3, "held": True, "check": "x", "paper": "p"}])
    md = scoreboard.scoreboard_markdown({"03-svmax": record("03-svmax", "quick", "2026-11-27T10:00:00+00:00", CLAIMS)},
                                        {"03-svmax": "quick"}, {"03-svmax": old}, now=NOW)
    assert "Committed full run (stale, 2026-11-01, 26 days old)" in md
    assert "0.300 · unjudged (old rule)" in md


def test_chapter_only_in_full_records_and_missing_claims_are_said():
    full = {"08-asap-nms": record("08-asap-nms", "full", "2026-11-26T09:00:00+00:00", CLAIMS, "ASAP-NMS")}
    md = scoreboard.scoreboard_markdown({"03-svmax": None}, {"03-svmax": "quick"}, full, now=NOW)
    assert "no claims recorded" in md.lower()
    assert "## 08-asap-nms · ASAP-NMS" in md and "not in this build" in md.lower()


def test_markdown_in_cells_is_escaped():
    bad = [claim("a | b $x$ *c*", 1.0, "held", 0.5, 1.5)]
    md = scoreboard.scoreboard_markdown({"03-svmax": record("03-svmax", "full", "2026-11-27T10:00:00+00:00", bad)},
                                        {"03-svmax": "full"}, {}, now=NOW)
    row = next(line for line in md.splitlines() if line.startswith("| a"))
    assert r"a \| b \$x\$ \*c\*" in row
    assert row.count(" | ") == 4  # five cells, no stray column
