"""How long each chapter's quick run takes here, in seconds and in reference workloads.

Runs every chapter (or the ones named) at the quick budget with a cold cache, the way a new user's
first `make book` does, and prints the duration, the same duration in units of
``labkit.timing.reference_seconds()`` (timed before and after, on this machine), and the test
suite's limit in those units. Run it on an idle machine:

    .venv/bin/python benchmarks/chapter_durations.py [03-svmax ...]

The budget is 60 s per chapter on an idle 2-core machine; the test suite only checks the ratio,
so a slower machine is not a failure.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from labkit import runner, timing


def main(names: list[str]) -> None:
    slugs = [runner.find_chapter(n).slug for n in names] or list(runner.chapters())
    before = timing.reference_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LABKIT_CACHE_DIR"] = str(Path(tmp) / "cache")
        durations = {}
        for slug in slugs:
            out = runner.run_chapter(slug, "quick", build_dir=Path(tmp) / "executed",
                                     results_dir=Path(tmp) / "results")
            durations[slug] = float(json.loads(out.with_suffix(".stamp.json").read_text())["duration_s"])
    reference = (before + timing.reference_seconds()) / 2
    print(f"reference workload: {reference:.3f} s (calibrated {timing.REFERENCE_S_CALIBRATED:.3f} s); "
          f"test limit {timing.QUICK_LIMIT_UNITS:.0f} units")
    for slug, seconds in durations.items():
        units = timing.relative_duration(seconds, reference)
        print(f"{slug:32s} {seconds:7.1f} s  {units:6.0f} units  ({units / timing.QUICK_LIMIT_UNITS:.0%} of the limit)")


if __name__ == "__main__":
    main(sys.argv[1:])
