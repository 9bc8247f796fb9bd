"""``fit``: the one training loop, with a progress bar, a history of named scalars and hooks.

A step is the chapter's ``step_fn(batch, step) -> dict``. When the dict holds a ``"loss"`` that
requires grad, ``fit`` zeroes every optimizer, back-propagates and steps them all (the common
case). A method with its own update order (a GAN's D then G steps, unrolling) passes no
optimizers and does its updates inside ``step_fn``; it returns detached scalars to be logged.

The bar is ``tqdm.auto`` (a widget in Lab). Under ``labkit run`` the kernel has
``LABKIT_PROGRESS=text`` and prints a few plain-text updates instead, so executed notebooks and
the book stay readable; ``LABKIT_PROGRESS=off`` silences it.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch


class History:
    """Named scalar series: ``history["loss"]`` is the list of values, ``history.steps["loss"]`` the steps."""

    def __init__(self):
        self.values: dict[str, list[float]] = {}
        self.steps: dict[str, list[int]] = {}

    def log(self, step: int, **scalars: float) -> None:
        for name, value in scalars.items():
            self.values.setdefault(name, []).append(float(value))
            self.steps.setdefault(name, []).append(int(step))

    def __getitem__(self, name: str) -> list[float]:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def last(self, name: str) -> float:
        return self.values[name][-1]

    def to_dict(self) -> dict[str, dict[str, list]]:
        return {name: {"step": self.steps[name], "value": self.values[name]} for name in self.values}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, list]]) -> "History":
        history = cls()
        for name, series in data.items():
            history.values[name] = [float(v) for v in series["value"]]
            history.steps[name] = [int(s) for s in series["step"]]
        return history


@dataclasses.dataclass
class FitState:
    step: int
    num_steps: int
    model: Any
    history: History
    logs: dict[str, float]
    stop: bool = False  # a hook sets it to end training early


class Hook:
    """Override any of these; ``state.history.log(...)`` records what a hook measures."""

    def after_step(self, state: FitState) -> None: ...

    def on_eval(self, state: FitState) -> None: ...

    def on_end(self, state: FitState) -> None: ...


class _Every(Hook):
    def __init__(self, n: int, fn: Callable[[FitState], None]):
        self.n, self.fn = n, fn

    def after_step(self, state: FitState) -> None:
        if (state.step + 1) % self.n == 0:
            self.fn(state)


def every(n: int, fn: Callable[[FitState], None]) -> Hook:
    """A hook that calls ``fn(state)`` after every ``n``-th step."""
    if n < 1:
        raise ValueError(f"n={n!r} must be a positive number of steps")
    return _Every(n, fn)


def _cycle(batches: Iterable) -> Iterator:
    """Iterate forever: re-iterate a finite iterable (a DataLoader), pass an iterator through."""
    if iter(batches) is batches:
        return iter(batches)
    return itertools.chain.from_iterable(itertools.repeat(batches))


def progress_bar(total: int, desc: str | None = None, progress: bool = True):
    """A ``tqdm.auto`` bar (a widget in Lab), plain text under ``LABKIT_PROGRESS=text``, or None."""
    mode = os.environ.get("LABKIT_PROGRESS", "auto").lower() if progress else "off"
    if mode == "off":
        return None
    if mode == "text":
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, file=sys.stdout, mininterval=30, ascii=True,
                    dynamic_ncols=False, ncols=80)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def fit(model: Any, batches: Iterable, step_fn: Callable[[Any, int], dict[str, Any]],
        optimizers: Sequence[torch.optim.Optimizer] = (), num_steps: int = 1, *,
        hooks: Sequence[Hook] = (), schedulers: Sequence[Any] = (), eval_every: int | None = None,
        log_every: int = 1, desc: str | None = None, progress: bool = True) -> History:
    """Run ``num_steps`` steps of ``step_fn`` over ``batches`` (cycled); return the history."""
    if num_steps < 0:
        raise ValueError(f"num_steps={num_steps!r} must be >= 0")
    if log_every < 1:
        raise ValueError(f"log_every={log_every!r} must be >= 1")
    history = History()
    state = FitState(step=0, num_steps=num_steps, model=model, history=history, logs={})
    bar = progress_bar(num_steps, desc, progress)
    if hasattr(model, "train"):
        model.train()
    stream = _cycle(batches)
    try:
        for step in range(num_steps):
            state.step = step
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            out = step_fn(next(stream), step)
            loss = out.get("loss")
            if optimizers and isinstance(loss, torch.Tensor) and loss.requires_grad:
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            if step % log_every == 0 or step == num_steps - 1:
                state.logs = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                              for k, v in out.items()}
                history.log(step, **state.logs)
            for hook in hooks:
                hook.after_step(state)
            if eval_every and ((step + 1) % eval_every == 0 or step == num_steps - 1):
                for hook in hooks:
                    hook.on_eval(state)
            if bar is not None:
                bar.update(1)
                if state.logs and step % 50 == 0:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in list(state.logs.items())[:3]}, refresh=False)
            if state.stop:
                break
        for hook in hooks:
            hook.on_end(state)
    finally:
        if bar is not None:
            bar.close()
    return history
