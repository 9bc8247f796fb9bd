"""``LABKIT_EXECUTOR=dask:<address>``: runs on a Dask cluster give the local pool's numbers, and only
the driver writes the cache."""
import os
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from labkit import cluster
from labkit.parallel import map_runs

distributed = pytest.importorskip("distributed", reason="Dask is the optional extra .[cluster]")


def _noise(seed: int) -> torch.Tensor:
    return torch.rand(3, generator=torch.Generator().manual_seed(seed))


def _malloc_tuned() -> bool:
    return cluster._tuned


def _where(index: int) -> tuple[int, int]:
    import os

    return index, os.getpid()


def assert_identical(a, b, where="result"):
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys differ"
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=True), f"{where}: arrays differ"
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), f"{where}: nan != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("value, address", [("", None), ("local", None), (" dask:tcp://10.0.0.5:8786 ", "tcp://10.0.0.5:8786")])
def test_executor_address(value, address):
    assert cluster.executor_address(value) == address


@pytest.mark.parametrize("value", ["dask", "dask:", "spark:tcp://x:1", "tcp://10.0.0.5:8786"])
def test_a_bad_executor_is_a_one_line_error_naming_the_variable(value, monkeypatch):
    with pytest.raises(ValueError, match=r"LABKIT_EXECUTOR=.* is not valid; use 'local' or 'dask:<scheduler address>'"):
        cluster.executor_address(value)
    monkeypatch.setenv("LABKIT_EXECUTOR", value)
    with pytest.raises(ValueError, match="LABKIT_EXECUTOR="):
        map_runs(_noise, [dict(seed=0)], workers=2)


@contextmanager
def _local_cluster(n_workers: int, **env: str):
    """A ``LocalCluster`` of single-threaded worker processes that inherit ``env``.

    A ``LocalCluster`` writes its workers' variables (``OMP_NUM_THREADS=1``,
    ``MALLOC_TRIM_THRESHOLD_``) into this process's environment and leaves them there: every later
    subprocess of the test session (chapter kernels, pool workers) would inherit them and run
    slower. The environment is put back as it was."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None, silence_logs=40) as started:
            yield started
    finally:
        cluster.close()
        os.environ.clear()
        os.environ.update(saved)


def test_a_local_cluster_leaves_this_process_environment_as_it_was():
    before = dict(os.environ)
    with _local_cluster(1) as started:
        assert started.scheduler_address
    assert dict(os.environ) == before


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """Two single-threaded worker processes whose own cache folder must stay empty."""
    workers_cache = tmp_path_factory.mktemp("workers-cache")
    with _local_cluster(2, LABKIT_CACHE_DIR=str(workers_cache)) as started:
        yield started, workers_cache


def test_map_runs_on_the_cluster_returns_the_runs_in_order(local_cluster, monkeypatch):
    started, _ = local_cluster
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    runs = [dict(seed=s) for s in (3, 1, 2, 1)]
    local = map_runs(_noise, runs, workers=1)
    monkeypatch.setenv("LABKIT_EXECUTOR", f"dask:{started.scheduler_address}")
    assert_identical(map_runs(_noise, runs, workers=0), local)
    ran = map_runs(_where, [dict(index=i) for i in range(6)], workers=0)
    worker_pids = set(cluster.client(started.scheduler_address).run(os.getpid).values())
    assert [i for i, _ in ran] == list(range(6)) and {pid for _, pid in ran} <= worker_pids
    assert os.getpid() not in worker_pids
    assert {pid for _, pid in map_runs(_where, [dict(index=0), dict(index=1)], workers=1)} == {os.getpid()}
    # Dask's nanny set MALLOC_TRIM_THRESHOLD_ in the workers: each run first puts glibc's thresholds back
    assert map_runs(_malloc_tuned, [{}, {}, {}], workers=0) == [True] * 3


def test_malloc_is_tuned_only_where_dask_set_its_trim_threshold():
    import subprocess
    import sys

    code = "from labkit import cluster; print(cluster.tune_worker_malloc(), cluster.tune_worker_malloc())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    dask_like = subprocess.run([sys.executable, "-c", code], env=env | {"MALLOC_TRIM_THRESHOLD_": "65536"},
                               capture_output=True, text=True, check=True)
    assert plain.stdout.split() == ["False", "False"]
    assert dask_like.stdout.split() == (["True", "False"] if sys.platform.startswith("linux") else ["False", "False"])


def test_a_chapter_smoke_run_is_bit_identical_on_the_cluster(local_cluster, tmp_path, monkeypatch):
    """Chapter 03's smoke budget (several independent runs through ``cached_runs``): the local pool
    of 2 processes against the 2-worker cluster, each with an empty cache."""
    from labkit.experiments import svmax

    started, workers_cache = local_cluster
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "pool"))
    on_pool = svmax.run(svmax.from_budget("smoke", workers=2))
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "dask"))
    monkeypatch.setenv("LABKIT_EXECUTOR", f"dask:{started.scheduler_address}")
    on_cluster = svmax.run(svmax.from_budget("smoke", workers=2))
    assert_identical(on_cluster, on_pool)
    assert sorted(p.name for p in (tmp_path / "dask").iterdir())  # the driver wrote the cache ...
    assert not any(workers_cache.iterdir())  # ... and the workers wrote nothing
