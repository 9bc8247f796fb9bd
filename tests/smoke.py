"""Shared by the experiment tests (importable because pyproject puts tests/ on the path)."""
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits


def smoke_run(experiment, tmp_path_factory):
    """Yield ``experiment.run`` at the smoke budget, in one process, with a fresh cache and no bars."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("LABKIT_PROGRESS", "off")
    try:
        yield experiment.run(experiment.from_budget("smoke", workers=1))
    finally:
        mp.undo()


def cached_smoke_run(experiment):
    """Yield ``experiment.run`` at the smoke budget, in one process, on the default cache (a rerun of
    the view tests trains nothing) and without progress bars."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_PROGRESS", "off")
    try:
        yield experiment.run(experiment.from_budget("smoke", workers=1))
    finally:
        mp.undo()


def smoke_run_one_thread(experiment, tmp_path_factory):
    """``smoke_run`` with torch and BLAS on one thread, as in the worker pool: threads crawl on a
    busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield from smoke_run(experiment, tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def structure(value):
    """Keys, lengths, types and tensor/array shapes of ``value``, recursively (no values)."""
    if isinstance(value, dict):
        return {k: structure(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [structure(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return (type(value).__name__, tuple(value.shape), str(value.dtype))
    return type(value).__name__


def leaves(value):
    """Every non-container value in ``value``, depth first."""
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from leaves(v)
    else:
        yield value
