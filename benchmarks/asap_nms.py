"""How much faster is ASAP-NMS than greedy NMS, and at what cost in keep-set agreement? (chapter 08)

Same synthetic RPN proposals for every method (``labkit.nms.synthetic_proposals``: 640 px image,
40 x 40 lattice, 12 anchor shapes of 32-256 px, pre-NMS top-N, IoU threshold 0.7, anchor-IoU
cutoff 0.2), one thread, GC off while timing, warm-up then the median of ``--repeats`` runs. Each
timed call is the full public call: input checks, the sort, (for ASAP) the index map G, and the
suppression loop. The LUT is built once and timed separately. Prints ratios; asserts nothing.

The headline is compiled ASAP against the compiled greedy loop with the same sort and the same
code generation (``greedy_numba``: torchvision's CPU algorithm), at N = 6,000 over ``--scenes``
independent scenes, as wall-time and as thread-CPU-time ratios (CPU time is what a busy machine
distorts least). ``greedy_simd`` (the same greedy, vectorized by LLVM) and torchvision's C++ kernel
are references. Then the per-phase profile (``labkit.nms.phase_profile``) and the sweep over N.
``--paper`` adds the paper's anchor setting (Faster R-CNN C4: 800 x 1333 px, stride 16,
128/256/512 px x 3 ratios) and sweeps of speed-up and agreement against anchor size relative to the
stride and against proposal drift (``labkit.methods.asap_nms.setting_sweeps``).

Run: ``.venv/bin/python benchmarks/asap_nms.py [--repeats 30] [--scenes 5] [--sizes 250 ...]
[--python] [--paper]``. ``--python`` adds the pure-Python pair (N <= 2000).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np
import torch

from labkit.methods.asap_nms import PAPER_ANCHORS, AnchorLUT, asap_nms, setting_sweeps, speed_and_agreement
from labkit.nms import (PHASES, PROPOSAL_ANCHORS, greedy_numba, greedy_python, greedy_simd, greedy_torch,
                        keep_jaccard, nms_torchvision, phase_profile, synthetic_proposals, time_nms)

T, CUTOFF, IMAGE_SIZE, HEADLINE_N = 0.7, 0.2, 640, 6000
SIZES = (250, 500, 1000, 2000, 4000, 6000, 8000, 12000)
PYTHON_MAX_N = 2000
PAPER_SPEEDUP = 13.6 / 1.2  # the abstract: CPU NMS latency, greedy over ASAP


def implementations(lut: AnchorLUT, with_python: bool = False) -> dict:
    """name -> fn(proposals) for every method, all with the same threshold."""
    impls = {
        "torchvision": lambda p: nms_torchvision(p.boxes, p.scores, T),
        "greedy_torch": lambda p: greedy_torch(p.boxes, p.scores, T),
        "greedy_numba": lambda p: greedy_numba(p.boxes, p.scores, T),
        "greedy_simd": lambda p: greedy_simd(p.boxes, p.scores, T),
        "asap_torch": lambda p: asap_nms(*p, lut, T, impl="torch"),
        "asap_numba": lambda p: asap_nms(*p, lut, T, impl="numba"),
    }
    if with_python:
        impls["greedy_python"] = lambda p: greedy_python(p.boxes, p.scores, T)
        impls["asap_python"] = lambda p: asap_nms(*p, lut, T, impl="python")
    return impls


def headline(lut: AnchorLUT, scenes: int, repeats: int) -> None:
    """Compiled ASAP against the compiled greedy loop at N = 6,000, scene by scene."""
    print(f"\nN={HEADLINE_N:,}, compiled: greedy_numba / asap_numba per scene "
          f"(median of {repeats}; the paper reports {PAPER_SPEEDUP:.1f}x)")
    print(f"{'scene':>5} {'greedy ms':>10} {'ASAP ms':>8} {'wall x':>7} {'CPU x':>6} {'simd/ASAP':>10} "
          f"{'tv/ASAP':>8} {'Jaccard':>8} {'IoU evals x':>11}")
    wall_ratios, cpu_ratios = [], []
    for scene in range(scenes):
        p = synthetic_proposals(HEADLINE_N, image_size=IMAGE_SIZE, config=PROPOSAL_ANCHORS, seed=scene)
        greedy = greedy_numba(p.boxes, p.scores, T, return_count=True)
        asap = asap_nms(*p, lut, T, return_count=True)
        wall = {name: time_nms(fn, p, repeats=repeats).median for name, fn in implementations(lut).items()
                if name in ("greedy_numba", "asap_numba", "greedy_simd", "torchvision")}
        cpu = {name: time_nms(implementations(lut)[name], p, repeats=repeats, clock=time.thread_time).median
               for name in ("greedy_numba", "asap_numba")}
        wall_ratios.append(wall["greedy_numba"] / wall["asap_numba"])
        cpu_ratios.append(cpu["greedy_numba"] / cpu["asap_numba"])
        print(f"{scene:>5} {wall['greedy_numba'] * 1e3:>10.2f} {wall['asap_numba'] * 1e3:>8.3f} "
              f"{wall_ratios[-1]:>6.1f}x {cpu_ratios[-1]:>5.1f}x {wall['greedy_simd'] / wall['asap_numba']:>9.2f}x "
              f"{wall['torchvision'] / wall['asap_numba']:>7.1f}x {keep_jaccard(asap.keep, greedy.keep):>8.4f} "
              f"{greedy.num_iou / max(asap.num_iou, 1):>10.1f}x")
    print(f"median over {scenes} scenes: {statistics.median(wall_ratios):.1f}x wall time "
          f"({min(wall_ratios):.1f}-{max(wall_ratios):.1f}), {statistics.median(cpu_ratios):.1f}x CPU time "
          f"({min(cpu_ratios):.1f}-{max(cpu_ratios):.1f}); goal >= 11x with Jaccard >= 0.99")


def profile(lut: AnchorLUT, repeats: int) -> None:
    """Where each compiled call spends its time (labkit.nms.phase_profile), scene 0."""
    p = synthetic_proposals(HEADLINE_N, image_size=IMAGE_SIZE, config=PROPOSAL_ANCHORS, seed=0)
    print(f"\nper-phase thread-CPU time at N={HEADLINE_N:,}, ms (median of {repeats})")
    print(f"{'method':>8} " + " ".join(f"{phase:>11}" for phase in (*PHASES, "sum", "total")))
    for method in ("greedy", "asap"):
        phases = phase_profile(method, p.boxes, p.scores, T, cells=p.cells, grid_shape=p.grid_shape, lut=lut,
                               repeats=repeats)
        values = [phases[name] for name in PHASES] + [sum(phases[name] for name in PHASES), phases["total"]]
        print(f"{method:>8} " + " ".join(f"{v * 1e3:>11.3f}" for v in values))


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


def print_sweep(results: dict, sizes) -> None:
    names = list(results)
    print("\nmedian wall latency in ms (IQR) per N")
    print(f"{'N':>6} " + " ".join(f"{name:>19}" for name in names))
    for n in sizes:
        cells = [f"{results[name][n].median * 1e3:8.3f} ({results[name][n].iqr * 1e3:7.3f})"
                 if n in results[name] else " " * 19 for name in names]
        print(f"{n:>6} " + " ".join(f"{cell:>19}" for cell in cells))
    print(f"{'slope':>6} " + " ".join(f"{slope(results[name]):>19.2f}" for name in names))
    print("\nspeed-ups (median ratios, same level)")
    pairs = [("greedy_numba", "asap_numba"), ("greedy_simd", "asap_numba"), ("torchvision", "asap_numba"),
             ("greedy_torch", "asap_torch"), ("greedy_python", "asap_python")]
    for n in sizes:
        ratios = [f"{slow}/{fast} {results[slow][n].median / results[fast][n].median:6.2f}x"
                  for slow, fast in pairs if slow in results and n in results[slow]]
        print(f"{n:>6}  " + "   ".join(ratios))


def describe(row: dict, label: str) -> str:
    speedups = " ".join(f"{name} {statistics.median(v):6.2f}x" for name, v in row["speedup"].items())
    return (f"{label:>22} |N| {row['lut_size']:7.1f}  greedy/ASAP: {speedups}  Jaccard {np.mean(row['jaccard']):.4f} "
            f"(min {min(row['jaccard']):.4f})  IoU evals {np.mean(row['iou_ratio']):6.1f}x fewer")


def paper_setting(scenes: int, repeats: int) -> None:
    """The paper's anchors and image, then the sweeps over anchor size and drift."""
    print(f"\npaper setting (Faster R-CNN C4): 800 x 1333 px, stride 16, 128/256/512 px x 3 ratios, N={HEADLINE_N:,}, "
          f"{scenes} scenes, thread-CPU medians of {repeats}")
    print(describe(speed_and_agreement(PAPER_ANCHORS, seeds=range(scenes), repeats=repeats), "C4, drift 0.1"))
    sweeps = setting_sweeps(seeds=range(min(scenes, 3)), repeats=max(repeats // 3, 3))
    print("\nagainst anchor side / stride (one scale x 3 ratios, drift 0.1)")
    for row in sweeps["anchor_side"]:
        print(describe(row, f"side = {row['side_over_stride']:g} strides"))
    print("\nagainst drift (box-delta std; C4 anchors)")
    for row in sweeps["drift"]:
        print(describe(row, f"drift {row['delta_std']:g}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--scenes", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--python", action="store_true", help=f"also time the pure-Python pair (N <= {PYTHON_MAX_N})")
    parser.add_argument("--paper", action="store_true", help="also the paper's anchor setting and the sweeps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (load average {load}), "
          f"torch {torch.__version__}, threads 1, t={T}, anchor-IoU cutoff {CUTOFF}, {IMAGE_SIZE} px")

    start = time.perf_counter()
    lut = AnchorLUT(PROPOSAL_ANCHORS, anchor_iou_cutoff=CUTOFF)
    print(f"LUT: built once in {(time.perf_counter() - start) * 1e3:.2f} ms (build_seconds "
          f"{lut.build_seconds * 1e3:.2f} ms), mean |N(k)| = {lut.size:.1f}, window +-{lut.radius_y} cells")
    headline(lut, args.scenes, args.repeats)
    profile(lut, args.repeats)
    print_sweep(sweep(args.sizes, args.repeats, lut, args.python), args.sizes)
    if args.paper:
        paper_setting(args.scenes, args.repeats)


if __name__ == "__main__":
    main()
