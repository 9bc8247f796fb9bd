"""What does batching L2-CAF buy, and what does fast mode buy?

On the same ``--images`` test images and the same network (the chapter's cam network, untrained:
speed does not depend on training), one thread and then two, prints:

1. images per second of **batched** fast-mode L2-CAF (one filter per image, all optimised together)
   against the **official loop** (one image at a time, fast mode), and their ratio (goal ≥ 10×);
2. seconds per iteration of **fast** mode (cached A, only the head replayed) against **slow** mode
   (the whole network every iteration), one image at a time with a fixed number of iterations, and
   their ratio (spec: ≥ 5×);
3. the largest absolute difference between the batched and the looped heatmaps (same initial
   filters): float rounding (a batched matmul sums in another order), grown over the iterations,
   about 2e-4 on the [0, 1] heatmap on our machine.

Every L2-CAF run uses the official settings and stopping rule, so images stop at their own
iteration in both the loop and the batch. Times are medians of ``--repeats`` interleaved repeats.

Run: ``.venv/bin/python benchmarks/l2_caf.py [--images 64] [--repeats 3] [--iterations 50]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from labkit.experiments import l2_caf_runs as runs
from labkit.methods import l2_caf


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _optimise(net, A: torch.Tensor, target: torch.Tensor, initial: torch.Tensor, **options) -> torch.Tensor:
    return l2_caf.optimise_filters(lambda f: net.forward_from(3, A * f[:, None]), tuple(initial.shape), "specific",
                                   target=target, initial=initial, **options)["filters"]


def batched_against_loop(net, x, y, repeats: int) -> dict:
    A = l2_caf.capture(net, "trunk.3", x)
    initial = torch.randn(len(x), *A.shape[2:], generator=torch.Generator().manual_seed(0))

    def loop():
        return torch.cat([_optimise(net, A[i:i + 1], y[i:i + 1], initial[i:i + 1]) for i in range(len(x))])

    batch_times, loop_times = [], []
    for _ in range(repeats):  # interleaved, so drifts in machine speed hit both alike
        batch_times.append(_seconds(lambda: _optimise(net, A, y, initial)))
        loop_times.append(_seconds(loop))
    gap = (l2_caf.heatmap(_optimise(net, A, y, initial), x.shape[-2:]) - l2_caf.heatmap(loop(), x.shape[-2:])).abs()
    return dict(batched=len(x) / statistics.median(batch_times), loop=len(x) / statistics.median(loop_times),
                max_heatmap_difference=float(gap.max()))


def fast_against_slow(net, x, y, repeats: int, iterations: int) -> dict:
    fixed = dict(max_iters=iterations, tolerance=0.0)
    images = range(min(len(x), 8))
    times = {"fast": [], "slow": []}
    for _ in range(repeats):
        for mode in times:
            times[mode].append(_seconds(lambda: [
                runs.attention_maps(net, x[i:i + 1], y[i:i + 1], runs.SPECIFIC, slow=mode == "slow", **fixed)
                for i in images]) / (len(images) * iterations))
    return {mode: statistics.median(values) for mode, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()
    sets = runs.make_sets(image_size=64, num_train=8, num_test=args.images, num_pairs=1, seed=0)
    torch.manual_seed(0)
    net = runs.ShapeNet("cam").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        speed = batched_against_loop(net, sets.test_x, sets.test_y, args.repeats)
        per_iteration = fast_against_slow(net, sets.test_x, sets.test_y, args.repeats, args.iterations)
        print(f"{threads} thread(s), {args.images} images, cam net (16/32/64/64, 8×8 map):")
        print(f"  batched {speed['batched']:.1f} images/s, official loop {speed['loop']:.1f} images/s: "
              f"{speed['batched'] / speed['loop']:.1f}× (goal ≥ 10×)")
        print(f"  per iteration: fast {1e3 * per_iteration['fast']:.3f} ms, slow {1e3 * per_iteration['slow']:.3f} ms: "
              f"{per_iteration['slow'] / per_iteration['fast']:.1f}× (spec ≥ 5×)")
        print(f"  largest |batched − looped| heatmap difference: {speed['max_heatmap_difference']:.2e}")


if __name__ == "__main__":
    main()
