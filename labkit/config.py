"""Budgets, seeding, device choice and the one helper that validates a choice.

Every chapter's config dataclass has a ``budget`` of ``smoke`` (tests), ``quick`` (the default:
nbval, CI, opening the notebook) or ``full`` (the reproduction). ``from_budget`` builds a config
from a budget name plus overrides and rejects anything it does not know, naming the valid values.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import random
from typing import Any, Iterable, Mapping, TypeVar

import numpy as np
import torch

BUDGETS = ("smoke", "quick", "full")

C = TypeVar("C")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; otherwise raise a ValueError naming both."""
    allowed = list(allowed)
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {listed}")
    return value


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` if it lies in the interval; otherwise raise a ValueError naming it."""
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name}={value!r} is out of range; it must lie in {span}")
    return value


DEFAULT_SEED = 0


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A CPU ``torch.Generator`` from a generator, an int seed, or None (seed ``DEFAULT_SEED``).

    None means a fixed seed rather than fresh entropy, so a call without a seed still repeats.
    """
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        return torch.Generator().manual_seed(DEFAULT_SEED)
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise ValueError(f"generator={generator!r} is not valid; pass a torch.Generator, an int seed or None")


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int ≥ 1; otherwise raise a ValueError naming it."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; it must be an int >= 1")
    return int(value)


def check_positive_float(name: str, value: object) -> float:
    """Return ``value`` if it is a finite real number > 0; otherwise raise a ValueError naming it."""
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_real or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not valid; it must be a finite number > 0")
    check_range(name, value, 0.0, low_open=True)
    return float(value)


def seed_all(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


DEVICES = ("cpu", "cuda")


def check_device(device: object) -> str:
    """Return ``device`` (``"cpu"``, ``"cuda"`` or ``"cuda:N"``) when this machine has it; otherwise
    a ValueError naming the parameter and the allowed values. Every chapter's config checks its
    ``device`` field with this before any work starts."""
    if not isinstance(device, str):
        raise ValueError(f"device={device!r} is not valid; choose one of: 'cpu', 'cuda', 'cuda:N'")
    kind, _, index = device.partition(":")
    check_choice("device", kind, DEVICES)
    if index and not index.isdecimal():
        raise ValueError(f"device={device!r} is not valid; choose one of: 'cpu', 'cuda', 'cuda:N'")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} is not available: this machine has no CUDA device "
                         "(torch.cuda.is_available() is False); use device='cpu'")
    return device


def workers_for(device: str, workers: int) -> int:
    """The worker processes a chapter's runs use on ``device``: on CUDA the runs share one GPU from
    this process (1); on the CPU, ``workers`` (0 = one per core)."""
    return 1 if device.startswith("cuda") else workers


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when present (or when ``prefer``/``LABKIT_DEVICE`` says so), else CPU."""
    prefer = prefer or os.environ.get("LABKIT_DEVICE")
    if prefer:
        check_choice("device", prefer.split(":")[0], ["cpu", "cuda"])
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def from_budget(cls: type[C], budget: str = "quick", budgets: Mapping[str, Mapping[str, Any]] | None = None,
                **overrides: Any) -> C:
    """Build ``cls`` (a dataclass whose defaults are the quick budget) for ``budget``.

    ``budgets`` maps a budget name to the fields it changes from the defaults. ``overrides`` win
    over both; an unknown field or a wrongly typed value is rejected before any work starts.
    """
    check_choice("budget", budget, BUDGETS)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = dict((budgets or {}).get(budget, {}))
    values.update(overrides)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(unknown)} for {cls.__name__}; "
                         f"valid fields: {', '.join(sorted(fields))}")
    defaults = {f.name: getattr(cls, f.name, None) if f.default is not dataclasses.MISSING
                else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                for f in fields.values()}
    for name, value in values.items():
        values[name] = coerce(name, value, defaults[name])
    if "budget" in fields:
        values["budget"] = budget
    return cls(**values)


def coerce(name: str, value: Any, like: Any) -> Any:
    """Convert ``value`` to the type of the default ``like``, or raise naming the field."""
    if like is None or isinstance(value, type(like)) and not (isinstance(value, bool) != isinstance(like, bool)):
        return value
    try:
        if isinstance(like, bool):
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise TypeError
        if isinstance(like, (int, float)) and not isinstance(value, bool):
            converted = type(like)(value)
            if isinstance(like, int) and float(value) != converted:
                raise TypeError
            return converted
        if isinstance(like, tuple):
            return tuple(coerce(f"{name}[]", v, like[0]) if like else v for v in value)
        if isinstance(like, str):
            raise TypeError
    except (TypeError, ValueError):
        pass
    raise TypeError(f"{name}={value!r} has the wrong type; expected {type(like).__name__} "
                    f"like the default {like!r}")
