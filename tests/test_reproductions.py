"""Committed reproductions: a chapter's source, its hash, and which run each book page shows."""
import ast
import json

import nbformat
import pytest

from labkit import reproductions as rep
from labkit import runner


def _notebook(path, code="from labkit.methods import svmax\nprint(1)", outputs=()):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(code)
    cell.outputs = [nbformat.v4.new_output("stream", text=t) for t in outputs]
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny"), cell]
    nbformat.write(nb, path)
    return path


def test_sources_follow_labkit_imports_and_nothing_else(tmp_path):
    sources = {str(p) for p in rep.chapter_sources(runner.find_chapter("03-svmax").path)}
    assert {"labkit/methods/svmax.py", "labkit/experiments/svmax.py", "labkit/report.py",
            "labkit/__init__.py", "labkit/methods/__init__.py"} <= sources
    assert "labkit/methods/jpeg.py" not in sources and "labkit/book.py" not in sources
    tiny = {str(p) for p in rep.chapter_sources(_notebook(tmp_path / "00-tiny.ipynb"))}
    assert "labkit/methods/svmax.py" in tiny and "labkit/methods/lottery.py" not in tiny


def test_relative_imports_resolve_for_modules_and_packages():
    assert rep._imported_modules(ast.parse("from .cache import X"), "labkit.report") >= {"labkit.cache"}
    assert "labkit.reproductions" in rep._imported_modules(ast.parse("from . import reproductions"), "labkit.cli")
    assert "labkit.viz.show" in rep._imported_modules(ast.parse("from .show import show"), "labkit.viz")
    assert "labkit.config" in rep._imported_modules(ast.parse("from ..config import x"), "labkit.viz.plots")
    assert rep._imported_modules(ast.parse("import numpy, os"), "labkit.report") == set()


def test_hash_follows_cell_sources_not_outputs(tmp_path):
    a = rep.chapter_source_hash(_notebook(tmp_path / "a.ipynb"))
    assert a == rep.chapter_source_hash(_notebook(tmp_path / "b.ipynb", outputs=("printed",)))
    assert a != rep.chapter_source_hash(_notebook(tmp_path / "c.ipynb", code="from labkit.methods import svmax\nprint(2)"))
    assert a != rep.chapter_source_hash(_notebook(tmp_path / "d.ipynb", code="from labkit.methods import jpeg\nprint(1)"))


def _commit(tmp_path, notebook):
    executed = tmp_path / "build" / "00-tiny.ipynb"
    executed.parent.mkdir(exist_ok=True)
    nb = json.loads(notebook.read_text())
    nb["cells"][1]["outputs"] = [{"output_type": "display_data", "metadata": {}, "data": {
        "application/vnd.plotly.v1+json": {"data": []}, "text/html": "<div></div>", "text/plain": "f"}}]
    executed.write_text(json.dumps(nb))
    claims = executed.with_suffix(".claims.json")
    claims.write_text(json.dumps({"chapter": "00-tiny", "budget": "full", "date": "2026-12-01T10:00:00+00:00",
                                  "device": "cpu", "claims": [], "provenance": {"duration_s": 600.0,
                                                                                "command": "labkit run 00-tiny --budget full"}}))
    return rep.commit_full_run("00-tiny", notebook, executed, claims, tmp_path / "results")


def test_commit_keeps_html_drops_plotly_json_and_records_the_hash(tmp_path):
    notebook = _notebook(tmp_path / "00-tiny.ipynb")
    nb_path, json_path = _commit(tmp_path, notebook)
    data = json.loads(nb_path.read_text())["cells"][1]["outputs"][0]["data"]
    assert set(data) == {"text/html", "text/plain"}
    record = json.loads(json_path.read_text())
    assert record["provenance"]["source_hash"] == rep.chapter_source_hash(notebook)


def test_book_pages_use_fresh_reproductions_and_say_why_otherwise(tmp_path):
    notebook = _notebook(tmp_path / "00-tiny.ipynb")
    quick = {"00-tiny": tmp_path / "quick" / "00-tiny.ipynb"}
    missing = rep.reproduction("00-tiny", notebook, tmp_path / "results")
    page = rep.book_pages(quick, {"00-tiny": missing})["00-tiny"]
    assert page.budget == "quick" and "no full-budget reproduction" in page.banner
    _commit(tmp_path, notebook)
    fresh = rep.reproduction("00-tiny", notebook, tmp_path / "results")
    page = rep.book_pages(quick, {"00-tiny": fresh})["00-tiny"]
    assert fresh.fresh and page.budget == "full" and page.notebook == tmp_path / "results" / "full" / "00-tiny.ipynb"
    assert "2026-12-01" in page.banner and "10.0 min" in page.banner and "labkit run 00-tiny --budget full" in page.banner
    _notebook(notebook, code="from labkit.methods import svmax\nprint('changed')")
    stale = rep.reproduction("00-tiny", notebook, tmp_path / "results")
    page = rep.book_pages(quick, {"00-tiny": stale})["00-tiny"]
    assert not stale.fresh and page.budget == "quick" and "older than this chapter's source" in page.banner
    assert rep.stale_chapters({"00-tiny": stale}) == ["00-tiny"]
    with pytest.raises(KeyError, match="00-tiny: no fresh reproduction and no quick run"):
        rep.book_pages({}, {"00-tiny": stale})


def test_committed_reproductions_are_complete_judged_and_small():
    from labkit.report import COUNTED, STATUSES

    for nb_path in sorted((runner.RESULTS_DIR / "full").glob("*.ipynb")):
        record = json.loads(nb_path.with_suffix(".json").read_text())
        assert record["budget"] == "full" and record["provenance"]["source_hash"], nb_path.name
        for c in record["claims"]:
            assert c["status"] in STATUSES, (nb_path.name, c["name"])
            assert c["status"] not in COUNTED or c["low"] is not None, (nb_path.name, c["name"])
        assert nb_path.stat().st_size < 6 * 2**20, f"{nb_path.name} is {nb_path.stat().st_size} bytes"
