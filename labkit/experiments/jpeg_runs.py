"""Single runs of chapter 07 (JPEG compression defects): the classifier, correctors, mitigations.

Every function takes plain arguments and returns plain data (state dicts, histories), so
``labkit.cache.cached_runs`` can spread the runs over processes and cache each one. A run that
builds on an earlier one (fine-tuning on the classifier, TTAC on the classifier and a corrector)
gets it as a file written by the parent (``labkit.cache.artifact``).

Compression always goes through the real codec (``jpeg.jpeg_roundtrip``, Pillow's libjpeg) at the
model's input size: patches are cut first, then compressed.

Compute matching: the classifier and the correctors also return a ``checkpoint``, their weights
``checkpoint_step`` steps into training. A mitigation starts from it (fine-tuning from the
classifier's, TTAC from the off-the-shelf corrector's) and trains for the steps that remain, so a
mitigation and the model it is compared with have trained for the same number of steps.

A run trains and evaluates on its ``device`` keyword (``"cpu"``, ``"cuda"``): patches, random draws
(on CPU generators) and the codec stay on the CPU, each batch moves to the device, and everything
a run returns is on the CPU. ``predict`` and ``correct`` take CPU images, run on the model's
device and return CPU tensors.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from labkit.data.photos import PHOTO_NAMES, load_photo, photo_patches, split_boundary
from labkit.methods import jpeg
from labkit.models.corrector import Corrector
from labkit.models.small_cnn import ResNetSmall
from labkit.train import FitState, Hook, fit

CLASSIFIER_WIDTHS = (16, 32, 64)  # ~0.1 M parameters: a step of 64 patches takes ~0.1 s on one core
CLEAN = 0  # the uncompressed reference in quality lists
TRAIN_QUALITIES = tuple(range(10, 91))  # q ~ U{10..90} for correctors and mixed fine-tuning
# Inference chunk: on one CPU core a 32-channel 48 px corrector pass over 1,500 patches took ~2.5x
# longer in chunks of 500 than of 16 (activations of a small chunk stay in cache).
EVAL_CHUNK = 16


@functools.lru_cache(maxsize=2)
def patches(patch_size: int, train_per_class: int, test_per_class: int, seed: int):
    """``(X_train, y_train, X_test, y_test)``: the left 70 % of each photo trains, the right 30 % tests."""
    X, y = photo_patches(train_per_class, patch_size, split="train", seed=seed)
    X_test, y_test = photo_patches(test_per_class, patch_size, split="test", seed=seed + 1)
    return X, y, X_test, y_test


def make_classifier(seed: int) -> ResNetSmall:
    torch.manual_seed(seed)
    return ResNetSmall(len(PHOTO_NAMES), in_channels=3, widths=CLASSIFIER_WIDTHS)


def classifier_features(model: ResNetSmall, x: torch.Tensor) -> torch.Tensor:
    """Pooled features ``(b, widths[2])`` before the classifier (TTAC's "features" target)."""
    return model.pool(model.stages(model.stem(x))).flatten(1)


class TaskModel(torch.nn.Module):
    """The frozen classifier as TTAC sees it: logits from ``forward``, pooled ``features``."""

    def __init__(self, model: ResNetSmall):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(normalise(x))

    def features(self, x):
        return classifier_features(self.model, normalise(x))


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.25


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    gain = 1 + 0.1 * (2 * torch.rand(len(x), 1, 1, 1, generator=generator) - 1)
    return (x * gain).clamp(0, 1)


def _batches(n: int, batch_size: int, generator: torch.Generator):
    while True:
        yield from torch.randperm(n, generator=generator).split(batch_size)


def _compress_random(x: torch.Tensor, generator: torch.Generator, qualities, subsampling: str):
    """Each image at its own quality drawn from ``qualities``; returns images and the qualities."""
    picks = torch.randint(len(qualities), (len(x),), generator=generator).tolist()
    q = [qualities[i] for i in picks]
    out = torch.stack([jpeg.jpeg_roundtrip(x[i:i + 1], q[i], subsampling)[0][0] for i in range(len(x))])
    return out, q


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _on_cpu(state: dict | None) -> dict | None:
    """A state dict with every tensor on the CPU (what a run returns is cached and must not depend
    on the device it trained on); None stays None."""
    return None if state is None else {k: v.cpu() for k, v in state.items()}


def predict(model, X: torch.Tensor) -> torch.Tensor:
    """Top-1 class ``(n,)``, on the CPU, of ``model`` (put in eval mode, on any device) on CPU images
    ``X (n, 3, H, W)``, in chunks of ``EVAL_CHUNK`` moved to the model's device."""
    model.eval()
    device = _device_of(model)
    with torch.no_grad():
        return torch.cat([model(normalise(X[i:i + EVAL_CHUNK].to(device))).argmax(1).cpu()
                          for i in range(0, len(X), EVAL_CHUNK)])


def accuracy(model, X: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 of ``model`` (put in eval mode) on ``X``."""
    return int((predict(model, X) == y).sum()) / len(X)


def per_class_accuracy(hits: np.ndarray, y: torch.Tensor, num_classes: int) -> np.ndarray:
    """Top-1 per class ``(num_classes,)`` from ``hits`` (``(n,)`` or one row per seed ``(s, n)``: 1 where
    the prediction was right), over seeds and items; NaN for a class absent from ``y``."""
    hits, labels = np.atleast_2d(np.asarray(hits, float)), np.asarray(y)
    return np.array([float(hits[:, labels == c].mean()) if (labels == c).any() else float("nan")
                     for c in range(num_classes)])


def _load(path: str) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def _checkpoint(path: str) -> dict:
    """The weights a mitigation starts from: the checkpoint saved in the run at ``path``."""
    state = _load(path).get("checkpoint")
    if state is None:
        raise ValueError(f"{path} holds no checkpoint; train that model with a checkpoint_step")
    return state


class Checkpoint(Hook):
    """Keeps a copy of the model's weights after ``step`` training steps (0: before training)."""

    def __init__(self, model: torch.nn.Module, step: int | None):
        self.step = step
        self.state = copy.deepcopy(model.state_dict()) if step == 0 else None

    def after_step(self, state: FitState) -> None:
        if self.step is not None and state.step + 1 == self.step:
            self.state = copy.deepcopy(state.model.state_dict())


# --- the task model ---------------------------------------------------------------------------

def train_classifier(data: dict, steps: int, lr: float, batch_size: int, seed: int,
                     checkpoint_step: int | None = None, device: str = "cpu") -> dict:
    """The task model, trained on ``device`` on clean (never compressed) patches with flips and gain
    jitter; its weights after ``checkpoint_step`` steps are returned too (where fine-tuning starts)."""
    X, y, _, _ = patches(**data)
    model = make_classifier(seed).to(device)
    checkpoint = Checkpoint(model, checkpoint_step)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def step_fn(idx, step):
        x = _augment(X[idx], generator).to(device)  # drawn on the CPU generator, then moved
        return {"loss": F.cross_entropy(model(normalise(x)), y[idx].to(device))}

    history = fit(model, _batches(len(X), batch_size, generator), step_fn, [optimizer], steps, hooks=[checkpoint],
                  schedulers=[schedule], log_every=10, desc="classifier", progress=False)
    return dict(state=_on_cpu(model.state_dict()), checkpoint=_on_cpu(checkpoint.state), loss=history["loss"])


def finetune(data: dict, classifier_file: str, steps: int, lr: float, batch_size: int, seed: int,
             quality: int | None = None, subsampling: str = "4:2:0", device: str = "cpu") -> dict:
    """Mitigation 1: supervised fine-tuning on compressed patches, mixed q ~ U{10..90} or one ``quality``.

    It starts from the classifier's checkpoint and replaces its last ``steps`` steps (a cosine
    decay to zero, as the classifier's own schedule ends). Half of each batch stays clean, so the
    model keeps seeing the clean distribution.
    """
    X, y, _, _ = patches(**data)
    model = make_classifier(seed)
    model.load_state_dict(_checkpoint(classifier_file))
    model.to(device)
    generator = torch.Generator().manual_seed(seed + 1)
    qualities = TRAIN_QUALITIES if quality is None else (quality,)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def step_fn(idx, step):
        x = _augment(X[idx], generator)
        half = len(x) // 2
        x = torch.cat([_compress_random(x[:half], generator, qualities, subsampling)[0], x[half:]]).to(device)
        return {"loss": F.cross_entropy(model(normalise(x)), y[idx].to(device))}

    history = fit(model, _batches(len(X), batch_size, generator), step_fn, [optimizer], steps,
                  schedulers=[schedule], log_every=10, desc="fine-tune", progress=False)
    return dict(state=_on_cpu(model.state_dict()), loss=history["loss"])


# --- correctors -------------------------------------------------------------------------------

def _random_crops(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``size × size`` crop per image (the whole image when ``size`` is its side)."""
    side = x.shape[-1]
    if size >= side:
        return x
    ys, xs = (torch.randint(side - size + 1, (len(x),), generator=generator).tolist() for _ in range(2))
    return torch.stack([img[:, y:y + size, x0:x0 + size] for img, y, x0 in zip(x, ys, xs)])


def train_corrector(data: dict, steps: int, lr: float, batch_size: int, seed: int, conditioned: bool = True,
                    subsampling: str = "4:2:0", crop: int = 48, size: tuple = (32, 3),
                    checkpoint_step: int | None = None, device: str = "cpu") -> dict:
    """Mitigation 2: the off-the-shelf corrector, trained on ``device`` for pixel fidelity (L1) on
    every photo's training region at q ~ U{10..90}. It never sees a label or the task model. Crops
    of ``crop`` pixels are cut first and compressed at that size (the corrector is fully
    convolutional). Its weights after ``checkpoint_step`` steps are returned too (where TTAC starts)."""
    X, _, _, _ = patches(**data)
    corrector = make_corrector(seed, conditioned, size).to(device)
    checkpoint = Checkpoint(corrector, checkpoint_step)
    generator = torch.Generator().manual_seed(seed + 2)
    optimizer = torch.optim.Adam(corrector.parameters(), lr=lr)

    def step_fn(idx, step):
        clean = _random_crops(_augment(X[idx], generator), crop, generator)
        compressed, q = _compress_random(clean, generator, TRAIN_QUALITIES, subsampling)
        tables = jpeg.table_features(q).to(device) if conditioned else None
        return {"loss": jpeg.pixel_loss(corrector, clean.to(device), compressed.to(device), tables)}

    history = fit(corrector, _batches(len(X), batch_size, generator), step_fn, [optimizer], steps,
                  hooks=[checkpoint], log_every=10, desc="corrector", progress=False)
    return dict(state=_on_cpu(corrector.state_dict()), checkpoint=_on_cpu(checkpoint.state), loss=history["loss"])


def make_corrector(seed: int, conditioned: bool = True, size: tuple = (32, 3)) -> Corrector:
    """The corrector with ``size = (channels, num_blocks)``; the tail starts at zero (identity)."""
    torch.manual_seed(seed)
    channels, num_blocks = size
    return Corrector(channels=channels, num_blocks=num_blocks, conditioned=conditioned)


def train_ttac(data: dict, classifier_file: str, corrector_file: str, steps: int, lr: float, batch_size: int,
               seed: int, target: str = "logits", pixel_weight: float = 0.0, conditioned: bool = True,
               subsampling: str = "4:2:0", size: tuple = (32, 3), device: str = "cpu") -> dict:
    """Mitigation 3: task-targeted artifact correction, trained on ``device``. Starts from the
    off-the-shelf corrector's checkpoint (and so replaces its last ``steps`` steps) and matches the
    frozen, fully trained classifier's outputs on clean patches; the labels are never loaded."""
    X, _, _, _ = patches(**data)
    classifier = make_classifier(seed)
    classifier.load_state_dict(_load(classifier_file)["state"])
    task = TaskModel(classifier).to(device).eval().requires_grad_(False)
    corrector = make_corrector(seed, conditioned, size)
    corrector.load_state_dict(_checkpoint(corrector_file))
    corrector.to(device)
    generator = torch.Generator().manual_seed(seed + 3)
    optimizer = torch.optim.Adam(corrector.parameters(), lr=lr)

    def step_fn(idx, step):
        clean = _augment(X[idx], generator)
        compressed, q = _compress_random(clean, generator, TRAIN_QUALITIES, subsampling)
        tables = jpeg.table_features(q).to(device) if conditioned else None
        return {"loss": jpeg.task_targeted_loss(task, corrector, clean.to(device), compressed.to(device), tables,
                                                pixel_weight=pixel_weight, target=target)}

    history = fit(corrector, _batches(len(X), batch_size, generator), step_fn, [optimizer], steps, log_every=10,
                  desc="TTAC", progress=False)
    return dict(state=_on_cpu(corrector.state_dict()), loss=history["loss"])


# --- evaluation: one seed's settings on the real codec -----------------------------------------

@contextlib.contextmanager
def one_thread():
    """Torch and BLAS on one thread, as in the workers: small convolutions gain nothing from threads,
    and on a busy machine they made the evaluation many times slower."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def load_model(path: str, kind: str, seed: int, conditioned: bool = True, size: tuple = (32, 3),
               device: str = "cpu") -> torch.nn.Module:
    """The final weights of a run saved at ``path``, on ``device``: a classifier (``kind="classifier"``)
    or a corrector."""
    model = make_classifier(seed) if kind == "classifier" else make_corrector(seed, conditioned, tuple(size))
    model.load_state_dict(_load(path)["state"])
    return model.to(device).eval()


def evaluate(data: dict, seed: int, classifier_file: str, settings: list[dict], qualities: list[int],
             subsampling: str, size: tuple, codec_ablations: bool = False, device: str = "cpu") -> dict:
    """Score one seed's ``settings`` on the test patches at every quality (0 = clean) it lists; the
    models run on ``device``, the codec and the scores on the CPU.

    A setting is ``dict(name, file, kind="classifier" | "corrector", conditioned, qualities)``: a
    classifier sees the compressed patches; a corrector's output (clean patches corrected as if
    q = 100) goes to the seed's classifier. Returns sweep ``rows``, ``correct`` (name -> quality ->
    0/1 per patch) and ``sq_error`` (name -> each patch's squared error at q = 10).
    """
    _, _, X, y = patches(**data)
    classifier = load_model(classifier_file, "classifier", seed, device=device)
    models = {s["name"]: load_model(s["file"], s["kind"], seed, s.get("conditioned", True), size, device)
              for s in settings}
    out: dict[str, Any] = dict(rows=[], correct={}, sq_error={})
    for q in [CLEAN, *qualities]:
        scored = [s for s in settings if q in s["qualities"]]
        X_q = X if q == CLEAN or not scored else compress(X, q, subsampling)[0]
        for s in scored:
            model = models[s["name"]]
            X_in = X_q if s["kind"] == "classifier" else correct(model, X_q, 100 if q == CLEAN else q)
            hits = (predict(model if s["kind"] == "classifier" else classifier, X_in) == y).numpy().astype(np.uint8)
            errors = ((X_in - X) ** 2).mean((1, 2, 3)).double().numpy()
            out["correct"].setdefault(s["name"], {})[q] = hits
            if q == 10:
                out["sq_error"][s["name"]] = errors.astype(np.float32)
            out["rows"].append(dict(setting=s["name"], quality=q, seed=seed, accuracy=float(hits.mean()),
                                    psnr=decibels(float(errors.mean()))))
    if codec_ablations:
        out["rows"] += [dict(r, seed=seed) for r in codec_ablation_rows(classifier, X, y, qualities, subsampling)]
    return out


# --- evaluation helpers: the real codec, correction, PSNR --------------------------------------

def compress(X: torch.Tensor, quality: int, subsampling: str, resize_first: bool = False):
    """``X`` through the real codec; with ``resize_first`` it is compressed at twice the size and
    then resized down (the "compress before resizing" ablation)."""
    if not resize_first:
        return jpeg.jpeg_roundtrip(X, quality, subsampling)
    big = F.interpolate(X, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)
    decoded, num_bytes = jpeg.jpeg_roundtrip(big, quality, subsampling)
    return F.avg_pool2d(decoded, 2), num_bytes


def correct(corrector, X: torch.Tensor, quality: int) -> torch.Tensor:
    """``corrector``'s output ``(n, 3, H, W)`` on the CPU for ``X`` compressed at ``quality``, in chunks
    of ``EVAL_CHUNK`` moved to the corrector's device."""
    device = _device_of(corrector)
    tables = jpeg.table_features([quality] * len(X)).to(device) if corrector.conditioned else None
    with torch.no_grad():
        return torch.cat([corrector(X[i:i + EVAL_CHUNK].to(device),
                                    None if tables is None else tables[i:i + EVAL_CHUNK]).cpu()
                          for i in range(0, len(X), EVAL_CHUNK)])


def decibels(mse: float) -> float:
    """PSNR (dB) of a mean squared error on [0, 1] images; inf for 0."""
    return float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))


