"""Single runs of chapter 05 (lottery tickets for detection): pretraining, the dense detector, tickets.

Every function takes plain arguments and returns plain data so ``labkit.cache.cached_runs`` can
spread runs over processes and cache each one. Runs that build on an earlier stage (a ticket on the
dense run, a transfer ticket on the pretrained backbone) get that stage as a file path written by
the parent (``experiments.lottery``), so a worker never retrains what another stage produced.

A run trains and evaluates on its ``device`` keyword (``"cpu"``, ``"cuda"``): the data sets and
every random draw stay on the CPU (the same generators, in the same order, as a CPU run), models
and batches move to the device, and everything a run returns is on the CPU (``to_cpu``).

The detector is ``labkit.models.TinyDetector`` on shape scenes. Its four modules follow the paper's
split: ``base`` (the backbone), ``rpn``, ``top`` (RoI features, fc1 and fc2) and ``heads`` (the
class and box predictors).
"""
from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from labkit.config import check_choice
from labkit.data.scenes import SceneConfig, coco_area_ranges, make_object_crops, make_scenes, scenes_to_coco
from labkit.methods import lottery
from labkit.metrics.detection import coco_evaluate
from labkit.models.anchors import AnchorConfig
from labkit.models.tiny_detector import TinyDetector, detect, train_detector
from labkit.train import Hook, fit

CLASSES = ("circle", "square", "triangle", "cross", "star", "bar")  # Zipf-frequent first; bars are thin and rare
PREDICTORS = ("rpn.objectness", "rpn.deltas", "heads.cls_score", "heads.bbox_pred")
MAIN_MODULES = ("base", "rpn", "top")  # the COCO code's rule: convs and fc1/fc2, predictors dense
MODULE_SUBSETS = {"heads": ("heads",), "rpn": ("rpn",), "base": ("base",), "top": ("top",),
                  "base+top": ("base", "top"), "all": ("base", "rpn", "top", "heads")}
METHODS = ("global", "layerwise", "iterative", "random_reinit", "random_mask", "transfer")
VIEWER_IMAGES = 6
SCORE_FOR_VIEWER = 0.3


# --- data and model ---------------------------------------------------------------------------

def scene_config(image_size: int, contrast: float, clutter: float) -> SceneConfig:
    return SceneConfig(image_size=image_size, classes=CLASSES, contrast=(contrast, contrast + 0.4),
                       clutter=clutter, texture=clutter, size_mix=(0.3, 0.4, 0.3))


@functools.lru_cache(maxsize=3)  # one per training seed of the chapter
def scenes(image_size: int, contrast: float, clutter: float, num_train: int, num_test: int, seed: int):
    """Training and test scenes (disjoint random streams: seeds ``seed`` and ``seed + 1``)."""
    config = scene_config(image_size, contrast, clutter)
    return make_scenes(num_train, config, seed=seed), make_scenes(num_test, config, seed=seed + 1)


def make_detector(seed: int, widths: tuple = (16, 32, 64, 64), fc_dim: int = 128, *,
                  device: str = "cpu") -> TinyDetector:
    """The chapter's detector, initialised from ``seed`` (stride 8, anchors 8–64 px) on ``device``.

    The weights are drawn on the CPU and then moved, so every device starts from the same values.
    """
    torch.manual_seed(seed)
    model = TinyDetector(len(CLASSES), AnchorConfig(stride=8, scales=(8.0, 16.0, 32.0, 64.0)),
                         widths=tuple(widths), fc_dim=fc_dim, pre_nms_top_n=300, post_nms_top_n=100)
    return model.to(device)


def detector_weights(model: torch.nn.Module, modules: tuple | None = None) -> dict:
    """The prunable set: the COCO code's rule (``modules=None``) or every weight of ``modules``."""
    if modules is None:
        return lottery.prunable_weights(model, MAIN_MODULES, exclude=PREDICTORS)
    return lottery.prunable_weights(model, modules)


def module_shares(model: torch.nn.Module) -> dict[str, float]:
    """Share of all parameters held by each of the four modules (the paper's Table 3 column)."""
    total = sum(p.numel() for p in model.parameters())
    return {name: sum(p.numel() for p in getattr(model, name).parameters()) / total
            for name in ("base", "rpn", "top", "heads")}


