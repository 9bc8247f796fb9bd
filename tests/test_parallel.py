import os
import threading
import time

import numpy as np
import pytest
import torch

from labkit import cache, parallel
from labkit.parallel import available_workers, check_workers, map_runs


def _square_and_seeded_noise(x: int, seed: int) -> dict:
    return {"square": x * x, "noise": torch.rand(3, generator=torch.Generator().manual_seed(seed))}


def test_map_runs_same_results_serial_and_parallel(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    runs = [dict(x=i, seed=i) for i in range(5)]
    serial = map_runs(_square_and_seeded_noise, runs, workers=1)
    parallel = map_runs(_square_and_seeded_noise, runs, workers=2)
    assert [r["square"] for r in parallel] == [0, 1, 4, 9, 16]
    assert all(torch.equal(a["noise"], b["noise"]) for a, b in zip(serial, parallel))
    assert map_runs(_square_and_seeded_noise, [], workers=2) == []


def test_cached_runs_computes_each_distinct_run_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    calls = []

    def counted(x, seed):
        calls.append(x)
        return _square_and_seeded_noise(x, seed)

    runs = [dict(x=1, seed=0), dict(x=2, seed=0), dict(x=1, seed=0)]
    first = cache.cached_runs("toy", counted, runs, workers=1)
    assert sorted(calls) == [1, 2] and [r["square"] for r in first] == [1, 4, 1]
    again = cache.cached_runs("toy", counted, runs[:2] + [dict(x=3, seed=1)], workers=1)
    assert sorted(calls) == [1, 2, 3] and torch.equal(again[0]["noise"], first[0]["noise"])


@pytest.mark.parametrize("bad", [-3, -1, 1.5, 2.0, "2", None, True])
def test_bad_worker_counts_are_one_line_errors(bad):
    with pytest.raises(ValueError) as error:
        check_workers(bad)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"workers={bad!r} is not valid")
    assert "0 (one worker per core) or a positive integer" in message
    with pytest.raises(ValueError, match="workers="):
        map_runs(_square_and_seeded_noise, [dict(x=1, seed=0)], workers=bad)


def test_worker_counts_that_are_allowed():
    assert check_workers(0) == 0 and check_workers(3) == 3 and check_workers(np.int64(2)) == 2


@pytest.mark.parametrize("value, expected", [("3", 3), (" 1 ", 1), ("", None), ("0", None)])
def test_labkit_workers_caps_the_pool(monkeypatch, value, expected):
    monkeypatch.setenv("LABKIT_WORKERS", value)
    assert available_workers() == (expected or len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("value", ["-2", "two", "1.5"])
def test_a_bad_labkit_workers_is_a_one_line_error(monkeypatch, value):
    monkeypatch.setenv("LABKIT_WORKERS", value)
    with pytest.raises(ValueError, match=rf"^LABKIT_WORKERS={value!r} is not valid; use 0 \(one worker per core\)"):
        available_workers()


def test_a_pool_first_used_from_a_thread_outlives_the_thread(monkeypatch):
    """Linux also sends the parent-death signal when the *thread* that started a worker ends; only
    the death of the parent process may stop a worker."""
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    parallel.shutdown()
    runs = [dict(x=i, seed=i) for i in range(4)]
    done = {}
    thread = threading.Thread(target=lambda: done.update(first=map_runs(_square_and_seeded_noise, runs, workers=2)))
    thread.start()
    thread.join()
    workers = list(parallel._POOL._processes.values())
    time.sleep(1.0)  # let the signal arrive
    assert all(worker.is_alive() for worker in workers)
    again = map_runs(_square_and_seeded_noise, runs, workers=2)
    assert [r["square"] for r in again] == [r["square"] for r in done["first"]] == [0, 1, 4, 9]
