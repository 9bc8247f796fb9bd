"""Chapter 10 — L2-CAF: the config, the runs, the timing and the tables.

``run(cfg)`` trains every network of ``cfg.kinds`` for every seed (``run_network``, cached and
spread over the cores). Each run explains the whole test set with every method its network
supports (``l2_caf_runs.methods_for``), scores the maps with one post-processing
(``labkit.metrics.localization``), explains the two-object images for each of their classes
(classifiers), keeps the optimisation of a few images every 50 iterations (the convergence view),
and, for the CAM network, runs the spec's ablations on class-specific L2-CAF. ``timing(results)``
measures speed afterwards in the notebook's own process, one thing at a time: the official loop
(one image at a time) against the batched filters, and fast against slow mode per iteration.

L2-CAF's settings are the TF code's (``optimise_filters``' defaults): Adam, N(0, 1) init, lr 0.5
decayed linearly to 0 over at most 1,000 iterations, stop when the loss moved less than 1e-6 over
50 iterations. The class-specific map explains the ground-truth class (GT-known localization);
top-1 localization also needs the prediction to be right.

``claims(results)`` (``l2_caf_claims``) judges the spec's outcomes 1–8.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from labkit.cache import cached_runs
from labkit.config import check_choice, check_device, check_positive_int, workers_for
from labkit.config import from_budget as _from_budget
from labkit.experiments import l2_caf_runs as runs
from labkit.experiments.l2_caf_runs import CAM, CENTRE, GRAD_CAM, OBLIVIOUS, SPECIFIC, SPECIFIC_POSITIVE
from labkit.methods import l2_caf
from labkit.metrics import localization as loc

TITLE = "A Generic Visualization Approach for Convolutional Neural Networks (L2-CAF)"
CHAPTER = "10-l2-caf"

#: ablation name -> (method, ``attention_maps`` overrides); every one on the CAM network
ABLATIONS: dict[str, tuple[str, dict]] = {
    "constraint: softmax": (SPECIFIC, dict(constraint="softmax")),
    "constraint: Gaussian mean": (SPECIFIC, dict(constraint="gaussian")),
    "constraint: none": (SPECIFIC, dict(constraint="none")),
    "oblivious, constraint: none": (OBLIVIOUS, dict(constraint="none")),
    "init: ones": (SPECIFIC, dict(init="ones")),
    "optimiser: SGD": (SPECIFIC, dict(optimizer="sgd")),
    "SGD + ones (the PyTorch code)": (SPECIFIC, dict(optimizer="sgd", init="ones")),
    "lr 0.05": (SPECIFIC, dict(lr=0.05)),
    "lr 5": (SPECIFIC, dict(lr=5.0)),
    "tolerance 1e-4 (the fast TF script)": (SPECIFIC, dict(tolerance=1e-4)),
    "at most 200 iterations": (SPECIFIC, dict(max_iters=200)),
    "penultimate block": (SPECIFIC, dict(layer="penultimate")),
    "penultimate block, oblivious": (OBLIVIOUS, dict(layer="penultimate")),
}


@dataclasses.dataclass
class CafConfig:
    """Defaults are the quick budget; ``BUDGETS`` lists what the other budgets change."""

    budget: str = "quick"
    seed: int = 0
    workers: int = 0
    device: str = "cpu"  # "cuda" on a GPU machine (the runs then go in this process)
    seeds: int = 1
    kinds: tuple = ("cam",)
    image_size: int = 64
    num_train: int = 2000
    num_test: int = 40
    num_pairs: int = 12
    steps: int = 250
    widths: tuple = (16, 32, 64, 64)
    batch_size: int = 32  # the quick budget's; full trains on batches of 64
    lr: float = 3e-3
    max_iters: int = 1000
    tolerance: float = 1e-6
    keep: int = 6  # images whose maps and convergence the views show
    ablations: tuple = ("oblivious, constraint: none",)
    timing_images: int = 4
    timing_repeats: int = 2


BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(num_train=96, num_test=8, num_pairs=3, steps=3, widths=(4, 4, 8, 8), max_iters=60, keep=2,
                  kinds=runs.KINDS, ablations=("constraint: Gaussian mean", "penultimate block"), timing_images=2,
                  timing_repeats=2),
    "quick": {},
    "full": dict(seeds=3, kinds=runs.KINDS, num_train=4000, num_test=200, num_pairs=100, steps=800, batch_size=64,
                 ablations=tuple(ABLATIONS), timing_images=16, timing_repeats=5),
}


def from_budget(budget: str = "quick", **overrides: Any) -> CafConfig:
    cfg = _from_budget(CafConfig, budget, BUDGETS, **overrides)
    check_device(cfg.device)
    for name in ("seeds", "num_train", "num_test", "num_pairs", "steps", "batch_size", "max_iters", "keep",
                 "timing_images", "timing_repeats"):
        check_positive_int(name, getattr(cfg, name))
    for kind in cfg.kinds:
        runs.methods_for(kind)  # names the valid kinds on a typo
    unknown = [row for row in cfg.ablations if row not in ABLATIONS]
    if unknown:
        raise ValueError(f"ablations entry {unknown[0]!r} is not valid; choose from {', '.join(map(repr, ABLATIONS))}")
    if cfg.num_test < 2:
        raise ValueError(f"num_test={cfg.num_test!r} is too small; it must be >= 2 (half medium, half large)")
    if cfg.keep > cfg.num_test:
        raise ValueError(f"keep={cfg.keep!r} must be <= num_test={cfg.num_test!r}")
    return cfg


def data_kwargs(cfg: CafConfig | dict) -> dict:
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    return dict(image_size=get("image_size"), num_train=get("num_train"), num_test=get("num_test"),
                num_pairs=get("num_pairs"), seed=get("seed"))


def view_images(num_test: int, keep: int) -> list[int]:
    """The ``keep`` test images the views show (and whose optimisation is traced): half medium, half
    large (the test set is its medium images, then its large ones)."""
    half = num_test // 2
    medium = list(range(min(keep - min(keep // 2, num_test - half), half)))
    return medium + list(range(half, half + min(keep - len(medium), num_test - half)))


def _scored(out: dict, sets: runs.Sets, image_size: int) -> dict:
    scored = runs.score(out["maps"], sets.test_boxes, image_size)
    return dict(hits=scored["hits"], pointing=scored["pointing"], seconds=out["seconds"],
                iterations=out.get("iterations"), maps=out["maps"].numpy().astype(np.float32))


def _correlations(net: runs.ShapeNet, sets: runs.Sets) -> np.ndarray:
    """Per test image, Grad-CAM against ReLU(CAM) (Grad-CAM's own ReLU; on a GAP + linear head
    Grad-CAM = ReLU(CAM) / HW exactly); for the MLP head, CAM with W₂W₁ as the class weights (the
    head with its ReLU dropped: ours, to show what the ReLU gating changes). The maps are computed
    on ``net``'s device and correlated on the CPU."""
    device = runs.device_of(net)
    x, y = sets.test_x.to(device), sets.test_y.to(device)
    A = l2_caf.capture(net, "trunk.3", x)
    weight = net.head[-1].weight if net.kind == "cam" else net.head[-1].weight @ net.head[-3].weight
    grad = l2_caf.grad_cam(net, "trunk.3", x, y)
    return runs.map_correlation(grad.cpu(), torch.relu(l2_caf.cam(A, weight.detach(), y)).cpu())


