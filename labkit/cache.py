"""Train-or-load: a result is computed once per (name, config, labkit source, seed, budget).

A cache entry is a ``torch.save`` file of plain data (tensors, numbers, strings, lists, dicts) and
is read back with ``torch.load(weights_only=True)``: nothing is ever unpickled. Writes go to a
temporary file in the same folder and are renamed into place, so a run killed mid-write leaves no
half-written entry behind. ``LABKIT_CACHE=off`` turns the cache off (benchmarks, determinism
checks); ``LABKIT_CACHE_DIR`` moves it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

PACKAGE_DIR = Path(__file__).resolve().parent
_NDARRAY = "__ndarray__"


@lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 over every ``.py`` file of labkit: any code change invalidates every entry."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """``$LABKIT_CACHE_DIR``, else ``build/cache`` in the checkout, else ``~/.cache/labkit``."""
    if os.environ.get("LABKIT_CACHE_DIR"):
        return Path(os.environ["LABKIT_CACHE_DIR"])
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").exists() and os.access(checkout, os.W_OK):
        return checkout / "build" / "cache"
    return Path.home() / ".cache" / "labkit"


def enabled() -> bool:
    return os.environ.get("LABKIT_CACHE", "on").lower() not in ("off", "0", "false", "no")


def cache_key(name: str, config: Any, seed: int | None = None, budget: str | None = None) -> str:
    """A stable hex key for ``name`` and a config (a dataclass or a mapping of plain values)."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    payload = json.dumps({"name": name, "config": config, "seed": seed, "budget": budget,
                          "source": source_hash()}, sort_keys=True, default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cached(name: str, config: Any, compute: Callable[[], Any], *, seed: int | None = None,
           budget: str | None = None) -> Any:
    """Return ``compute()``, loading it from the cache when the same key was computed before."""
    if not enabled():
        return compute()
    path = cache_dir() / name / f"{cache_key(name, config, seed, budget)}.pt"
    if path.exists():
        try:
            return _decode(torch.load(path, weights_only=True, map_location="cpu"))
        except Exception:  # an unreadable entry is recomputed, never trusted
            path.unlink(missing_ok=True)
    result = compute()
    save_atomic(_encode(result), path)
    return result


_SCRATCH: list[str] = []


def artifact(name: str, kwargs: Mapping[str, Any], value: Any) -> str:
    """Write one stage's result where the next stage's workers can read it; return the path.

    Beside the cache (``<cache>/artifacts/``) when it is on, else in a temporary folder removed at
    exit. Keyed like ``cached`` on ``name`` and ``kwargs``, so an existing file is not rewritten.
    """
    if enabled():
        folder = cache_dir() / "artifacts"
    else:
        if not _SCRATCH:
            import atexit
            import shutil

            _SCRATCH.append(tempfile.mkdtemp(prefix="labkit-artifacts-"))
            atexit.register(shutil.rmtree, _SCRATCH[0], True)
        folder = Path(_SCRATCH[0])
    path = folder / f"{name}-{cache_key(name, dict(kwargs))}.pt"
    if not path.exists():
        save_atomic(_encode(value), path)
    return str(path)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary sibling, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: Path) -> None:
    """Write a text file so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encode(value: Any) -> Any:
    """NumPy arrays become tagged tensors so that ``weights_only`` loading accepts them."""
    if isinstance(value, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot cache a value of type {type(value).__name__}; "
                    "return tensors, arrays, numbers, strings, lists or dicts")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_NDARRAY}:
            return value[_NDARRAY].numpy()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def cached_runs(name: str, fn: Callable[..., Any], runs: list[Mapping[str, Any]], workers: int = 0) -> list[Any]:
    """``[fn(**kw) for kw in runs]``, each run cached on its own arguments; misses run in parallel.

    One entry per run means a widget that retrains one configuration, a quick build and a full
    build all share whatever runs they have in common. Identical runs are computed once.
    """
    from .parallel import map_runs

    keys = [cache_key(name, dict(kw)) for kw in runs]
    unique = list(dict.fromkeys(keys))
    first = {key: runs[keys.index(key)] for key in unique}
    done: dict[str, Any] = {}
    if enabled():
        for key in unique:
            path = cache_dir() / name / f"{key}.pt"
            if path.exists():
                try:
                    done[key] = _decode(torch.load(path, weights_only=True, map_location="cpu"))
                except Exception:
                    path.unlink(missing_ok=True)
    missing = [key for key in unique if key not in done]
    for key, result in zip(missing, map_runs(fn, [first[key] for key in missing], workers, desc=f"{name}: {len(missing)} runs")):
        encoded = _encode(result)
        if enabled():
            save_atomic(encoded, cache_dir() / name / f"{key}.pt")
        done[key] = _decode(encoded)  # hits and misses come back in the same types
    return [done[key] for key in keys]