def mean_psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR (dB) of the mean squared error over a whole set: finite even when some images are exact."""
    return decibels(float(((x - y) ** 2).mean()))


def region_rate(quality: int, subsampling: str) -> dict:
    """Bits per pixel and PSNR of the real codec on every photo's whole test region (headers are a
    large share of a 48 px patch's file, so the rate is measured on the regions)."""
    bits = pixels = 0
    errors = []
    for name in PHOTO_NAMES:
        region = load_photo(name)[:, :, split_boundary(name):]
        decoded, num_bytes = jpeg.jpeg_roundtrip(region, quality, subsampling)
        bits, pixels = bits + 8 * int(num_bytes), pixels + region.shape[-1] * region.shape[-2]
        errors.append(((decoded - region) ** 2).mean())
    return dict(bpp=bits / pixels, region_psnr=decibels(float(torch.stack(errors).mean())))


# --- detection (full budget): the chapter-05 detector on compressed scenes -------------------

def detection_sweep(seed: int, qualities: list[int], subsampling: str, workers: int = 0,
                    device: str = "cpu") -> list[dict]:
    """Box AP (overall, per size bucket and per test fold, in points) of chapter 05's dense detector
    on its test scenes compressed at each quality (0 = clean; the codec runs on the CPU). The
    detector comes from chapter 05's cached stages, trained and scored on ``device``; run as one of
    this chapter's runs, it trains beside the first stage."""
    from labkit.experiments import lottery, lottery_runs

    lcfg = lottery.from_budget("full", seed=seed, workers=workers, device=device)
    _, dense = lottery.dense_run(lcfg)
    model = lottery_runs.make_detector(lcfg.seed, device=device)
    model.load_state_dict(dense["state"])
    _, test = lottery_runs.scenes(**lottery.data_kwargs(lcfg))
    rows = []
    for q in [CLEAN, *qualities]:
        images = test.images if q == CLEAN else jpeg.jpeg_roundtrip(test.images, q, subsampling)[0]
        metrics = lottery_runs.evaluate(model, dataclasses.replace(test, images=images), lcfg.num_folds, device=device)
        rows.append(dict(quality=q, **{k: 100 * v for k, v in metrics["metrics"].items()},
                         folds=[{k: 100 * v for k, v in f.items()} for f in metrics["folds"]]))
    return rows