def run_network(kind: str, data: dict, seed: int, steps: int, widths: tuple, batch_size: int, lr: float,
                max_iters: int, tolerance: float, keep: int, ablations: tuple = (), device: str = "cpu") -> dict:
    """Train one network on ``device`` and explain its test set with every method (see the module
    docstring). The images stay on the CPU and move over in batches; everything returned is on the
    CPU."""
    sets = runs.make_sets(**data)
    size = data["image_size"]
    net, history = runs.train_net(kind, sets, seed, steps=steps, batch_size=batch_size, lr=lr, widths=widths,
                                  device=device)
    caf = dict(max_iters=max_iters, tolerance=tolerance, seed=seed)
    out: dict[str, Any] = dict(kind=kind, seed=seed, history=history, quality=runs.quality(net, sets),
                               net=dict(kind=kind, widths=tuple(widths)),
                               state={k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()})
    out["methods"] = {}
    for method in runs.methods_for(kind):
        found = runs.attention_maps(net, sets.test_x, sets.test_y, method, **caf)
        out["methods"][method] = _scored(found, sets, size)
        if method == SPECIFIC:  # the same filters read as max(f̂, 0): an extra of ours
            out["methods"][SPECIFIC_POSITIVE] = _scored({**found, "maps": found["signed"].clamp_min(0)}, sets, size)
    first = SPECIFIC if kind != "retrieval" else OBLIVIOUS
    shown = view_images(len(sets.test_x), keep)
    trace = runs.attention_maps(net, sets.test_x[shown], sets.test_y[shown], first, keep_every=50, **caf)
    out["convergence"] = dict(method=first, images=np.array(shown), snapshots=np.stack(trace["snapshots"]),
                              losses=np.array(trace["losses"]))
    if kind != "retrieval":
        out["correlation"] = _correlations(net, sets)
        out["pairs"] = {m: runs.pair_maps(net, sets, m, **caf)
                        for m in (SPECIFIC, SPECIFIC_POSITIVE, OBLIVIOUS, GRAD_CAM)}
    if kind == "cam":
        out["ablations"] = {}
        for name in ablations:
            method, overrides = ABLATIONS[name]
            found = runs.attention_maps(net, sets.test_x, sets.test_y, method, **{**caf, **overrides})
            out["ablations"][name] = _scored(found, sets, size)
    return out


