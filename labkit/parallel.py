"""Independent training runs side by side, one process per core.

Chapters train many tiny models (seeds × learning rates × variants). Such models cannot use more
than one core each, so ``map_runs`` spreads the runs over worker processes (started with *spawn*,
so no OpenMP state is inherited, each limited to one thread: torch's and NumPy/SciPy's BLAS, whose
own threads made a busy 2-core machine 50–70× slower on small matrices). Every run seeds itself from its own
arguments, so results do not depend on which worker ran it or in which order.

Workers die with the process that owns the pool, however it dies (SIGTERM, SIGKILL, a kernel
restart or a closed terminal): nothing else would stop them, and orphans go on training and hold
their memory. On Linux the kernel signals each worker when its parent exits
(``prctl(PR_SET_PDEATHSIG)``); everywhere, a thread in each worker also watches the parent
(``multiprocessing.parent_process()``'s sentinel and ``os.getppid()``, every 0.5 s). A worker caught
inside a run unwinds it first (so ``cache.save_atomic`` removes its temporary file), then exits.

``LABKIT_EXECUTOR=dask:<scheduler address>`` sends the runs to a Dask cluster instead
(``labkit.cluster``), with the same one-thread rule, so the results are the same.
"""
from __future__ import annotations

import atexit
import multiprocessing
import numbers
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Mapping, Sequence

_POOL: ProcessPoolExecutor | None = None
_POOL_SIZE = 0

_POLL_S = 0.5  # how often a worker's watchdog looks at its parent
_GRACE_S = 2.0  # how long a run gets to unwind once the parent is gone
_PARENT_DEATH_SIGNAL = getattr(signal, "SIGUSR1", None)  # POSIX; a worker ignores it while its parent lives
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_parent_pid: int | None = None  # in a worker: the pid of the pool's owner
_orphaned = False
_in_run = False


def check_workers(value: Any, name: str = "workers") -> int:
    """Return a worker count: 0 (one per core) or a positive integer; anything else is a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name}={value!r} is not valid; use 0 (one worker per core) or a positive integer")
    return int(value)


def available_workers() -> int:
    """Cores this process may use (``LABKIT_WORKERS``, when set and not 0, overrides)."""
    raw = os.environ.get("LABKIT_WORKERS", "").strip()
    if raw:
        # Anything but digits (a sign, a point, a word) is an error that quotes the variable's text.
        workers = check_workers(int(raw) if raw.isdecimal() else raw, "LABKIT_WORKERS")
        if workers:
            return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def _init_worker(parent_pid: int) -> None:
    _watch_parent(parent_pid)  # first: the imports below take seconds

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")  # for the life of the worker
    # An interrupt (Lab's stop button, a kernel shutdown) is for the parent, which cancels the
    # pending runs; workers would otherwise each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _watch_parent(parent_pid: int) -> None:
    """Make this worker exit when ``parent_pid`` (the pool's owner) dies: see the module docstring."""
    global _parent_pid
    _parent_pid = parent_pid
    if _PARENT_DEATH_SIGNAL is not None:
        signal.signal(_PARENT_DEATH_SIGNAL, _on_parent_signal)
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(_PARENT_DEATH_SIGNAL), 0, 0, 0)
            except (OSError, AttributeError):
                pass  # the watchdog below still notices
    if not _parent_alive():  # the parent died before prctl took effect: no signal will come
        os._exit(1)
    threading.Thread(target=_watchdog, name="labkit-parent-watchdog", daemon=True).start()


def _parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return os.getppid() == _parent_pid and (parent is None or parent.is_alive())


def _on_parent_signal(signum, frame) -> None:
    """Main thread. The parent death signal also comes when the parent *thread* that started this
    worker ends (a pool first used from a thread); only a dead parent process counts."""
    global _orphaned
    if _orphaned or _parent_alive():  # already unwinding (a second signal would cut the cleanup short)
        return
    _orphaned = True
    if _in_run:  # unwind the run (``finally`` and cleanup blocks run); ``_call`` then exits
        raise SystemExit("labkit.parallel: the process that owns this worker is gone")
    os._exit(1)


def _watchdog() -> None:
    """Portable fallback: poll the parent; once it is gone, stop the run as the signal would, then exit."""
    parent = multiprocessing.parent_process()
    while _parent_alive():
        if parent is not None:
            parent.join(_POLL_S)  # returns at once when the parent's end of the pipe closes
        else:
            time.sleep(_POLL_S)
    if _in_run and _PARENT_DEATH_SIGNAL is not None and hasattr(signal, "pthread_kill"):
        if not _orphaned:  # no parent-death signal came (not Linux): send it, to unwind the run
            signal.pthread_kill(threading.main_thread().ident, _PARENT_DEATH_SIGNAL)
        time.sleep(_GRACE_S)  # ``_call`` exits as soon as the run has unwound; one stuck ends here
    os._exit(1)


def _pool(workers: int) -> ProcessPoolExecutor:
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE != workers:
        shutdown()
        context = multiprocessing.get_context("spawn")
        _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                    initargs=(os.getpid(),))
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
    everything runs here, single-threaded like the workers, so the numbers are the same. With
    ``LABKIT_EXECUTOR=dask:<address>`` the runs go to that Dask cluster (``labkit.cluster``) unless
    ``workers`` is 1, which always means this process (a chapter on CUDA asks for that).
    """
    from . import cluster
    from .train import progress_bar

    workers = check_workers(workers)
    address = cluster.executor_address()
    if not runs:
        return []
    bar = progress_bar(len(runs), desc or f"{getattr(fn, '__name__', 'runs')} ({len(runs)} runs)")
    try:
        jobs = [(fn, dict(kwargs)) for kwargs in runs]
        if address is not None and workers != 1:
            return [_tick(bar, result) for result in cluster.map_on_cluster(address, _call_one_thread, jobs)]
        workers = workers or available_workers()
        if workers <= 1 or len(runs) <= 1:
            with one_thread():
                return [_tick(bar, fn(**kwargs)) for _, kwargs in jobs]
        pool = _pool(min(workers, len(runs)) if _POOL is None else max(_POOL_SIZE, min(workers, len(runs))))
        return [_tick(bar, result) for result in pool.map(_call, jobs)]
    finally:
        if bar is not None:
            bar.close()


def _tick(bar, result: Any) -> Any:
    if bar is not None:
        bar.update(1)
    return result


@contextmanager
def one_thread():
    """Limit torch and BLAS to one thread, as in the workers, so the numbers match theirs."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def _call_one_thread(job: tuple[Callable[..., Any], dict[str, Any]]) -> Any:
    """One run on a cluster worker, limited to one thread as in the local pool."""
    from .cluster import tune_worker_malloc

    tune_worker_malloc()
    fn, kwargs = job
    with one_thread():
        return fn(**kwargs)


def _call(job: tuple[Callable[..., Any], dict[str, Any]]) -> Any:
    global _in_run
    fn, kwargs = job
    _in_run = True
    try:
        return fn(**kwargs)
    finally:
        _in_run = False
        if _orphaned:  # the run was cut off because the parent died: nobody waits for its result
            os._exit(1)
