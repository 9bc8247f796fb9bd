"""labkit.book: the scoreboard and toc (fast), then a real offline build checked in Chromium (slow).

The slow tests execute a tiny notebook (a plotly figure through ``labkit.viz.show``, an ipywidgets
slider, an equation, a citation), build the book from it in a temporary folder and load the chapter
page in headless Chromium: the figure and the widget must render, the widget exactly once, with no
script error and no request leaving 127.0.0.1.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from labkit import book

REPO_ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)


def record(chapter, budget, date, claims, title="Tiny: a test chapter"):
    return {"chapter": chapter, "title": title, "budget": budget, "labkit_version": "0.1.0",
            "date": date, "device": "cpu", "claims": claims,
            "provenance": {"command": f"labkit run {chapter} --budget {budget}", "duration_s": 1.5,
                           "finished": date}}


def claim(name, measured, held, asserted_at=("quick", "full"), paper="0.9", check="x > 0.5",
          detail=""):
    return {"name": name, "paper": paper, "measured": measured, "check": check, "held": held,
            "asserted_at": list(asserted_at), "detail": detail}


# --------------------------------------------------------------------------- fast

def test_toc_lists_chapters_in_number_order_then_the_scoreboard():
    toc = book.toc_yaml(["10-l2-caf", "03-svmax", "01-dual-contrastive-gan"])
    assert toc.index("chapters/01-dual") < toc.index("chapters/03-svmax") < toc.index("chapters/10-l2")
    assert "format: jb-book" in toc and "root: intro" in toc
    assert toc.rstrip().endswith("- file: scoreboard")


def test_toc_without_chapters_still_has_the_scoreboard():
    toc = book.toc_yaml([])
    assert "chapters/" not in toc and "file: scoreboard" in toc


def test_scoreboard_shows_both_budgets_with_age_and_held_counts():
    current = {"03-svmax": record("03-svmax", "quick", "2026-11-27T10:00:00+00:00", [
        claim("mean singular value within bounds", 0.5, True),
        claim("beats spread-out at large lr", -0.25, False, asserted_at=["full"])])}
    full = {"03-svmax": record("03-svmax", "full", "2026-11-20T09:00:00+00:00", [
        claim("mean singular value within bounds", 0.51, True),
        claim("beats spread-out at large lr", 0.031, True, asserted_at=["full"])])}
    md = book.scoreboard_markdown(current, full, "quick", now=NOW)
    assert "mean singular value within bounds" in md
    assert "This build (quick): **1 of 2 measured held**" in md
    assert "2026-11-20, 7 days old" in md
    assert "0.031 · ✓ held" in md and "-0.250 · ✗ not reproduced" in md
    assert "2 of 2 measured held" in md


def test_scoreboard_says_not_measured_instead_of_not_reproduced():
    current = {"03-svmax": record("03-svmax", "quick", "2026-11-27T10:00:00+00:00", [
        claim("sweep", None, False, asserted_at=["full"]), claim("bounds", 0.0, True)])}
    md = book.scoreboard_markdown(current, {}, "quick", now=NOW)
    assert "not measured at this budget" in md and "1 of 1 measured held" in md


def test_scoreboard_without_full_run_says_so_and_lists_full_only_chapters():
    current = {"03-svmax": record("03-svmax", "quick", "2026-11-27T10:00:00+00:00",
                                  [claim("a", 1.0, True)])}
    full = {"08-asap-nms": record("08-asap-nms", "full", "2026-11-26T09:00:00+00:00",
                                  [claim("faster", "2.1x", True)], title="ASAP-NMS")}
    md = book.scoreboard_markdown(current, full, "quick", now=NOW)
    assert "no full run recorded" in md.split("## 03")[1]
    assert "## 08-asap-nms · ASAP-NMS" in md
    assert "not in this build" in md
    assert "1 day old" in md


def test_scoreboard_escapes_markdown_in_cells():
    current = {"03-svmax": record("03-svmax", "quick", "2026-11-27T10:00:00+00:00",
                                  [claim("a | b $x$ *c*", "n/a", False)])}
    md = book.scoreboard_markdown(current, {}, "quick", now=NOW)
    row = next(line for line in md.splitlines() if line.startswith("| a"))
    assert r"a \| b \$x\$ \*c\*" in row
    assert row.count(" | ") == 5  # six cells, no stray column


def test_chapter_without_claims_file_is_reported():
    md = book.scoreboard_markdown({"03-svmax": None}, {}, "quick", now=NOW)
    assert "no claims recorded" in md


def nb_with_outputs(*outputs):
    return {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "execution_count": 1,
                       "outputs": [{"output_type": "display_data", "metadata": {}, "data": d}
                                   for d in outputs]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_book_notebook_drops_the_plotly_json_beside_html(tmp_path):
    path = tmp_path / "03-svmax.ipynb"
    path.write_text(json.dumps(nb_with_outputs(
        {book.PLOTLY_MIME: {"data": []}, "text/html": "<div></div>", "text/plain": "fig"})))
    out = json.loads(book.book_notebook(path, "03-svmax"))
    assert set(out["cells"][0]["outputs"][0]["data"]) == {"text/html", "text/plain"}


def test_book_notebook_rejects_a_figure_shown_without_html(tmp_path):
    path = tmp_path / "03-svmax.ipynb"
    path.write_text(json.dumps(nb_with_outputs({book.PLOTLY_MIME: {"data": []}, "text/plain": "f"})))
    with pytest.raises(RuntimeError, match=r"03-svmax: cell\(s\) \[0\].*labkit.viz.show"):
        book.book_notebook(path, "03-svmax")


def test_a_static_folder_is_refused(tmp_path):
    (tmp_path / "_static").mkdir()
    with pytest.raises(RuntimeError, match="_static"):
        book.assemble_book({}, budget="quick", repo_root=REPO_ROOT, book_dir=tmp_path)


# --------------------------------------------------------------------------- slow: build + browser

TINY_CELLS = [
    ("markdown", "# A tiny chapter\n\nIt cites {cite}`taha2021svmax` and has an equation: "
                 "$s_\\mu = \\|E\\|_*/d$.\n\n$$L = \\sqrt{b}/d$$"),
    ("code", "import plotly.graph_objects as go\nfrom labkit.viz import show\n"
             "fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[0, 1, 4]), layout=dict(title='tiny figure'))\n"
             "show(fig)"),
    ("code", "import ipywidgets as widgets\n"
             "widgets.IntSlider(value=3, min=0, max=10, description='$n$')"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import nbformat
    from nbclient import NotebookClient

    root = tmp_path_factory.mktemp("book")
    executed, full = root / "executed", root / "full"
    executed.mkdir()
    full.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown"
                else nbformat.v4.new_code_cell(src) for kind, src in TINY_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(root)}}).execute()
    nbformat.write(nb, executed / "00-tiny.ipynb")
    (executed / "00-tiny.claims.json").write_text(json.dumps(record(
        "00-tiny", "quick", "2026-11-27T10:00:00+00:00",
        [claim("tiny figure draws", 1.0, True), claim("tiny full-only claim", 0.2, False, ["full"])])))
    week_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=7, hours=1)
    (full / "00-tiny.json").write_text(json.dumps(record(
        "00-tiny", "full", week_ago.isoformat(timespec="seconds"),
        [claim("tiny figure draws", 1.0, True), claim("tiny full-only claim", 0.8, True, ["full"])])))
    index = book.build_book({"00-tiny": executed / "00-tiny.ipynb"}, budget="quick",
                            repo_root=REPO_ROOT, out_dir=root / "src", full_dir=full)
    return index.parent


@pytest.mark.slow
def test_build_writes_the_pages(built):
    for page in ("index.html", "intro.html", "chapters/00-tiny.html", "scoreboard.html"):
        assert (built / page).is_file(), page
    chapter = (built / "chapters" / "00-tiny.html").read_text()
    assert 'id="labkit-plotly-' in chapter
    assert "application/vnd.jupyter.widget-view+json" in chapter
    assert chapter.count("labkit/html-manager/embed-amd.js") == 1
    assert chapter.count("labkit/plotly.min.js") == 1
    assert chapter.index("labkit/plotly.min.js") < chapter.index("labkit/require.js")
    assert "cdn.jsdelivr.net" not in chapter and "cdnjs" not in chapter
    scoreboard = (built / "scoreboard.html").read_text()
    assert "tiny figure draws" in scoreboard and "tiny full-only claim" in scoreboard
    assert "7 days old" in scoreboard
    assert (built / "_static" / "labkit" / "mathjax" / "tex-chtml.js").is_file()
    assert not (REPO_ROOT / "book" / "chapters" / "00-tiny.ipynb").exists()


def require_chromium():
    if Path(book.CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser check but {book.CHROMIUM} is missing "
                    "(apt-get install chromium)")
    pytest.skip(f"{book.CHROMIUM} is absent (apt-get install chromium); CI runs this check")


@pytest.mark.slow
@pytest.mark.browser
def test_chapter_renders_offline_in_chromium(built, tmp_path):
    require_chromium()
    with book.serve_directory(built) as base:
        result = book.check_page_in_browser(base + "chapters/00-tiny.html",
                                            screenshot=tmp_path / "chapter.png")
    assert result["errors"] == []
    assert result["external_requests"] == []
    assert result["plotly_figures"] == result["plotly_expected"] == 1
    assert result["widgets"] == result["widgets_expected"] == 1  # drawn exactly once
    assert result["math"] == result["math_expected"] >= 2
    assert (tmp_path / "chapter.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("page", ["scoreboard.html", "intro.html"])
def test_other_pages_load_cleanly(built, page):
    require_chromium()
    with book.serve_directory(built) as base:
        result = book.check_page_in_browser(base + page)
    assert result["errors"] == [] and result["external_requests"] == []
    assert result["widgets"] == result["plotly_figures"] == 0


@pytest.mark.slow
def test_a_failing_build_raises_with_the_log(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Broken\n\nCites {cite}`no-such-paper`.")]
    (tmp_path / "executed").mkdir()
    nbformat.write(nb, tmp_path / "executed" / "00-broken.ipynb")
    for attempt in range(2):  # a rebuild must not pass because Sphinx skipped the unchanged page
        with pytest.raises(RuntimeError, match=r"(?s)jupyter-book build failed.*no-such-paper"):
            book.build_book({"00-broken": tmp_path / "executed" / "00-broken.ipynb"},
                            budget="quick", repo_root=REPO_ROOT, out_dir=tmp_path / "src",
                            full_dir=tmp_path / "none")
    assert (tmp_path / "src" / "_build" / "build.log").is_file()