def _load(path: str) -> Any:
    return torch.load(path, weights_only=True, map_location="cpu")


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (nested dicts, lists, tuples) on the CPU: what a run returns
    is cached and plotted, and must not depend on the device it trained on."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


# --- pretraining: the stand-in for ImageNet ---------------------------------------------------

def _crop_accuracy(model, head, X, y) -> float:
    """Accuracy on crops ``X (n, 3, s, s)``, labels ``y (n,)`` (CPU; batches go to the model's device)."""
    device = next(head.parameters()).device
    was = model.training
    model.eval()
    with torch.no_grad():
        correct = sum(int((head(model.base((X[i:i + 500].to(device) - 0.5) / 0.25).mean((2, 3))).argmax(1)
                           == y[i:i + 500].to(device)).sum()) for i in range(0, len(X), 500))
    model.train(was)
    return correct / len(X)


def _crop_task(image_size: int, contrast: float, clutter: float, num_crops: int, crop_size: int, lr: float,
               seed: int, batch_size: int, widths: tuple, batch_seed: int, device: str = "cpu") -> dict:
    """The pretraining task: the detector's ``base`` plus a linear classifier on single-shape crops.

    The crops stay on the CPU and each batch moves to ``device``; the classifier is drawn on the CPU
    (right after the detector, from the same global stream) and then moved."""
    config = scene_config(image_size, contrast, clutter)
    X, y = make_object_crops(num_crops, config, seed=seed + 2, size=crop_size)
    X_test, y_test = make_object_crops(500, config, seed=seed + 3, size=crop_size)
    model = make_detector(seed, widths, device=device)
    head = torch.nn.Linear(model.base.out_channels, len(CLASSES)).to(device)
    generator = torch.Generator().manual_seed(batch_seed)
    params = torch.nn.ModuleDict({"base": model.base, "classifier": head})
    optimizer = torch.optim.AdamW(params.parameters(), lr=lr, weight_decay=1e-4)

    def step_fn(_, step):
        idx = torch.randint(len(X), (batch_size,), generator=generator)
        logits = head(model.base((X[idx].to(device) - 0.5) / 0.25).mean((2, 3)))
        return {"loss": F.cross_entropy(logits, y[idx].to(device))}

    def accuracy() -> float:
        return _crop_accuracy(model, head, X_test, y_test)

    return dict(model=model, params=params, optimizer=optimizer, step_fn=step_fn, accuracy=accuracy)


def pretrain(image_size: int, contrast: float, clutter: float, num_crops: int, crop_size: int, steps: int,
             lr: float, seed: int, rewind_frac: float = 0.1, batch_size: int = 64,
             widths: tuple = (16, 32, 64, 64), device: str = "cpu") -> dict:
    """Train the detector's ``base`` (plus a linear classifier) to classify single-shape crops.

    Returns the base's state, held-out crop accuracy, the loss history and the rewind checkpoint
    (``rewind_frac`` of pretraining, classifier and optimizer included) that ``prune_pretrained``
    rewinds to; every tensor on the CPU whatever ``device`` trained it.
    """
    task = _crop_task(image_size, contrast, clutter, num_crops, crop_size, lr, seed, batch_size, widths, seed,
                      device)
    params, optimizer = task["params"], task["optimizer"]
    rewind_step = int(rewind_frac * steps)
    saved = {"rewind": lottery.checkpoint(params, optimizer, 0)}

    class SaveRewind(Hook):
        def after_step(self, state):
            if state.step + 1 == rewind_step:
                saved["rewind"] = lottery.checkpoint(params, optimizer, rewind_step)

    history = fit(params, itertools.repeat(None), task["step_fn"], [optimizer], steps, hooks=[SaveRewind()],
                  log_every=10, desc="pretrain", progress=False)
    return to_cpu(dict(base={k: v.clone() for k, v in task["model"].base.state_dict().items()}, masks=None,
                       accuracy=task["accuracy"](), loss=history["loss"], keep=1.0, rewind=saved["rewind"]))


