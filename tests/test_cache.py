import dataclasses
import pickle

import numpy as np
import pytest
import torch

from labkit import cache


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LABKIT_CACHE", raising=False)
    return tmp_path


@dataclasses.dataclass
class Cfg:
    lr: float = 0.1
    steps: int = 3


def test_computes_once_then_loads_same_values():
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(3.0), "curve": np.linspace(0, 1, 4), "acc": 0.5, "names": ["a", "b"]}

    first = cache.cached("toy", Cfg(), compute, seed=0, budget="quick")
    second = cache.cached("toy", Cfg(), compute, seed=0, budget="quick")
    assert len(calls) == 1
    assert torch.equal(second["w"], first["w"])
    assert isinstance(second["curve"], np.ndarray) and np.allclose(second["curve"], first["curve"])
    assert second["acc"] == 0.5 and second["names"] == ["a", "b"]


def test_key_depends_on_config_seed_budget_and_source(monkeypatch):
    base = cache.cache_key("toy", Cfg(), 0, "quick")
    assert base != cache.cache_key("toy", Cfg(lr=0.2), 0, "quick")
    assert base != cache.cache_key("toy", Cfg(), 1, "quick")
    assert base != cache.cache_key("toy", Cfg(), 0, "full")
    monkeypatch.setattr(cache, "source_hash", lambda: "changed")
    assert base != cache.cache_key("toy", Cfg(), 0, "quick")


def test_cache_off_always_recomputes(monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", "off")
    calls = []
    for _ in range(2):
        cache.cached("toy", Cfg(), lambda: calls.append(1) or {"x": 1})
    assert len(calls) == 2


def test_killed_write_leaves_no_entry(isolated_cache, monkeypatch):
    def exploding_save(obj, handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        cache.cached("toy", Cfg(), lambda: {"x": torch.ones(2)})
    assert list(isolated_cache.rglob("*")) == [isolated_cache / "toy"]


def test_entry_is_never_unpickled(isolated_cache):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    key = cache.cache_key("toy", Cfg(), None, None)
    path = isolated_cache / "toy" / f"{key}.pt"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as handle:
        torch.save({"x": Evil()}, handle, pickle_module=pickle)
    # weights_only loading refuses the object; the entry is discarded and recomputed
    assert cache.cached("toy", Cfg(), lambda: {"x": 7}) == {"x": 7}


def test_uncacheable_value_is_a_clear_error():
    with pytest.raises(TypeError, match="cannot cache a value of type object"):
        cache.cached("toy", Cfg(), lambda: {"x": object()})


def test_artifact_is_written_once_and_loads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path))
    from labkit.cache import artifact

    path = artifact("stage", {"a": 1}, {"w": torch.ones(2)})
    assert path.startswith(str(tmp_path)) and torch.load(path, weights_only=True)["w"].sum() == 2
    assert artifact("stage", {"a": 1}, {"w": torch.zeros(2)}) == path  # same key: not rewritten
    assert torch.load(path, weights_only=True)["w"].sum() == 2
    assert artifact("stage", {"a": 2}, {"w": torch.zeros(2)}) != path
    monkeypatch.setenv("LABKIT_CACHE", "off")
    scratch = artifact("stage", {"a": 1}, {"w": torch.zeros(2)})
    assert not scratch.startswith(str(tmp_path)) and torch.load(scratch, weights_only=True)["w"].sum() == 0
