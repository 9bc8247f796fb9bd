"""A chapter's independent runs on a Dask distributed cluster.

``LABKIT_EXECUTOR=dask:<scheduler address>`` (for example ``dask:tcp://10.0.0.5:8786``) makes
``labkit.parallel.map_runs`` send its runs to that scheduler through Dask's
``Client.get_executor()``: the same ``concurrent.futures`` interface as the local process pool.
Results come back to the driver in the order of the runs, and the driver alone writes the cache
(``labkit.cache.cached_runs``). Each run seeds itself from its own arguments and runs with torch and
BLAS limited to one thread, as in the local pool, so the numbers do not depend on where it ran:
``tests/test_cluster.py`` shows a chapter's smoke results bit-identical through a ``LocalCluster``.
Unset, empty or ``local``: the local process pool.

What a cluster needs (Dask is the optional extra ``pip install -e '.[cluster]'``):

- every worker has the same labkit, torch and Python as the driver: runs are sent as references to
  importable functions (``labkit.experiments.svmax_runs.train_retrieval``) plus their arguments;
- one thread per worker process (``dask worker <address> --nthreads 1``): a run sets torch's thread
  count, which is global to its process;
- chapters 05–08 hand one stage's weights to the next as files in the driver's cache folder
  (``cache.artifact``): across machines, ``LABKIT_CACHE_DIR`` must be a folder every worker can read.

Dask's nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536``, which freezes glibc's
allocation thresholds: every buffer over 128 KiB is then mapped from the kernel and unmapped again,
and a training run spends its time in page faults: two of chapter 09's full-budget runs took 15.6 s
on a 2-worker ``LocalCluster``, 7.3 s without the variable. ``tune_worker_malloc`` sets the
thresholds where glibc's own adaptation tops out, once per worker, before its first run (6.4 s).
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, Callable, Iterable, Iterator

ENV = "LABKIT_EXECUTOR"
_CLIENTS: dict[str, Any] = {}


def executor_address(value: str | None = None) -> str | None:
    """The scheduler address ``LABKIT_EXECUTOR`` (or ``value``) names; ``None`` for the local pool."""
    raw = (os.environ.get(ENV, "") if value is None else value).strip()
    if raw in ("", "local"):
        return None
    kind, _, address = raw.partition(":")
    if kind != "dask" or not address.strip():
        raise ValueError(f"{ENV}={raw!r} is not valid; use 'local' or 'dask:<scheduler address>' "
                         "(e.g. dask:tcp://10.0.0.5:8786)")
    return address.strip()


def client(address: str):
    """One ``distributed.Client`` per scheduler address, opened on first use."""
    if address not in _CLIENTS:
        try:
            from distributed import Client
        except ImportError as error:
            raise ImportError(f"{ENV}=dask:{address} needs Dask: pip install -e '.[cluster]'") from error
        _CLIENTS[address] = Client(address, set_as_default=False)
    return _CLIENTS[address]


def map_on_cluster(address: str, call: Callable[[Any], Any], jobs: Iterable[Any]) -> Iterator[Any]:
    """``map(call, jobs)`` on the cluster at ``address``; results in the order of ``jobs``.

    ``pure=False``: two equal jobs are two runs, and nothing is memoised on the cluster across
    labkit versions (the driver's cache is keyed on labkit's source; the cluster's would not be).
    """
    return client(address).get_executor(pure=False).map(call, list(jobs))


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
_tuned = False


def tune_worker_malloc() -> bool:
    """In a process started with ``MALLOC_TRIM_THRESHOLD_`` (a Dask worker), raise glibc's mmap
    threshold to 32 MiB and its trim threshold to twice that, the values its dynamic rule would
    reach; return whether anything was set. Elsewhere (and on a second call) do nothing."""
    global _tuned
    if _tuned or "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return False
    _tuned = True
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                    and libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to undo there
        return False


def close() -> None:
    """Close the clients this process opened (the clusters themselves keep running)."""
    while _CLIENTS:
        _, opened = _CLIENTS.popitem()
        opened.close()
