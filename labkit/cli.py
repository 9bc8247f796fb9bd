"""The ``labkit`` command: ``list``, ``run``, ``book``.

    labkit list
    labkit run 03-svmax [--budget quick|full] [-p NAME VALUE]...
    labkit book [--budget quick|full] [--force]

Bad input (an unknown chapter, budget or parameter, a wrongly typed value) is a one-line error
that lists the valid values, printed before any work starts; the exit status is 2.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from .config import BUDGETS
from . import runner


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the chapters and their parameters")
    run = sub.add_parser("run", help="execute one chapter with papermill into build/executed/")
    run.add_argument("chapter", help="e.g. 03-svmax, 03 or svmax")
    run.add_argument("--budget", default="quick", help=f"one of {', '.join(BUDGETS)} (default quick)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter of the notebook's parameters cell")
    book = sub.add_parser("book", help="run out-of-date chapters, then build the HTML book")
    book.add_argument("--budget", default="quick", help=f"one of {', '.join(BUDGETS)} (default quick)")
    book.add_argument("--force", action="store_true", help="re-execute every chapter")
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


def _book(args: argparse.Namespace) -> int:
    from .book import build_book

    runner.check_parameters(next(iter(runner.chapters().values())), {"budget": args.budget})
    executed = {}
    for slug, chapter in runner.chapters().items():
        if args.force or not runner.is_fresh(chapter, args.budget):
            print(f"running {slug} at budget {args.budget} ...", flush=True)
            runner.run_chapter(slug, args.budget, command=f"labkit book --budget {args.budget}")
        else:
            print(f"{slug} is up to date")
        executed[slug] = runner.executed_path(chapter, args.budget)
    index = build_book(executed, budget=args.budget, repo_root=runner.REPO_ROOT)
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