def prune_pretrained(pretrain_file: str, keep: float, image_size: int, contrast: float, clutter: float,
                     num_crops: int, crop_size: int, steps: int, lr: float, seed: int, batch_size: int = 64,
                     widths: tuple = (16, 32, 64, 64), device: str = "cpu") -> dict:
    """The ImageNet-ticket stand-in: prune the dense pretraining (``pretrain_file``) once, globally
    over every base conv (fc stays dense, as in the official ImageNet IMP), rewind to its saved
    checkpoint and retrain the rest of the pretraining schedule with the mask. Returns what
    ``pretrain`` does, with the base's mask."""
    dense = _load(pretrain_file)
    task = _crop_task(image_size, contrast, clutter, num_crops, crop_size, lr, seed, batch_size, widths, seed + 1,
                      device)
    params, optimizer = task["params"], task["optimizer"]
    task["model"].base.load_state_dict(dense["base"])
    masks = lottery.global_magnitude_masks(lottery.prunable_weights(params, ("base",)), keep)
    start = lottery.rewind(params, optimizer, dense["rewind"], masks)
    lottery.enforce_masks(params, masks, optimizer)
    history = fit(params, itertools.repeat(None), task["step_fn"], [optimizer], steps - start, log_every=10,
                  desc="pretrain ticket", progress=False)
    return to_cpu(dict(base={k: v.clone() for k, v in task["model"].base.state_dict().items()},
                       masks={k.removeprefix("base."): v for k, v in masks.items()}, accuracy=task["accuracy"](),
                       loss=history["loss"], keep=keep))


# --- evaluation -------------------------------------------------------------------------------

def _subset(ground_truth: dict, image_ids: set) -> dict:
    return {**ground_truth, "images": [i for i in ground_truth["images"] if i["id"] in image_ids],
            "annotations": [a for a in ground_truth["annotations"] if a["image_id"] in image_ids]}


def evaluate(model: TinyDetector, test, num_folds: int, device: str = "cpu") -> dict:
    """COCO AP on the test scenes, overall and on ``num_folds`` disjoint folds (for intervals).

    The model runs on ``device`` (it is moved there) on batches of 50 test images ``(50, 3, H, W)``;
    the detections come back to the CPU before scoring."""
    model.to(device)
    detections = []
    for i in range(0, len(test), 50):
        detections += [to_cpu(d) for d in detect(model, test.images[i:i + 50].to(device))]
    ground_truth = scenes_to_coco(test, include_masks=False)
    ranges = {k: v for k, v in coco_area_ranges(test.image_size).items() if k != "all"}
    pooled = coco_evaluate(ground_truth, detections, ranges)
    folds = []
    for ids in np.array_split(np.arange(1, len(test) + 1), num_folds):
        fold = coco_evaluate(_subset(ground_truth, set(ids.tolist())), [detections[i - 1] for i in ids], ranges)
        folds.append({k: v for k, v in fold.items() if k != "per_class"})
    viewer = [{k: v[d["scores"] >= SCORE_FOR_VIEWER].numpy() for k, v in d.items()}
              for d in detections[:VIEWER_IMAGES]]
    return dict(metrics={k: v for k, v in pooled.items() if k != "per_class"}, per_class=pooled["per_class"],
                folds=folds, viewer=viewer)


# --- the dense run ----------------------------------------------------------------------------

class _Snapshots(Hook):
    """Rewind checkpoints (weights + optimizer) and prunable-weight snapshots at given iterations."""

    def __init__(self, model, checkpoint_steps, snapshot_steps, start_step=0):
        self.model, self.start_step = model, start_step
        self.checkpoint_steps, self.snapshot_steps = set(checkpoint_steps), set(snapshot_steps)
        self.optimizer = None
        self.checkpoints, self.snapshots = {}, {}

    def record(self, step):
        if step in self.checkpoint_steps:
            self.checkpoints[step] = lottery.checkpoint(self.model, self.optimizer, step)
        if step in self.snapshot_steps:
            self.snapshots[step] = {k: w.detach().clone() for k, w in detector_weights(self.model).items()}

    def after_step(self, state):
        self.record(self.start_step + state.step + 1)


def _train_kwargs(train: dict) -> dict:
    return dict(lr=train["lr"], batch_size=train["batch_size"], optimizer=train["optimizer"],
                warmup_steps=train["warmup_steps"], decay_at=tuple(train["decay_at"]),
                roi_batch=train["roi_batch"], log_every=10)


