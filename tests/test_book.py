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


def claim(name, measured, status, low=None, high=None, paper="0.9", check="x > 0.5", detail=""):
    return {"name": name, "paper": paper, "measured": measured, "check": check, "status": status,
            "low": low, "high": high, "noise": "paired t over 3 seeds" if low is not None else "",
            "asserted_at": [], "detail": detail}


# --------------------------------------------------------------------------- fast

def test_toc_lists_chapters_in_number_order_then_the_rule_and_the_scoreboard():
    toc = book.toc_yaml(["10-l2-caf", "03-svmax", "01-dual-contrastive-gan"])
    assert toc.index("chapters/01-dual") < toc.index("chapters/03-svmax") < toc.index("chapters/10-l2")
    assert "format: jb-book" in toc and "root: intro" in toc
    assert toc.index("file: claims") < toc.index("file: scoreboard")
    assert toc.rstrip().endswith("- file: scoreboard")


def test_toc_without_chapters_still_has_the_scoreboard():
    toc = book.toc_yaml([])
    assert "chapters/" not in toc and "file: scoreboard" in toc


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


def test_book_notebook_puts_the_banner_below_the_title(tmp_path):
    nb = nb_with_outputs({"text/plain": "x"})
    nb["cells"].insert(0, {"cell_type": "markdown", "metadata": {}, "source": "# Title\n\ntext"})
    path = tmp_path / "03-svmax.ipynb"
    path.write_text(json.dumps(nb))
    out = json.loads(book.book_notebook(path, "03-svmax", "**Quick run** because stale", "quick"))
    banner = out["cells"][1]
    assert out["cells"][0]["source"].startswith("# Title") and banner["cell_type"] == "markdown"
    assert ":class: warning labkit-run-quick" in banner["source"] and "because stale" in banner["source"]
    full = json.loads(book.book_notebook(path, "03-svmax", "reproduced", "full"))["cells"][1]["source"]
    assert "labkit-run-full" in full and "Full-budget reproduction" in full


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
        [claim("tiny figure draws", 1.0, "held", 0.6, 1.4), claim("tiny full-only claim", None, "not measured")])))
    week_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=7, hours=1)
    (full / "00-tiny.json").write_text(json.dumps(record(
        "00-tiny", "full", week_ago.isoformat(timespec="seconds"),
        [claim("tiny figure draws", 1.0, "held", 0.6, 1.4), claim("tiny full-only claim", 0.8, "inconclusive", 0.1, 1.5)])))
    page = book.Page("00-tiny", executed / "00-tiny.ipynb", executed / "00-tiny.claims.json", "quick",
                     "**Quick run** because `no reproduction` is committed yet.")
    index = book.build_book({"00-tiny": page}, budget="quick",
                            repo_root=REPO_ROOT, out_dir=root / "src", full_dir=full)
    return index.parent


@pytest.mark.slow
def test_build_writes_the_pages(built):
    for page in ("index.html", "intro.html", "chapters/00-tiny.html", "scoreboard.html"):
        assert (built / page).is_file(), page
    chapter = (built / "chapters" / "00-tiny.html").read_text()
    assert 'id="labkit-plotly-' in chapter
    assert "labkit-run-quick" in chapter and "is committed yet" in chapter  # the banner, as an admonition
    assert "application/vnd.jupyter.widget-view+json" in chapter
    assert chapter.count("labkit/html-manager/embed-amd.js") == 1
    assert chapter.count("labkit/plotly.min.js") == 1
    assert chapter.index("labkit/plotly.min.js") < chapter.index("labkit/require.js")
    assert "cdn.jsdelivr.net" not in chapter and "cdnjs" not in chapter
    scoreboard = (built / "scoreboard.html").read_text()
    assert "tiny figure draws" in scoreboard and "tiny full-only claim" in scoreboard
    assert "7 days old" in scoreboard and "[0.600, 1.400]" in scoreboard
    assert (built / "claims.html").is_file()
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
@pytest.mark.parametrize("page", ["scoreboard.html", "intro.html", "claims.html"])
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