# --- what the views show besides the sweep -----------------------------------------------------

def codec_ablation_rows(classifier, X: torch.Tensor, y: torch.Tensor, qualities, subsampling: str) -> list[dict]:
    """Sweep rows of ``classifier`` on the other chroma subsampling and on compress-then-resize."""
    rows = []
    other = "4:4:4" if subsampling == "4:2:0" else "4:2:0"
    for q in qualities:
        for name, (X_in, _) in ((f"baseline ({other})", compress(X, q, other)),
                                ("baseline (compressed at 2×, then resized)", compress(X, q, subsampling, True))):
            rows.append(dict(setting=name, quality=q, accuracy=accuracy(classifier, X_in, y), psnr=mean_psnr(X_in, X)))
    return rows


def examples(X: torch.Tensor, y: torch.Tensor, correctors: dict, qualities, subsampling: str,
             num_examples: int) -> list[dict]:
    """A few test patches (one per class, spread over the classes) at every quality, compressed and
    through each of ``correctors`` (name -> model), as uint8."""
    def to_uint8(x):
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()

    picks = [int(torch.nonzero(y == c)[0]) for c in
             np.linspace(0, len(PHOTO_NAMES) - 1, num_examples).round().astype(int)]
    out = [dict(name=PHOTO_NAMES[int(y[i])], clean=to_uint8(X[i]), by_quality={}) for i in picks]
    for q in qualities:
        X_q, _ = compress(X[picks], q, subsampling)
        views = {"compressed": X_q, **{name: correct(model, X_q, q) for name, model in correctors.items()}}
        for k, example in enumerate(out):
            example["by_quality"][q] = {name: to_uint8(v[k]) for name, v in views.items()}
    return out
