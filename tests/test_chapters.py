"""Every chapter end to end at the quick budget: papermill run with a cold cache, its duration
against the budget, its claims, an nbval re-execution (same seed, same numbers), the book built
from the executed notebooks, and headless Chromium on the built pages.

These are the slow tests (minutes): ``pytest -m "not slow"`` skips them.
"""
import json
import os
import subprocess
import sys

import pytest

from labkit import runner

pytestmark = pytest.mark.slow
CHAPTERS = sorted(runner.chapters())


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Run every chapter once per test session, cold: a fresh cache and a fresh build folder."""
    root = tmp_path_factory.mktemp("pipeline")
    saved = os.environ.get("LABKIT_CACHE_DIR")
    os.environ["LABKIT_CACHE_DIR"] = str(root / "cache")
    out, failures = {}, {}
    try:
        for slug in CHAPTERS:
            try:
                out[slug] = runner.run_chapter(slug, "quick", build_dir=root / "executed",
                                               results_dir=root / "results")
            except runner.ChapterFailed as error:
                failures[slug] = error
    finally:
        if saved is None:
            os.environ.pop("LABKIT_CACHE_DIR", None)
        else:
            os.environ["LABKIT_CACHE_DIR"] = saved
    return {"notebooks": out, "failures": failures, "root": root}


def _stamp(executed, slug):
    if slug in executed["failures"]:
        pytest.fail(str(executed["failures"][slug]))
    return json.loads(executed["notebooks"][slug].with_suffix(".stamp.json").read_text())


@pytest.mark.parametrize("slug", CHAPTERS)
def test_chapter_runs_within_quick_budget(executed, slug):
    stamp = _stamp(executed, slug)
    assert stamp["duration_s"] < runner.QUICK_LIMIT_S, (
        f"{slug} took {stamp['duration_s']} s at the quick budget; the limit is {runner.QUICK_LIMIT_S} s")


@pytest.mark.parametrize("slug", CHAPTERS)
def test_chapter_writes_claims_that_hold_where_asserted(executed, slug):
    _stamp(executed, slug)
    record = json.loads(executed["notebooks"][slug].with_suffix(".claims.json").read_text())
    assert record["budget"] == "quick" and record["claims"], f"{slug} wrote no claims"
    assert record["provenance"]["duration_s"] > 0
    broken = [c["name"] for c in record["claims"] if "quick" in c["asserted_at"] and not c["held"]]
    assert not broken, f"{slug}: claims asserted at quick did not hold: {broken}"


@pytest.mark.parametrize("slug", CHAPTERS)
def test_nbval_reexecution_gives_the_same_numbers(executed, slug, tmp_path):
    _stamp(executed, slug)
    env = dict(os.environ, LABKIT_CACHE="off", LABKIT_OUTPUT_DIR=str(tmp_path), LABKIT_PROGRESS="off")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", os.devnull, "-p", "no:cacheprovider", "--nbval-lax",
         str(executed["notebooks"][slug])], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.fixture(scope="session")
def built_book(executed):
    from labkit.book import build_book

    if executed["failures"]:
        pytest.fail(f"chapters failed: {sorted(executed['failures'])}")
    return build_book(executed["notebooks"], budget="quick", repo_root=runner.REPO_ROOT,
                      out_dir=executed["root"] / "book")


def test_book_has_intro_chapters_and_scoreboard(built_book):
    html = built_book.parent
    assert built_book.exists()
    for slug in CHAPTERS:
        assert (html / "chapters" / f"{slug}.html").exists(), f"{slug} missing from the book"
    scoreboard = (html / "scoreboard.html").read_text()
    for slug in CHAPTERS:
        assert slug in scoreboard


@pytest.mark.browser
@pytest.mark.parametrize("page", [f"chapters/{slug}.html" for slug in CHAPTERS] + ["scoreboard.html", "intro.html"])
def test_pages_render_in_chromium(built_book, page):
    from labkit.book import check_page_in_browser, serve_directory

    with serve_directory(built_book.parent) as base_url:
        report = check_page_in_browser(f"{base_url}/{page}")
    assert not report["errors"], report["errors"]
    assert not report["external_requests"], report["external_requests"]
    if page.startswith("chapters/"):
        assert report["plotly_figures"] > 0, "no plotly figure rendered"
        assert report["widgets"] > 0, "no widget rendered"