def plan(cfg: CafConfig) -> list[dict]:
    """``run_network`` kwargs for every (network, seed)."""
    common = dict(data=data_kwargs(cfg), steps=cfg.steps, widths=tuple(cfg.widths), batch_size=cfg.batch_size,
                  lr=cfg.lr, max_iters=cfg.max_iters, tolerance=cfg.tolerance, keep=cfg.keep, device=cfg.device)
    return [dict(kind=kind, seed=cfg.seed + i, ablations=tuple(cfg.ablations) if kind == "cam" else (), **common)
            for kind in cfg.kinds for i in range(cfg.seeds)]


def run(cfg: CafConfig) -> dict[str, Any]:
    """Every run, grouped as ``nets[kind]`` → list over seeds."""
    steps = plan(cfg)
    done = cached_runs("l2caf-run", run_network, steps, workers_for(cfg.device, cfg.workers))
    nets: dict[str, list] = {}
    for kw, result in zip(steps, done):
        nets.setdefault(kw["kind"], []).append(result)
    return dict(config=dataclasses.asdict(cfg), nets=nets)


# --- reading the results ------------------------------------------------------------------------------

def chapter_sets(results_or_config: dict | CafConfig) -> runs.Sets:
    """The chapter's images (regenerated: they are a function of the config)."""
    cfg = results_or_config.get("config", results_or_config) if isinstance(results_or_config, dict) else results_or_config
    return runs.make_sets(**data_kwargs(cfg))


def trained_net(results: dict, kind: str = "cam", seed_index: int = 0, device: str = "cpu") -> runs.ShapeNet:
    """The trained network of one run (eval mode, on ``device``), rebuilt from its stored weights."""
    if kind not in results["nets"]:
        raise ValueError(f"kind={kind!r} was not trained at this budget; trained: {', '.join(results['nets'])}")
    entry = results["nets"][kind][seed_index]
    net = runs.ShapeNet(**entry["net"])
    net.load_state_dict(entry["state"])
    return net.to(check_device(device)).eval()


SIZES = ("all", "medium", "large")