def train_dense(data: dict, train: dict, pretrain_file: str, checkpoint_steps: list, snapshot_steps: list,
                keeps: list, num_folds: int, device: str = "cpu") -> dict:
    """The dense detector from the pretrained backbone: rewind checkpoints, early-bird snapshots, AP.

    ``early_bird[keep]`` is the IoU between the global mask computed at each snapshot iteration and
    the mask of the final weights (the paper's Fig. 2f). Trained on ``device``; returned on the CPU.
    """
    train_scenes, test = scenes(**data)
    model = make_detector(train["seed"], device=device)
    model.base.load_state_dict(_load(pretrain_file)["base"])
    hook = _Snapshots(model, checkpoint_steps, snapshot_steps)
    hook.record(0)

    def setup(optimizer):
        hook.optimizer = optimizer

    history = train_detector(model, train_scenes, train["steps"], seed=train["seed"], hooks=[hook], setup=setup,
                             **_train_kwargs(train))
    final = detector_weights(model)
    early_bird = {}
    for keep in keeps:
        final_mask = lottery.global_magnitude_masks(final, keep)
        early_bird[str(keep)] = [lottery.mask_iou(lottery.global_magnitude_masks(hook.snapshots[s], keep), final_mask)
                                 for s in sorted(hook.snapshots)]
    return to_cpu(dict(state={k: v.clone() for k, v in model.state_dict().items()}, checkpoints=hook.checkpoints,
                       snapshot_steps=sorted(hook.snapshots), early_bird=early_bird, loss=history["loss"],
                       module_shares=module_shares(model), **evaluate(model, test, num_folds, device)))


# --- tickets ----------------------------------------------------------------------------------

def _masks_for(method: str, weights: dict, keep: float, generator) -> dict:
    if method == "layerwise":
        return lottery.layerwise_magnitude_masks(weights, keep)
    masks = lottery.global_magnitude_masks(weights, keep)
    return lottery.random_masks_like(masks, generator) if method == "random_mask" else masks


def _retrain(model, masks, data, train, start_step, optimizer_state):
    """Train from ``start_step`` to the end of the schedule with ``masks`` enforced at every step."""
    train_scenes, _ = scenes(**data)
    handles = []
    try:
        return train_detector(model, train_scenes, train["steps"], seed=train["seed"] + 1, start_step=start_step,
                              optimizer_state=optimizer_state,
                              setup=lambda optimizer: handles.extend(lottery.enforce_masks(model, masks, optimizer)),
                              **_train_kwargs(train))
    finally:
        for handle in handles:
            handle.remove()


def _summary(model, masks, history, test, num_folds, device, **extra) -> dict:
    named = dict(model.named_parameters())
    revived = sum(int((named[n].detach()[~m] != 0).sum()) for n, m in masks.items())
    return to_cpu(dict(sparsity=lottery.sparsity(model, masks), layer_sparsity=lottery.layer_sparsity(masks),
                       revived=revived, loss=history["loss"], **evaluate(model, test, num_folds, device), **extra))


