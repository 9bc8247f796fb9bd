"""What does baking buy? A baked model (``bake(G, c)``, plain convs) against the fingerprinted
generator called with a different fingerprint per image (``G(z, c)``, the non-fused modulation),
and what does baking cost?

Prints images per second of both at the same batch and thread count (1 thread and all cores), the
median of ``--repeats`` interleaved repeats, and their ratio; then the median time of one
``bake(G, c)`` and the projected time to bake 10,000 models, at d_c = 16 (the chapter's) and 128.
The generators are untrained, at the chapter's default sizes: speed does not depend on training.

Run: ``.venv/bin/python benchmarks/fingerprints.py [--repeats 7] [--batch 256 1024] [--bakes 200]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from labkit.methods.fingerprints import FingerprintedGenerator, bake, sample_fingerprints


def _time(fn, number: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


@torch.no_grad()
def throughput(G: FingerprintedGenerator, batch: int, repeats: int) -> tuple[float, float]:
    """Median images/s of ``bake(G, c0)(z)`` and of ``G(z, c)`` with one fingerprint per row."""
    rng = torch.Generator().manual_seed(0)
    z = torch.randn(batch, G.latent_dim, generator=rng)
    c = sample_fingerprints(batch, G.fingerprint_dim, rng)
    baked = bake(G, c[0])
    for _ in range(2):  # warm-up
        baked(z), G(z, c)
    baked_times, g_times = [], []
    for _ in range(repeats):  # interleaved, so drifts in machine speed hit both alike
        baked_times.append(_time(lambda: baked(z)))
        g_times.append(_time(lambda: G(z, c)))
    return batch / statistics.median(baked_times), batch / statistics.median(g_times)


def bake_time(G: FingerprintedGenerator, bakes: int) -> float:
    """Median seconds of one ``bake(G, c)`` (a fresh fingerprint each time), over ``bakes`` bakes."""
    codes = sample_fingerprints(bakes, G.fingerprint_dim, torch.Generator().manual_seed(1))
    for code in codes[:5]:  # warm-up
        bake(G, code)
    return statistics.median(_time(lambda code=code: bake(G, code)) for code in codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per setting (median)")
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1024], help="batch sizes")
    parser.add_argument("--bakes", type=int, default=200, help="bakes timed per d_c (median)")
    args = parser.parse_args()

    torch.manual_seed(0)
    G = FingerprintedGenerator(16).eval()
    cores = os.cpu_count() or 1
    print(f"G: d_c={G.fingerprint_dim}, latent {G.latent_dim}, width {G.width}, 16² images; "
          f"median of {args.repeats} repeats")
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        for batch in args.batch:
            baked, fingerprinted = throughput(G, batch, args.repeats)
            print(f"threads={threads:<2d} batch={batch:<5d} baked {baked:9.0f} img/s   G(z, c) {fingerprinted:9.0f} "
                  f"img/s   ratio baked/G = {baked / fingerprinted:.2f}")

    torch.set_num_threads(1)
    for dim in (16, 128):
        torch.manual_seed(0)
        G_dim = FingerprintedGenerator(dim).eval()
        seconds = bake_time(G_dim, args.bakes)
        print(f"bake, d_c={dim:<3d} (1 thread): {seconds * 1e3:.3f} ms per model (median of {args.bakes}); "
              f"10,000 models ≈ {seconds * 1e4:.1f} s")


if __name__ == "__main__":
    main()