def size_mask(results: dict, size: str) -> np.ndarray:
    """Which test images have ``size`` objects (the first half medium, the second large)."""
    check_choice("size", size, SIZES)
    n = results["config"]["num_test"]
    mask = np.zeros(n, dtype=bool)
    if size == "medium":
        mask[: n // 2] = True
    elif size == "large":
        mask[n // 2:] = True
    else:
        mask[:] = True
    return mask


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [float(v) for v in values]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _summary(found: list[dict], mask: np.ndarray, correct: list | None = None) -> dict:
    """Mean ± std over seeds of MaxBoxAcc (and its τ), accuracy at τ = 0.2, pointing, top-1 loc."""
    tau_index = loc.TAUS.index(loc.CAM_TAU)
    best = [loc.max_box_accuracy(f["hits"][mask]) for f in found]
    out = dict(seeds=len(found))
    out["maxboxacc"], out["maxboxacc_std"] = mean_std([b[0] for b in best])
    out["best_tau"] = loc.max_box_accuracy(np.mean([f["hits"][mask].mean(0) for f in found], axis=0)[None])[1]
    out["acc_at_0.2"], out["acc_at_0.2_std"] = mean_std([f["hits"][mask, tau_index].mean() for f in found])
    out["pointing"], out["pointing_std"] = mean_std([f["pointing"][mask].mean() for f in found])
    if correct is not None:
        top1 = [(f["hits"][mask] & c[mask, None]).mean(0).max() for f, c in zip(found, correct)]
        out["top1_loc"], out["top1_loc_std"] = mean_std(top1)
    if found[0].get("iterations") is not None:
        out["iterations"] = float(np.mean([f["iterations"].mean() for f in found]))
    out["ms_per_image"] = 1e3 * float(np.mean([f["seconds"] for f in found]))
    return out


def localization_table(results: dict, size: str = "all") -> list[dict]:
    """Per network and method: MaxBoxAcc, accuracy at τ = 0.2, pointing, top-1 loc (classifiers),
    iterations and milliseconds per image (batched, as run inside the worker)."""
    mask = size_mask(results, size)
    table = []
    for kind, entries in results["nets"].items():
        correct = [e["quality"]["correct"] for e in entries] if kind != "retrieval" else None
        for method in entries[0]["methods"]:
            row = dict(network=kind, method=method, size=size)
            row.update(_summary([e["methods"][method] for e in entries], mask, correct))
            table.append(row)
    return table


def ablation_table(results: dict, size: str = "all") -> list[dict]:
    """The CAM network's ablations next to its two main L2-CAF rows."""
    entries = results["nets"].get("cam", [])
    if not entries:
        return []
    mask = size_mask(results, size)
    rows = [dict(variant=f"{m} (main)", **_summary([e["methods"][m] for e in entries], mask))
            for m in (SPECIFIC, OBLIVIOUS)]
    for name in entries[0].get("ablations", {}):
        rows.append(dict(variant=name, **_summary([e["ablations"][name] for e in entries], mask)))
    return rows


def sweep(results: dict, kind: str = "cam", size: str = "all") -> dict[str, np.ndarray]:
    """Localization accuracy against τ per method, mean over seeds: ``{method: (len(TAUS),)}``."""
    mask = size_mask(results, size)
    entries = results["nets"][kind]
    return {m: np.mean([e["methods"][m]["hits"][mask].mean(0) for e in entries], axis=0)
            for m in entries[0]["methods"]}


def pair_table(results: dict) -> list[dict]:
    """Two-object images: how often each method's peak lands on the queried object (and on the other)."""
    table = []
    for kind, entries in results["nets"].items():
        if "pairs" not in entries[0]:
            continue
        for method in entries[0]["pairs"]:
            on_q, q_std = mean_std([e["pairs"][method]["on_queried"].mean() for e in entries])
            on_o, o_std = mean_std([e["pairs"][method]["on_other"].mean() for e in entries])
            table.append(dict(network=kind, method=method, seeds=len(entries), on_queried=on_q,
                              on_queried_std=q_std, on_other=on_o, on_other_std=o_std))
    return table


def quality_table(results: dict) -> list[dict]:
    out = []
    for kind, entries in results["nets"].items():
        key = "recall_at_1" if kind == "retrieval" else "accuracy"
        mean, std = mean_std([e["quality"][key] for e in entries])
        out.append(dict(network=kind, metric="Recall@1" if kind == "retrieval" else "accuracy", mean=mean,
                        std=std, seeds=len(entries)))
    return out


# --- timing (in the notebook's process, after the parallel runs) -------------------------------------

def _seconds(fn) -> float:
    """Wall-clock seconds of ``fn()``; ``attention_maps`` returns CPU tensors, so the time includes
    the device's work."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timing(results: dict, iterations: int = 50, device: str = "cpu") -> dict:
    """Per repeat: seconds per image of the official loop (fast mode, one image at a time) and of the
    batched filters, and seconds per iteration in fast and in slow mode (``iterations`` fixed, one
    image at a time). Run on ``device``, on the first CAM network (or the first trained) and
    ``timing_images`` test images."""
    cfg = results["config"]
    kind = "cam" if "cam" in results["nets"] else next(iter(results["nets"]))
    net, sets = trained_net(results, kind, device=device), chapter_sets(results)
    x, y = sets.test_x[: cfg["timing_images"]], sets.test_y[: cfg["timing_images"]]
    method = OBLIVIOUS if kind == "retrieval" else SPECIFIC
    caf = dict(max_iters=cfg["max_iters"], tolerance=cfg["tolerance"])
    fixed = dict(max_iters=iterations, tolerance=0.0)
    out: dict[str, list] = {k: [] for k in ("loop", "batched", "fast_iteration", "slow_iteration")}
    for repeat in range(cfg["timing_repeats"]):
        one = [(x[i:i + 1], y[i:i + 1]) for i in range(len(x))]
        out["loop"].append(_seconds(lambda: [runs.attention_maps(net, a, b, method, seed=repeat, **caf)
                                             for a, b in one]) / len(x))
        out["batched"].append(_seconds(lambda: runs.attention_maps(net, x, y, method, seed=repeat, **caf)) / len(x))
        for mode, slow in (("fast_iteration", False), ("slow_iteration", True)):
            out[mode].append(_seconds(lambda: [runs.attention_maps(net, a, b, method, slow=slow, **fixed)
                                               for a, b in one]) / (len(x) * iterations))
    return dict(network=kind, method=method, images=len(x), threads=torch.get_num_threads(), device=device, **out)


def timing_lines(timing: dict) -> str:
    """The timing in words: mean over repeats of each mode."""
    mean = {k: float(np.mean(timing[k])) for k in ("loop", "batched", "fast_iteration", "slow_iteration")}
    return "\n".join([
        f"{timing['method']} on the {timing['network']} net, {timing['images']} test images, "
        f"{timing['threads']} threads, on {timing.get('device', 'cpu')}, mean of {len(timing['loop'])} repeats:",
        f"  official loop (one image at a time, fast mode): {mean['loop']:.4f} s per image",
        f"  batched filters (all images at once, fast mode): {mean['batched']:.4f} s per image "
        f"({mean['loop'] / mean['batched']:.1f}× the images per second)",
        f"  per iteration, one image: fast {1e3 * mean['fast_iteration']:.3f} ms, slow "
        f"{1e3 * mean['slow_iteration']:.3f} ms ({mean['slow_iteration'] / mean['fast_iteration']:.1f}×)",
    ])


from labkit.experiments.l2_caf_claims import claims  # noqa: E402  (the claims read the tables above)

__all__ = ["claims", "ABLATIONS", "CafConfig", "BUDGETS", "from_budget", "plan", "run", "run_network", "timing",
           "chapter_sets", "trained_net", "size_mask", "view_images", "SIZES", "localization_table", "ablation_table", "sweep",
           "pair_table", "quality_table", "timing_lines", "SPECIFIC", "SPECIFIC_POSITIVE", "OBLIVIOUS", "GRAD_CAM", "CAM", "CENTRE", "TITLE",
           "CHAPTER"]