def ticket(data: dict, train: dict, dense_file: str, method: str, keep: float, rewind_step: int,
           num_folds: int, num_rounds: int = 2, modules: tuple | None = None, restart: bool = False,
           device: str = "cpu") -> dict:
    """Prune the dense run's final weights, rewind to ``rewind_step`` and retrain with the mask.

    Retraining resumes the dense schedule at ``rewind_step`` with its optimizer state (the VOC
    recipe); ``restart=True`` retrains the whole schedule from step 0 with a fresh optimizer from the
    rewound weights (the COCO recipe), so tickets rewound to different points get the same steps.

    ``method``: ``global`` / ``layerwise`` (Eq. 2), ``iterative`` (global, ``num_rounds`` rounds
    of Eq. 1, each rewinding to the same point), ``random_reinit`` or ``random_mask`` (controls,
    see ``_reinit``; the random mask has the global mask's per-layer counts at random positions,
    on the rewound weights). ``modules`` picks the prunable set (None: the COCO rule; a tuple: every
    weight of those modules, the VOC code's module switch). Trained on ``device``; returned on the CPU.
    """
    check_choice("method", method, METHODS[:-1])
    _, test = scenes(**data)
    dense = _load(dense_file)
    if rewind_step not in dense["checkpoints"]:
        raise ValueError(f"rewind_step={rewind_step!r} is not valid; the dense run saved {sorted(dense['checkpoints'])}")
    saved = dense["checkpoints"][rewind_step]
    start, optimizer_state = (0, None) if restart else (rewind_step, saved["optimizer"])
    model = make_detector(train["seed"], device=device)
    model.load_state_dict(dense["state"])
    weights = detector_weights(model, modules)
    generator = torch.Generator().manual_seed(train["seed"] + 17)
    rounds = []
    if method == "iterative":
        masks = None
        for keep_r in lottery.keep_schedule(keep, num_rounds):
            masks = lottery.global_magnitude_masks(detector_weights(model, modules), keep_r, masks)
            lottery.rewind(model, None, saved, masks)
            history = _retrain(model, masks, data, train, start, optimizer_state)
            rounds.append(dict(keep=keep_r, sparsity=lottery.sparsity(model, masks),
                               **evaluate(model, test, num_folds, device)))
        expected = lottery.kept_count(keep_r, sum(w.numel() for w in weights.values()))
        return _summary(model, masks, history, test, num_folds, device, rounds=rounds, expected_kept=expected)
    masks = _masks_for(method, weights, keep, generator)
    expected = (sum(lottery.kept_count(keep, w.numel()) for w in weights.values()) if method == "layerwise"
                else lottery.kept_count(keep, sum(w.numel() for w in weights.values())))
    if method == "random_reinit":
        model = _reinit(train["seed"], dense["checkpoints"][0]["model"], masks, device=device)
        history = _retrain(model, masks, data, train, 0, None)
    else:
        lottery.rewind(model, None, saved, masks)
        history = _retrain(model, masks, data, train, start, optimizer_state)
    return _summary(model, masks, history, test, num_folds, device, expected_kept=expected)


def _reinit(seed: int, initial_state: dict, masks: dict, device: str = "cpu") -> TinyDetector:
    """The random re-init control, fair to the pretraining: the pretrained ``base`` (the dense run's
    step-0 weights, as the ticket's own backbone started) and freshly drawn ``rpn``, ``top`` and
    ``heads`` (another seed than the dense run's draw), with the ticket's mask. It is trained the
    whole schedule from step 0, as many steps as the ticket's weights saw (dense steps up to the
    rewind point, then retraining), so the two arms differ only in the randomly drawn values."""
    model = make_detector(seed + 7919, device=device)
    model.base.load_state_dict({k.removeprefix("base."): v for k, v in initial_state.items() if k.startswith("base.")})
    lottery.apply_masks(model, masks)
    return model


def transfer_ticket(data: dict, train: dict, pretrain_file: str, dense_file: str, num_folds: int,
                    device: str = "cpu") -> dict:
    """The "universal" ticket: the sparse pretrained backbone (values and mask) in the detector.

    The rest of the detector starts from the dense run's initialisation and stays dense; the
    backbone's pruned weights stay zero; training is the dense run's full schedule, on ``device``.
    """
    _, test = scenes(**data)
    pretrained = _load(pretrain_file)
    model = make_detector(train["seed"], device=device)
    model.load_state_dict(_load(dense_file)["checkpoints"][0]["model"])
    model.base.load_state_dict(pretrained["base"])
    masks = {f"base.{k}": v.to(device) for k, v in pretrained["masks"].items()}  # beside their weights
    history = _retrain(model, masks, data, train, 0, None)
    expected = lottery.kept_count(pretrained["keep"], sum(m.numel() for m in masks.values()))
    return _summary(model, masks, history, test, num_folds, device, pretrain_accuracy=pretrained["accuracy"],
                    expected_kept=expected)


def class_frequencies(data: dict) -> list[int]:
    """Training objects per class (for sorting the per-class view by frequency)."""
    train_scenes, _ = scenes(**data)
    labels = torch.cat(train_scenes.labels)
    return torch.bincount(labels, minlength=len(CLASSES)).tolist()

