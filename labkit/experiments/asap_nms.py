"""Chapter 08 — ASAP-NMS: latency, IoU-evaluation counts, keep-set agreement, ablations, detector AP.

``run(cfg)`` measures everything the chapter shows. The NMS measurements need no training; the
detector comparison (full budget) trains the tiny detector on shape scenes once, cached, and runs
its RPN with greedy NMS and with ASAP-NMS. Timings pin torch to one thread, as the spec asks.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from labkit import nms
from labkit.cache import cached
from labkit.config import from_budget as _from_budget
from labkit.methods.asap_nms import AnchorLUT, asap_nms
from labkit.report import Claim

TITLE = "ASAP-NMS: Accelerating Non-Maximum Suppression Using Spatially Aware Priors"
CHAPTER = "08-asap-nms"
IMPLEMENTATIONS = ("torchvision", "greedy_torch", "greedy_numba", "asap_numba", "asap_torch")


@dataclasses.dataclass
class ASAPConfig:
    """Defaults are the quick budget; ``BUDGETS`` lists what the other budgets change."""

    budget: str = "quick"
    seed: int = 0
    image_size: int = 640  # synthetic proposals: a 40 × 40 × 12 anchor lattice (stride 16)
    sizes: tuple = (500, 2000, 6000)
    repeats: int = 10
    num_scenes: int = 3
    iou_threshold: float = 0.7
    cutoff: float = 0.2
    cutoffs: tuple = (0.1, 0.2, 0.3, 0.4)
    thresholds: tuple = (0.5, 0.7, 0.9)
    drifts: tuple = (0.05, 0.1, 0.2, 0.4)
    top_ks: tuple = (300, 1000)
    profile_size: int = 6000
    # detector AP with greedy vs ASAP inside the RPN; 0 steps skips it
    detector_steps: int = 0
    detector_train_images: int = 400
    detector_test_images: int = 150


BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(sizes=(200, 500), repeats=2, num_scenes=1, cutoffs=(0.2, 0.4), thresholds=(0.7,),
                  drifts=(0.1,), top_ks=(100,), profile_size=500),
    "quick": {},
    "full": dict(image_size=1024, sizes=(250, 500, 1000, 2000, 4000, 6000, 8000, 12000), repeats=30, num_scenes=5,
                 detector_steps=1500),
}


def from_budget(budget: str = "quick", **overrides: Any) -> ASAPConfig:
    return _from_budget(ASAPConfig, budget, BUDGETS, **overrides)


def _proposals(cfg: ASAPConfig, n: int, scene: int, **kwargs) -> nms.Proposals:
    return nms.synthetic_proposals(n, cfg.image_size, seed=cfg.seed + scene, **kwargs)


def _implementations(lut: AnchorLUT, t: float) -> dict[str, Any]:
    return {
        "torchvision": lambda p: nms.nms_torchvision(p.boxes, p.scores, t),
        "greedy_torch": lambda p: nms.greedy_torch(p.boxes, p.scores, t),
        "greedy_numba": lambda p: nms.greedy_numba(p.boxes, p.scores, t),
        "asap_numba": lambda p: asap_nms(p.boxes, p.scores, p.cells, p.grid_shape, lut, t, impl="numba"),
        "asap_torch": lambda p: asap_nms(p.boxes, p.scores, p.cells, p.grid_shape, lut, t, impl="torch"),
    }


def _compare(p: nms.Proposals, lut: AnchorLUT, t: float, top_k: int | None = None) -> dict[str, Any]:
    greedy = nms.greedy_numba(p.boxes, p.scores, t, top_k=top_k, return_count=True)
    asap = asap_nms(p.boxes, p.scores, p.cells, p.grid_shape, lut, t, top_k=top_k, return_count=True)
    return dict(greedy_iou=greedy.num_iou, asap_iou=asap.num_iou, jaccard=nms.keep_jaccard(greedy.keep, asap.keep),
                kept_greedy=len(greedy.keep), kept_asap=len(asap.keep), greedy=greedy.keep, asap=asap.keep)


def _mean_over_scenes(cfg: ASAPConfig, n: int, lut: AnchorLUT, t: float, top_k=None, **proposal_kwargs) -> dict:
    rows = [_compare(_proposals(cfg, n, s, **proposal_kwargs), lut, t, top_k) for s in range(cfg.num_scenes)]
    return dict(iou_ratio=float(np.mean([r["asap_iou"] / max(r["greedy_iou"], 1) for r in rows])),
                jaccard=float(np.mean([r["jaccard"] for r in rows])))


def latency_and_counts(cfg: ASAPConfig, lut: AnchorLUT) -> tuple[list[dict], list[dict]]:
    """Median and IQR latency per implementation and N (one thread), and IoU counts on scene 0."""
    latency, counts = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for n in cfg.sizes:
            p = _proposals(cfg, n, 0)
            for impl, fn in _implementations(lut, cfg.iou_threshold).items():
                timing = nms.time_nms(fn, p, repeats=cfg.repeats)
                latency.append(dict(N=n, impl=impl, median_s=timing.median, iqr_s=timing.iqr))
            row = _compare(p, lut, cfg.iou_threshold)
            counts.append({k: v for k, v in row.items() if k not in ("greedy", "asap")} | dict(N=n))
    finally:
        torch.set_num_threads(threads)
    return latency, counts


def iou_profile(cfg: ASAPConfig, max_values: int = 200_000) -> dict[str, Any]:
    """The IoUs greedy NMS evaluates (kept box against every later unsuppressed box), and where its time goes."""
    p = _proposals(cfg, cfg.profile_size, 0)
    boxes, scores = p.boxes.double(), p.scores.double()
    start = time.perf_counter()
    order = torch.sort(scores, descending=True, stable=True).indices
    sort_s = time.perf_counter() - start
    boxes = boxes[order]
    alive = torch.ones(len(boxes), dtype=torch.bool)
    evaluated = []
    start = time.perf_counter()
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        later = torch.nonzero(alive[i + 1:]).squeeze(1) + i + 1
        ious = nms.box_iou_matrix(boxes[i:i + 1], boxes[later])[0]
        evaluated.append(ious)
        alive[later[ious > cfg.iou_threshold]] = False
    loop_s = time.perf_counter() - start
    ious = torch.cat(evaluated).float().numpy()
    sample = ious[np.random.default_rng(cfg.seed).permutation(len(ious))[:max_values]]
    return dict(ious=sample, N=cfg.profile_size, num_evaluated=int(len(ious)),
                fraction_zero=float((ious == 0).mean()), sort_s=sort_s, loop_s=loop_s)


def lut_neighbourhoods(cfg: ASAPConfig) -> dict[str, Any]:
    config = nms.PROPOSAL_ANCHORS
    offsets = []
    for cutoff in cfg.cutoffs:
        lut = AnchorLUT(config, cutoff)
        offsets.append([lut.offsets[k, :lut.lengths[k]].copy() for k in range(lut.num_shapes)])
    return dict(cutoffs=list(cfg.cutoffs), stride=config.stride, shapes=config.shapes().numpy(), offsets=offsets)


def keep_diff(cfg: ASAPConfig, lut: AnchorLUT, n: int = 2000) -> dict[str, Any]:
    p = _proposals(cfg, n, 0)
    row = _compare(p, lut, cfg.iou_threshold)
    greedy, asap = set(row["greedy"].tolist()), set(row["asap"].tolist())
    return dict(boxes=p.boxes.float().numpy(), greedy_only=sorted(greedy - asap), asap_only=sorted(asap - greedy),
                both=sorted(greedy & asap), image_size=cfg.image_size)


def full_radius_check(cfg: ASAPConfig, n: int = 2000) -> dict[str, Any]:
    """With cutoff 0 and an unbounded window ASAP must equal greedy exactly (spec E2)."""
    lut = AnchorLUT(nms.PROPOSAL_ANCHORS, 0.0, radius="full")
    equal = True
    for scene in range(cfg.num_scenes):
        p = _proposals(cfg, n, scene)
        equal &= torch.equal(nms.greedy_numba(p.boxes, p.scores, cfg.iou_threshold),
                             asap_nms(p.boxes, p.scores, p.cells, p.grid_shape, lut, cfg.iou_threshold))
    return dict(N=n, equal=bool(equal))


def resolution_check(cfg: ASAPConfig, lut: AnchorLUT, image_sizes=(256, 1024)) -> dict[str, Any]:
    """One LUT object serves images of different sizes and does not change (spec E5)."""
    before = lut.size
    jaccards = []
    for size in image_sizes:
        p = nms.synthetic_proposals(min(1000, (size // 16) ** 2 * 6), size, seed=cfg.seed)
        jaccards.append(_compare(p, lut, cfg.iou_threshold)["jaccard"])
    return dict(image_sizes=list(image_sizes), lut_size_before=before, lut_size_after=lut.size, jaccards=jaccards)


def run(cfg: ASAPConfig) -> dict[str, Any]:
    """Everything the chapter shows, as plain data."""
    lut = AnchorLUT(nms.PROPOSAL_ANCHORS, cfg.cutoff)
    n = max(s for s in cfg.sizes if s <= 6000)
    latency, counts = latency_and_counts(cfg, lut)
    return {
        "config": dataclasses.asdict(cfg),
        "latency": latency,
        "counts": counts,
        "lut_build_s": lut.build_seconds,
        "lut_size": lut.size,
        "iou_profile": iou_profile(cfg),
        "lut_neighbourhoods": lut_neighbourhoods(cfg),
        "cutoff_sweep": [dict(cutoff=c, lut_size=AnchorLUT(nms.PROPOSAL_ANCHORS, c).size)
                         | _mean_over_scenes(cfg, n, AnchorLUT(nms.PROPOSAL_ANCHORS, c), cfg.iou_threshold)
                         for c in cfg.cutoffs],
        "threshold_sweep": [dict(t=t) | _mean_over_scenes(cfg, n, lut, t) for t in cfg.thresholds],
        "drift_sweep": [dict(delta_std=d) | _mean_over_scenes(cfg, n, lut, cfg.iou_threshold, delta_std=d)
                        for d in cfg.drifts],
        "topk_sweep": [dict(top_k=k) | _mean_over_scenes(cfg, n, lut, cfg.iou_threshold, top_k=k) for k in cfg.top_ks],
        "keep_diff": keep_diff(cfg, lut, min(2000, n)),
        "full_radius": full_radius_check(cfg, min(2000, n)),
        "resolution": resolution_check(cfg, lut),
        "detector": detector_ap(cfg) if cfg.detector_steps else None,
    }


def _train_detector_state(cfg: ASAPConfig) -> dict[str, torch.Tensor]:
    from labkit.data.scenes import make_scenes
    from labkit.models.tiny_detector import TinyDetector, train_detector

    scenes = make_scenes(cfg.detector_train_images, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = TinyDetector(num_classes=len(scenes.class_names))
    train_detector(model, scenes, cfg.detector_steps, seed=cfg.seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def detector_ap(cfg: ASAPConfig) -> dict[str, Any]:
    """Box AP of the tiny detector on held-out scenes with greedy NMS vs ASAP-NMS inside its RPN."""
    from labkit.data.scenes import coco_area_ranges, make_scenes, scenes_to_coco
    from labkit.metrics.detection import coco_evaluate
    from labkit.models.tiny_detector import DEFAULT_ANCHORS, TinyDetector, detect

    key = {k: getattr(cfg, k) for k in ("seed", "detector_steps", "detector_train_images")}
    state = cached("asap-detector", key, lambda: _train_detector_state(cfg))
    test = make_scenes(cfg.detector_test_images, seed=cfg.seed + 10_000)
    model = TinyDetector(num_classes=len(test.class_names))
    model.load_state_dict(state)
    lut = AnchorLUT(DEFAULT_ANCHORS, cfg.cutoff)

    def asap_rpn_nms(boxes, scores, cells, grid_shape):
        return asap_nms(boxes, scores, cells, grid_shape[:2], lut, model.rpn_nms_thresh)

    ground_truth = scenes_to_coco(test, include_masks=False)
    areas = coco_area_ranges(test.images.shape[-1])
    out = {}
    for name, rpn_nms in (("greedy", None), ("asap", asap_rpn_nms)):
        detections = detect(model, test.images, rpn_nms=rpn_nms)
        scores = coco_evaluate(ground_truth, detections, areas)
        out[name] = {k: float(scores[k]) for k in ("AP", "AP50", "AP_small", "AP_medium", "AP_large")}
    return out | dict(steps=cfg.detector_steps, train_images=cfg.detector_train_images,
                      test_images=cfg.detector_test_images)


# ---- claims ----------------------------------------------------------------------------------

def _slope(rows: list[dict], impl: str) -> float:
    points = [(r["N"], r["median_s"]) for r in rows if r["impl"] == impl]
    n, t = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(n, t, 1)[0])


def claims(results: dict) -> list[Claim]:
    """The spec's E1–E5, measured on ``results``."""
    cfg = results["config"]
    at = max(r["N"] for r in results["counts"] if r["N"] <= 6000)
    count = next(r for r in results["counts"] if r["N"] == at)
    ratio = count["asap_iou"] / max(count["greedy_iou"], 1)
    sweep = [r for r in results["cutoff_sweep"] if r["cutoff"] <= 0.2]
    worst_jaccard = min([r["jaccard"] for r in sweep] + [count["jaccard"]])
    latency = {(r["N"], r["impl"]): r["median_s"] for r in results["latency"]}
    speedup = latency[(at, "torchvision")] / latency[(at, "asap_numba")]
    sizes = sorted(cfg["sizes"])
    speedups = [latency[(n, "greedy_numba")] / latency[(n, "asap_numba")] for n in sizes]
    out = [
        Claim(f"E1. IoU evaluations at N={at}, θ_a={cfg['cutoff']}", "most comparisons are far apart",
              ratio, "ASAP / greedy ≤ 0.1", ratio <= 0.1),
        Claim("E2a. keep-set agreement, θ_a ≤ 0.2", "no loss of accuracy", worst_jaccard,
              "keep-set Jaccard vs greedy ≥ 0.99", worst_jaccard >= 0.99),
        Claim("E2b. full-radius limit equals greedy", "exact in the limit", "equal" if results["full_radius"]["equal"]
              else "differs", "identical keep sets (θ_a = 0, unbounded window)", results["full_radius"]["equal"]),
    ]
    detector = results["detector"]
    if detector:
        gap = abs(detector["asap"]["AP"] - detector["greedy"]["AP"]) * 100
        out.append(Claim("E2c. detector AP with ASAP in the RPN", "no accuracy loss (COCO, VOC)", gap,
                         "|AP(ASAP) − AP(greedy)| ≤ 0.5 AP points", gap <= 0.5, asserted_at=("full",)))
    else:
        out.append(Claim("E2c. detector AP with ASAP in the RPN", "no accuracy loss (COCO, VOC)", None,
                         "|AP(ASAP) − AP(greedy)| ≤ 0.5 AP points", False, asserted_at=("full",)))
    out += [
        Claim(f"E3a. ASAP (numba) vs torchvision NMS at N={at}", "13.6 ms → 1.2 ms on CPU (≈ 11×)", speedup,
              "speed-up ≥ 5× (one thread, median)", speedup >= 5, asserted_at=(),
              detail="timing: measured and shown, never asserted (the benchmark prints it)"),
        Claim("E3b. speed-up over compiled greedy grows with N", "gains grow with the number of proposals",
              speedups[-1] - speedups[0], f"speed-up at N={sizes[-1]} − at N={sizes[0]} > 0",
              speedups[-1] > speedups[0], asserted_at=()),
        Claim("E4. ASAP scales better than greedy", "O(K·|N|) instead of O(N·K)",
              _slope(results["latency"], "greedy_numba") - _slope(results["latency"], "asap_numba"),
              "log–log slope(greedy numba) − slope(ASAP numba) > 0",
              _slope(results["latency"], "asap_numba") < _slope(results["latency"], "greedy_numba"), asserted_at=()),
    ]
    res = results["resolution"]
    same = res["lut_size_before"] == res["lut_size_after"]
    out.append(Claim("E5. one LUT for every resolution", "resolution-agnostic, drop-in",
                     f"{res['lut_size_before']:.1f} → {res['lut_size_after']:.1f} over {res['image_sizes']} px",
                     "LUT unchanged after serving both sizes", same))
    return out
