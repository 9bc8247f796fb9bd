"""Stand-ins for a chapter's runs, for the pool shutdown tests (spawn workers import this module).

Each run records its worker's pid as ``<run_dir>/<index>.<pid>`` when it starts, then trains a
tiny model until ``seconds`` pass or ``<run_dir>/stop`` appears, so a test decides when runs end.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch


def spin(index: int, run_dir: str, seconds: float = 120.0) -> int:
    (Path(run_dir) / f"{index}.{os.getpid()}").touch()
    X = torch.randn(64, 16, generator=torch.Generator().manual_seed(index))
    w = torch.zeros(16)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (Path(run_dir) / "stop").exists():
        w -= 1e-3 * X.T @ (X @ w - 1)  # least squares by gradient descent: training, in miniature
        time.sleep(0.02)  # light: the machine is shared
    return index


class _SlowToSave:
    """Pickles slowly, so a run can be caught inside ``cache.save_atomic``."""

    def __init__(self, flag: str):
        self.flag = flag

    def __reduce__(self):
        Path(self.flag).touch()
        time.sleep(120)
        return (dict, ())


def save_slowly(index: int, run_dir: str, cache_dir: str) -> int:
    """A run that writes its own cache entry (as GAN feature classifiers do) and is cut off mid-write."""
    from labkit import cache

    (Path(run_dir) / f"{index}.{os.getpid()}").touch()
    cache.save_atomic({"run": index, "state": _SlowToSave(str(Path(run_dir) / f"saving-{index}"))},
                      Path(cache_dir) / "toy" / f"slow-{index}.pt")
    return index


def spin_or_save(index: int, run_dir: str, cache_dir: str) -> int:
    """Even runs train; odd runs are caught writing a cache entry."""
    return save_slowly(index, run_dir, cache_dir) if index % 2 else spin(index, run_dir)


def quick(index: int) -> dict:
    return {"index": index, "weights": torch.full((256,), float(index))}


def main(argv: list[str]) -> None:
    """``python -m parallel_workload spin|mixed|cached RUN_DIR``: the pool owner a test then kills."""
    from labkit import cache
    from labkit.parallel import map_runs

    mode, run_dir = argv
    if mode == "spin":
        try:
            print(map_runs(spin, [dict(index=i, run_dir=run_dir) for i in range(8)], workers=2), flush=True)
        except KeyboardInterrupt:
            started = sorted(int(p.name.split(".")[0]) for p in Path(run_dir).glob("*.*"))
            (Path(run_dir) / "interrupted").write_text(" ".join(map(str, started)))
    elif mode == "mixed":  # one worker trains, the other is mid-write
        map_runs(spin_or_save, [dict(index=i, run_dir=run_dir, cache_dir=str(cache.cache_dir())) for i in range(2)],
                 workers=2)
    elif mode == "cached":  # the owner writes entries as runs finish, until it is killed
        for start in range(0, 10_000, 4):
            cache.cached_runs("toy", quick, [dict(index=i) for i in range(start, start + 4)], workers=2)
            (Path(run_dir) / f"{start}.{os.getpid()}").touch()


if __name__ == "__main__":
    main(sys.argv[1:])
