"""Single runs of chapter 07 (JPEG compression defects): the classifier, correctors, mitigations.

Every function takes plain arguments and returns plain data (state dicts, histories), so
``labkit.cache.cached_runs`` can spread the runs over processes and cache each one. A run that
builds on an earlier one (fine-tuning on the classifier, TTAC on the classifier and a corrector)
gets it as a file written by the parent (``labkit.cache.artifact``).

Compression always goes through the real codec (``jpeg.jpeg_roundtrip``, Pillow's libjpeg) at the
model's input size: patches are cut first, then compressed.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from labkit.data.photos import PHOTO_NAMES, photo_patches
from labkit.methods import jpeg
from labkit.models.corrector import Corrector
from labkit.models.small_cnn import ResNetSmall
from labkit.train import fit

CLASSIFIER_WIDTHS = (16, 32, 64)  # ~0.1 M parameters: a step of 64 patches takes ~0.1 s on one core
TRAIN_QUALITIES = tuple(range(10, 91))  # q ~ U{10..90} for correctors and mixed fine-tuning


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


def predict(model, X: torch.Tensor) -> torch.Tensor:
    """Top-1 class ``(n,)`` of ``model`` (put in eval mode) on ``X``, in chunks of 500."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(normalise(X[i:i + 500])).argmax(1) for i in range(0, len(X), 500)])


def accuracy(model, X: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 of ``model`` (put in eval mode) on ``X``."""
    return int((predict(model, X) == y).sum()) / len(X)


def per_class_accuracy(predicted: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    """Top-1 per class ``(num_classes,)`` from ``predict``'s output (NaN for a class absent from ``y``)."""
    return np.array([float((predicted[y == c] == c).float().mean()) if (y == c).any() else float("nan")
                     for c in range(num_classes)])


def _load(path: str) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


# --- the task model ---------------------------------------------------------------------------

def train_classifier(data: dict, steps: int, lr: float, batch_size: int, seed: int) -> dict:
    """The task model, trained on clean (never compressed) patches with flips and gain jitter."""
    X, y, _, _ = patches(**data)
    model = make_classifier(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def step_fn(idx, step):
        return {"loss": F.cross_entropy(model(normalise(_augment(X[idx], generator))), y[idx])}

    history = fit(model, _batches(len(X), batch_size, generator), step_fn, [optimizer], steps,
                  schedulers=[schedule], log_every=10, desc="classifier", progress=False)
    return dict(state=model.state_dict(), loss=history["loss"])


def finetune(data: dict, classifier_file: str, steps: int, lr: float, batch_size: int, seed: int,
             quality: int | None = None, subsampling: str = "4:2:0") -> dict:
    """Mitigation 1: supervised fine-tuning on compressed patches, mixed q ~ U{10..90} or one ``quality``.

    Half of each batch stays clean, so the model keeps seeing the clean distribution.
    """
    X, y, _, _ = patches(**data)
    model = make_classifier(seed)
    model.load_state_dict(_load(classifier_file)["state"])
    generator = torch.Generator().manual_seed(seed + 1)
    qualities = TRAIN_QUALITIES if quality is None else (quality,)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)

    def step_fn(idx, step):
        x = _augment(X[idx], generator)
        half = len(x) // 2
        x = torch.cat([_compress_random(x[:half], generator, qualities, subsampling)[0], x[half:]])
        return {"loss": F.cross_entropy(model(normalise(x)), y[idx])}

    history = fit(model, _batches(len(X), batch_size, generator), step_fn, [optimizer], steps, log_every=10,
                  desc="fine-tune", progress=False)
    return dict(state=model.state_dict(), loss=history["loss"])


# --- correctors -------------------------------------------------------------------------------

def _random_crops(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``size × size`` crop per image (the whole image when ``size`` is its side)."""
    side = x.shape[-1]
    if size >= side:
        return x
    ys, xs = (torch.randint(side - size + 1, (len(x),), generator=generator).tolist() for _ in range(2))
    return torch.stack([img[:, y:y + size, x0:x0 + size] for img, y, x0 in zip(x, ys, xs)])


def train_corrector(data: dict, steps: int, lr: float, batch_size: int, seed: int, conditioned: bool = True,
                    subsampling: str = "4:2:0", crop: int = 48, size: tuple = (32, 3)) -> dict:
    """Mitigation 2: the off-the-shelf corrector, trained for pixel fidelity (L1) on every photo's
    training region at q ~ U{10..90}. It never sees a label or the task model. Crops of ``crop``
    pixels are cut first and compressed at that size (the corrector is fully convolutional)."""
    X, _, _, _ = patches(**data)
    corrector = make_corrector(seed, conditioned, size)
    generator = torch.Generator().manual_seed(seed + 2)
    optimizer = torch.optim.Adam(corrector.parameters(), lr=lr)

    def step_fn(idx, step):
        clean = _random_crops(_augment(X[idx], generator), crop, generator)
        compressed, q = _compress_random(clean, generator, TRAIN_QUALITIES, subsampling)
        return {"loss": jpeg.pixel_loss(corrector, clean, compressed, jpeg.table_features(q) if conditioned else None)}

    history = fit(corrector, _batches(len(X), batch_size, generator), step_fn, [optimizer], steps, log_every=10,
                  desc="corrector", progress=False)
    return dict(state=corrector.state_dict(), loss=history["loss"])


def make_corrector(seed: int, conditioned: bool = True, size: tuple = (32, 3)) -> Corrector:
    """The corrector with ``size = (channels, num_blocks)``; the tail starts at zero (identity)."""
    torch.manual_seed(seed)
    channels, num_blocks = size
    return Corrector(channels=channels, num_blocks=num_blocks, conditioned=conditioned)


def train_ttac(data: dict, classifier_file: str, corrector_file: str, steps: int, lr: float, batch_size: int,
               seed: int, target: str = "logits", pixel_weight: float = 0.0, conditioned: bool = True,
               subsampling: str = "4:2:0", size: tuple = (32, 3)) -> dict:
    """Mitigation 3: task-targeted artifact correction. Starts from the off-the-shelf corrector and
    matches the frozen classifier's outputs on clean patches; the labels are never loaded."""
    X, _, _, _ = patches(**data)
    classifier = make_classifier(seed)
    classifier.load_state_dict(_load(classifier_file)["state"])
    task = TaskModel(classifier).eval().requires_grad_(False)
    corrector = make_corrector(seed, conditioned, size)
    corrector.load_state_dict(_load(corrector_file)["state"])
    generator = torch.Generator().manual_seed(seed + 3)
    optimizer = torch.optim.Adam(corrector.parameters(), lr=lr)

    def step_fn(idx, step):
        clean = _augment(X[idx], generator)
        compressed, q = _compress_random(clean, generator, TRAIN_QUALITIES, subsampling)
        tables = jpeg.table_features(q) if conditioned else None
        return {"loss": jpeg.task_targeted_loss(task, corrector, clean, compressed, tables, pixel_weight=pixel_weight,
                                                target=target)}

    history = fit(corrector, _batches(len(X), batch_size, generator), step_fn, [optimizer], steps, log_every=10,
                  desc="TTAC", progress=False)
    return dict(state=corrector.state_dict(), loss=history["loss"])
