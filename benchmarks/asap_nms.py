"""How much faster is ASAP-NMS than greedy NMS, and at what cost in keep-set agreement? (chapter 08)

Same synthetic RPN proposals for every method (``labkit.nms.synthetic_proposals``: 640 px image,
40 x 40 lattice, 12 anchor shapes, pre-NMS top-N, IoU threshold 0.7), one thread, GC off while
timing, warm-up then the median and IQR of ``--repeats`` runs. Each timed call is the full public
call: input checks, the sort, (for ASAP) the index map G, and the suppression loop. The LUT is built
once and timed separately. Prints ratios; asserts nothing.

Run: ``.venv/bin/python benchmarks/asap_nms.py [--repeats 30] [--sizes 250 500 ...] [--python]``.
Compare at the same level: greedy_numba vs asap_numba (compiled), greedy_torch vs asap_torch
(vectorized), greedy_python vs asap_python (``--python``, N <= 2000 only). torchvision's C++ kernel
is an absolute reference; the spec's goal (>= 5x) is ASAP-numba over it.
"""
from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import torch

from labkit.methods.asap_nms import AnchorLUT, asap_nms
from labkit.nms import (PROPOSAL_ANCHORS, greedy_numba, greedy_python, greedy_torch, keep_jaccard,
                        nms_torchvision, synthetic_proposals, time_nms)

T, CUTOFF, IMAGE_SIZE = 0.7, 0.2, 640
SIZES = (250, 500, 1000, 2000, 4000, 6000, 8000, 12000)
PYTHON_MAX_N = 2000


def implementations(lut: AnchorLUT, with_python: bool = False) -> dict:
    """name -> fn(proposals) for every method, all with the same threshold."""
    impls = {
        "torchvision": lambda p: nms_torchvision(p.boxes, p.scores, T),
        "greedy_torch": lambda p: greedy_torch(p.boxes, p.scores, T),
        "greedy_numba": lambda p: greedy_numba(p.boxes, p.scores, T),
        "asap_torch": lambda p: asap_nms(*p, lut, T, impl="torch"),
        "asap_numba": lambda p: asap_nms(*p, lut, T, impl="numba"),
    }
    if with_python:
        impls["greedy_python"] = lambda p: greedy_python(p.boxes, p.scores, T)
        impls["asap_python"] = lambda p: asap_nms(*p, lut, T, impl="python")
    return impls


def sweep(sizes, repeats: int, lut: AnchorLUT, with_python: bool = False, seed: int = 0) -> dict:
    """{name: {N: Timing}} over the proposal counts ``sizes``."""
    results: dict = {name: {} for name in implementations(lut, with_python)}
    for n in sizes:
        props = synthetic_proposals(n, image_size=IMAGE_SIZE, config=PROPOSAL_ANCHORS, seed=seed)
        for name, fn in implementations(lut, with_python).items():
            if name.endswith("python") and n > PYTHON_MAX_N:
                continue
            slow = name.endswith("python")
            results[name][n] = time_nms(fn, props, repeats=3 if slow else repeats, warmup=1 if slow else 3)
    return results


def slope(timings: dict) -> float:
    """Least-squares slope of log(median latency) against log(N)."""
    ns = sorted(timings)
    if len(ns) < 2:
        return math.nan
    return float(np.polyfit(np.log(ns), np.log([timings[n].median for n in ns]), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--python", action="store_true", help=f"also time the pure-Python pair (N <= {PYTHON_MAX_N})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads 1, "
          f"t={T}, anchor-IoU cutoff {CUTOFF}, {IMAGE_SIZE} px, repeats {args.repeats}")

    start = time.perf_counter()
    lut = AnchorLUT(PROPOSAL_ANCHORS, anchor_iou_cutoff=CUTOFF)
    print(f"LUT: built once in {(time.perf_counter() - start) * 1e3:.2f} ms "
          f"(build_seconds {lut.build_seconds * 1e3:.2f} ms), mean |N(k)| = {lut.size:.1f}, "
          f"window +-{lut.radius_y} cells")

    props = synthetic_proposals(6000, image_size=IMAGE_SIZE, config=PROPOSAL_ANCHORS, seed=0)
    greedy = greedy_numba(props.boxes, props.scores, T, return_count=True)
    asap = asap_nms(*props, lut, T, return_count=True)
    print(f"\nN=6000: greedy keeps {len(greedy.keep)}, ASAP keeps {len(asap.keep)}; keep-set Jaccard "
          f"{keep_jaccard(asap.keep, greedy.keep):.4f} (goal >= 0.99); torchvision vs greedy Jaccard "
          f"{keep_jaccard(nms_torchvision(props.boxes, props.scores, T), greedy.keep):.4f}")
    print(f"IoU evaluations: greedy {greedy.num_iou:,}, ASAP {asap.num_iou:,}, "
          f"ratio {greedy.num_iou / max(asap.num_iou, 1):.1f}x fewer (E1 goal >= 10x)")

    results = sweep(args.sizes, args.repeats, lut, args.python)
    names = list(results)
    print("\nmedian latency in ms (IQR) per N")
    print(f"{'N':>6} " + " ".join(f"{name:>20}" for name in names))
    for n in args.sizes:
        cells = [f"{results[name][n].median * 1e3:9.3f} ({results[name][n].iqr * 1e3:7.3f})"
                 if n in results[name] else " " * 20 for name in names]
        print(f"{n:>6} " + " ".join(f"{cell:>20}" for cell in cells))
    print(f"{'slope':>6} " + " ".join(f"{slope(results[name]):>20.2f}" for name in names))

    print("\nspeed-ups (median ratios)")
    pairs = [("torchvision", "asap_numba"), ("greedy_numba", "asap_numba"), ("greedy_torch", "asap_torch"),
             ("greedy_python", "asap_python")]
    for n in args.sizes:
        ratios = [f"{slow}/{fast} {results[slow][n].median / results[fast][n].median:6.2f}x"
                  for slow, fast in pairs if slow in results and n in results[slow]]
        print(f"{n:>6}  " + "   ".join(ratios))


if __name__ == "__main__":
    main()
