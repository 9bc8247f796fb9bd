"""Independent training runs side by side, one process per core.

Chapters train many tiny models (seeds × learning rates × variants). Such models cannot use more
than one core each, so ``map_runs`` spreads the runs over worker processes (started with *spawn*,
so no OpenMP state is inherited, each limited to one thread: torch's and NumPy/SciPy's BLAS, whose
own threads made a busy 2-core machine 50–70× slower on small matrices). Every run seeds itself from its own
arguments, so results do not depend on which worker ran it or in which order.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Mapping, Sequence

_POOL: ProcessPoolExecutor | None = None
_POOL_SIZE = 0


def available_workers() -> int:
    """Cores this process may use (``LABKIT_WORKERS`` overrides)."""
    if os.environ.get("LABKIT_WORKERS"):
        return max(1, int(os.environ["LABKIT_WORKERS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    import signal

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")  # for the life of the worker
    # An interrupt (Lab's stop button, a kernel shutdown) is for the parent, which cancels the
    # pending runs; workers would otherwise each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(workers: int) -> ProcessPoolExecutor:
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE != workers:
        shutdown()
        context = multiprocessing.get_context("spawn")
        _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)
        _POOL_SIZE = workers
    return _POOL


def shutdown() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(cancel_futures=True)
        _POOL = None


atexit.register(shutdown)


def map_runs(fn: Callable[..., Any], runs: Sequence[Mapping[str, Any]], workers: int = 0,
             desc: str | None = None) -> list[Any]:
    """``[fn(**kwargs) for kwargs in runs]``, over ``workers`` processes (0: one per core).

    ``fn`` must be importable (defined in a module, not a notebook). With one worker, or one run,
    everything runs here, single-threaded like the workers, so the numbers are the same.
    """
    from .train import progress_bar

    if not runs:
        return []
    workers = workers or available_workers()
    bar = progress_bar(len(runs), desc or f"{getattr(fn, '__name__', 'runs')} ({len(runs)} runs)")
    try:
        if workers <= 1 or len(runs) <= 1:
            return [_tick(bar, fn(**kwargs)) for kwargs in _single_threaded(runs)]
        pool = _pool(min(workers, len(runs)) if _POOL is None else max(_POOL_SIZE, min(workers, len(runs))))
        return [_tick(bar, result) for result in pool.map(_call, [(fn, dict(kwargs)) for kwargs in runs])]
    finally:
        if bar is not None:
            bar.close()


def _tick(bar, result: Any) -> Any:
    if bar is not None:
        bar.update(1)
    return result


def _single_threaded(runs: Sequence[Mapping[str, Any]]):
    """Yield the runs with torch and BLAS limited to one thread, as in the workers, so numbers match."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield from runs
    finally:
        torch.set_num_threads(threads)


def _call(job: tuple[Callable[..., Any], dict[str, Any]]) -> Any:
    fn, kwargs = job
    return fn(**kwargs)
