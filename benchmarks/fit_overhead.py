"""How much does ``labkit.train.fit`` cost over a bare PyTorch loop?

Trains the same tiny model (chapter 03's embedding MLP size) for the same steps both ways and prints
the ratio of median wall times. Run: ``.venv/bin/python benchmarks/fit_overhead.py``.
A ratio near 1.00 means the loop's bookkeeping (history, hooks, progress bar) is not worth measuring.
"""
from __future__ import annotations

import os
import statistics
import time

import torch

from labkit.train import fit

STEPS, REPEATS = 600, 7


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 16))
    X, y = torch.randn(150, 64), torch.randn(150, 16)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), X, y


def bare() -> float:
    model, opt, X, y = _setup()
    start = time.perf_counter()
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        opt.step()
        float(loss.detach())  # a bare loop also reads its loss to log it
    return time.perf_counter() - start


def with_fit() -> float:
    model, opt, X, y = _setup()
    start = time.perf_counter()
    fit(model, [(X, y)], lambda batch, step: {"loss": ((model(batch[0]) - batch[1]) ** 2).mean()}, [opt], STEPS)
    return time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(1)
    for mode in ("off", "text"):
        os.environ["LABKIT_PROGRESS"] = mode
        for _ in range(2):  # warm-up
            bare(), with_fit()
        bare_times, fit_times = [], []
        for _ in range(REPEATS):  # interleaved, so drifts in machine speed hit both alike
            bare_times.append(bare())
            fit_times.append(with_fit())
        b, f = statistics.median(bare_times), statistics.median(fit_times)
        print(f"progress={mode:4s}  bare {b * 1e3 / STEPS:.3f} ms/step  fit {f * 1e3 / STEPS:.3f} ms/step  "
              f"ratio fit/bare = {f / b:.3f}")


if __name__ == "__main__":
    main()
