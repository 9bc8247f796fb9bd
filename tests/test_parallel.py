import torch

from labkit import cache
from labkit.parallel import map_runs


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
