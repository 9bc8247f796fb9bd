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
"""
from __future__ import annotations

import os
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


def close() -> None:
    """Close the clients this process opened (the clusters themselves keep running)."""
    while _CLIENTS:
        _, opened = _CLIENTS.popitem()
        opened.close()
