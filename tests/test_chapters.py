"""Every chapter end to end at the quick budget: papermill run with a cold cache, its duration
against the budget (in units of a reference workload timed in the same session, so a slower
machine is not a failure), its claims, an nbval re-execution (same seed, same numbers), the quick
book and the reproduction book (committed full-budget runs where fresh, quick pages with a banner
elsewhere) built from them, and headless Chromium on the built pages.

These are the slow tests (minutes): ``pytest -m "not slow"`` skips them.
"""
import json
import os
import subprocess
import sys

import pytest

from labkit import reproductions, report, runner, timing

pytestmark = pytest.mark.slow
CHAPTERS = sorted(runner.chapters())


@pytest.fixture(scope="session")
def reference_s():
    """The reference workload, timed before the chapters run (the same machine, the same load)."""
    return timing.reference_seconds()


@pytest.fixture(scope="session")
def executed(tmp_path_factory, reference_s):
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
def test_chapter_runs_within_quick_budget(executed, slug, reference_s):
    stamp = _stamp(executed, slug)
    units = timing.relative_duration(stamp["duration_s"], reference_s)
    assert units < timing.QUICK_LIMIT_UNITS, (
        f"{slug} took {stamp['duration_s']} s = {units:.0f} reference workloads ({reference_s:.2f} s each) "
        f"at the quick budget; the limit is {timing.QUICK_LIMIT_UNITS:.0f} ({timing.QUICK_TEST_LIMIT_S:.0f} s on the calibration machine)")


@pytest.mark.parametrize("slug", CHAPTERS)
def test_chapter_writes_judged_claims_that_hold_where_asserted(executed, slug):
    _stamp(executed, slug)
    record = json.loads(executed["notebooks"][slug].with_suffix(".claims.json").read_text())
    assert record["budget"] == "quick" and record["claims"], f"{slug} wrote no claims"
    assert record["provenance"]["duration_s"] > 0 and record["provenance"]["source_hash"]
    for c in record["claims"]:
        assert c["status"] in report.STATUSES, (slug, c["name"], c.get("status"))
        if c["status"] in report.COUNTED:
            assert c["low"] is not None and c["high"] is not None and c["noise"], (slug, c["name"])
    broken = [c["name"] for c in record["claims"] if "quick" in c["asserted_at"] and c["status"] != "held"]
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
    """The quick book: every page from the quick run."""
    from labkit.book import build_book

    if executed["failures"]:
        pytest.fail(f"chapters failed: {sorted(executed['failures'])}")
    return build_book(executed["notebooks"], budget="quick", repo_root=runner.REPO_ROOT,
                      out_dir=executed["root"] / "book")


@pytest.fixture(scope="session")
def reproduction_book(executed):
    """The book as `make book` builds it: committed reproductions where fresh, quick elsewhere.

    So that the full-reproduction path is exercised even while every committed reproduction is
    stale, the first stale chapter gets a stand-in reproduction (its quick notebook committed as
    if full) in a copy of results/.
    """
    import shutil

    from labkit.book import build_book

    if executed["failures"]:
        pytest.fail(f"chapters failed: {sorted(executed['failures'])}")
    results = executed["root"] / "results-copy"
    shutil.copytree(runner.RESULTS_DIR, results)
    chapters = runner.chapters()
    reps = {slug: reproductions.reproduction(slug, chapters[slug].path, results) for slug in CHAPTERS}
    stale = reproductions.stale_chapters(reps)
    if stale:
        slug, quick_nb = stale[0], executed["notebooks"][stale[0]]
        reproductions.commit_full_run(slug, chapters[slug].path, quick_nb,
                                      quick_nb.with_suffix(".claims.json"), results)
        reps[slug] = reproductions.reproduction(slug, chapters[slug].path, results)
    pages = reproductions.book_pages(executed["notebooks"], reps)
    index = build_book(pages, budget="quick", repo_root=runner.REPO_ROOT,
                       out_dir=executed["root"] / "book-reproductions", full_dir=results / "full")
    return index, pages


def test_book_has_intro_chapters_and_scoreboard(built_book):
    html = built_book.parent
    assert built_book.exists()
    for slug in CHAPTERS:
        assert (html / "chapters" / f"{slug}.html").exists(), f"{slug} missing from the book"
    scoreboard = (html / "scoreboard.html").read_text()
    for slug in CHAPTERS:
        assert slug in scoreboard


def test_reproduction_book_marks_each_page_with_the_run_it_shows(reproduction_book):
    index, pages = reproduction_book
    assert any(page.budget == "full" for page in pages.values())
    for slug, page in pages.items():
        html = (index.parent / "chapters" / f"{slug}.html").read_text()
        assert f"labkit-run-{page.budget}" in html, f"{slug}: no banner for its {page.budget} run"
    scoreboard = (index.parent / "scoreboard.html").read_text()
    assert all(slug in scoreboard for slug in CHAPTERS)


def _check_in_browser(root, page):
    from labkit.book import check_page_in_browser, serve_directory

    with serve_directory(root) as base_url:
        report_ = check_page_in_browser(f"{base_url}/{page}")
    assert not report_["errors"], report_["errors"]
    assert not report_["external_requests"], report_["external_requests"]
    if page.startswith("chapters/"):
        assert report_["plotly_figures"] > 0, "no plotly figure rendered"
        assert report_["widgets"] > 0, "no widget rendered"


@pytest.mark.browser
@pytest.mark.parametrize("page", [f"chapters/{slug}.html" for slug in CHAPTERS]
                         + ["scoreboard.html", "intro.html", "claims.html"])
def test_pages_render_in_chromium(built_book, page):
    _check_in_browser(built_book.parent, page)


@pytest.mark.browser
def test_reproduction_pages_render_in_chromium(reproduction_book):
    index, pages = reproduction_book
    for slug, page in pages.items():
        if page.budget == "full":
            _check_in_browser(index.parent, f"chapters/{slug}.html")
