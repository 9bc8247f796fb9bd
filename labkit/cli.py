"""The ``labkit`` command: ``list``, ``run``, ``book``.

    labkit list
    labkit run 03-svmax [--budget quick|full] [-p NAME VALUE]...
    labkit book [--budget quick|full] [--force] [--workers N]

``labkit book`` renders each chapter from its committed full-budget reproduction when that is up to
date with the chapter's source, else from a quick run (executed if needed) with a banner saying so.
``--budget quick`` renders every chapter's quick run; ``--budget full`` first re-runs the stale
reproductions at the full budget (20 minutes a chapter) and commits them to ``results/full/``.
``--workers N`` runs N chapters side by side, each in its own process with an equal share of the
cores for its own runs (``LABKIT_WORKERS``).

Bad input (an unknown chapter, budget or parameter, a wrongly typed value) is a one-line error
that lists the valid values, printed before any work starts; the exit status is 2.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from .config import BUDGETS, check_choice
from . import reproductions, runner


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the chapters and their parameters")
    run = sub.add_parser("run", help="execute one chapter with papermill into build/executed/")
    run.add_argument("chapter", help="e.g. 03-svmax, 03 or svmax")
    run.add_argument("--budget", default="quick", help=f"one of {', '.join(BUDGETS)} (default quick)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter of the notebook's parameters cell")
    book = sub.add_parser("book", help="build the HTML book from the committed reproductions (quick "
                                       "runs where they are stale)")
    book.add_argument("--budget", default=None,
                      help="quick: every page from a quick run; full: re-run stale reproductions first "
                           "(default: reproductions, quick where stale)")
    book.add_argument("--force", action="store_true", help="re-execute the quick runs the book uses")
    book.add_argument("--workers", default="1",
                      help="chapters run side by side (default 1; 0: one per core), each with an equal "
                           "share of the cores")
    return parser


def _list() -> int:
    for slug, chapter in runner.chapters().items():
        params = ", ".join(f"{k}={v!r}" for k, v in chapter.parameters().items())
        print(f"{slug:32s} {chapter.title}\n{'':32s} parameters: {params}")
    return 0


def _run(args: argparse.Namespace) -> int:
    chapter = runner.find_chapter(args.chapter)
    params = runner.check_parameters(chapter, {n: runner.parse_value(v) for n, v in args.parameter})
    budget = params.pop("budget", args.budget)
    runner.check_parameters(chapter, {"budget": budget})
    command = "labkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = runner.run_chapter(chapter.slug, budget, params, command=command)
    print(f"executed {chapter.slug} at budget {budget}: {out}")
    return 0


def _quick_runs(slugs: list[str], force: bool, workers: int = 1) -> dict:
    executed, pending = {}, []
    for slug in slugs:
        chapter = runner.chapters()[slug]
        if force or not runner.is_fresh(chapter, "quick"):
            pending.append(slug)
        else:
            print(f"{slug}: quick run is up to date")
        executed[slug] = runner.executed_path(chapter, "quick")
    _run_chapters([(slug, "quick", "labkit book") for slug in pending], workers)
    return executed


def _run_chapters(jobs: list[tuple[str, str, str]], workers: int) -> None:
    """Run ``(slug, budget, command)`` jobs, ``workers`` chapters at a time (0: one per core).

    Side by side, each chapter runs in a process of its own (``run_chapter`` sets environment
    variables for its kernel) and gets ``cores // workers`` worker processes for its runs. Every
    chapter runs to its end; the first failure is raised once all have finished.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    from .parallel import available_workers

    side_by_side = min(workers or available_workers(), len(jobs))
    for slug, budget, _ in jobs:
        print(f"running {slug} at the {budget} budget ...", flush=True)
    if side_by_side <= 1:
        for slug, budget, command in jobs:
            runner.run_chapter(slug, budget, command=command)
        return
    share = max(1, available_workers() // side_by_side)
    context = multiprocessing.get_context("spawn")
    failures = []
    with ProcessPoolExecutor(side_by_side, mp_context=context, initializer=_chapter_process,
                             initargs=(share, runner.NOTEBOOKS_DIR, runner.BUILD_DIR, runner.RESULTS_DIR)) as pool:
        futures = {pool.submit(runner.run_chapter, slug, budget, command=command): slug
                   for slug, budget, command in jobs}
        for future in as_completed(futures):
            try:
                future.result()
                print(f"{futures[future]}: done", flush=True)
            except runner.ChapterFailed as error:
                print(f"labkit: {error}", file=sys.stderr, flush=True)
                failures.append(error)
    if failures:
        raise failures[0]


def _chapter_process(cores: int, notebooks_dir, build_dir, results_dir) -> None:
    """A side-by-side chapter's process: its share of the cores, and the parent's folders."""
    import os

    os.environ["LABKIT_WORKERS"] = str(cores)
    runner.NOTEBOOKS_DIR, runner.BUILD_DIR, runner.RESULTS_DIR = notebooks_dir, build_dir, results_dir


def _book(args: argparse.Namespace) -> int:
    from .book import build_book
    from .parallel import check_workers

    if args.budget is not None:
        check_choice("budget", args.budget, ("quick", "full"))
    workers = check_workers(runner.parse_value(args.workers), "--workers")
    chapters = runner.chapters()
    reps = {slug: reproductions.reproduction(slug, ch.path, runner.RESULTS_DIR) for slug, ch in chapters.items()}
    if args.budget == "full":
        stale = reproductions.stale_chapters(reps)
        _run_chapters([(slug, "full", f"labkit run {slug} --budget full") for slug in stale], workers)
        for slug in stale:
            reps[slug] = reproductions.reproduction(slug, chapters[slug].path, runner.RESULTS_DIR)
    if args.budget == "quick":
        pages = _quick_runs(list(chapters), args.force, workers)
    else:
        for slug, rep in reps.items():
            print(f"{slug}: {'full-budget reproduction' if rep.fresh else 'quick run, since ' + rep.why_stale()}")
        quick = _quick_runs(reproductions.stale_chapters(reps), args.force, workers)
        pages = reproductions.book_pages(quick, reps)
    index = build_book(pages, budget=args.budget or "quick", repo_root=runner.REPO_ROOT)
    print(f"book built: {index}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        if args.command == "run":
            return _run(args)
        return _book(args)
    except (ValueError, TypeError) as error:
        print(f"labkit: error: {error}", file=sys.stderr)
        return 2
    except runner.ChapterFailed as error:
        print(f"labkit: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
