r"""Classifier-FD: Fréchet distance, precision/recall and composition checks on labkit's own features.

FID needs Inception-v3 weights, a download. Its stand-in here is a small CNN trained by labkit on
the real images (``FeatureClassifier``): three conv-BN-ReLU blocks, global average pooling and a
Linear layer to a 64-d embedding, then one linear head per label (``{"digit": 10}`` for digits;
``{"count": 5, "circle": 5, "red": 5, ...}`` for compositional scenes, each head a count 0..4).
The feature is the embedding *before* its ReLU: post-ReLU features are rank-deficient.

- ``feature_classifier`` trains it once per machine (``labkit.cache.cached``) and rebuilds it;
  ``train_feature_classifier`` is the uncached trainer (``train.fit``, Adam, cross-entropy summed
  over heads, accuracy per head on a held-out 20 %).
- ``classifier_fd`` is the Fréchet distance in that feature space (``gan.frechet_distance``);
  ``real_floor`` is the same distance between two random halves of the real set, the floor any
  generator is compared against. FD is biased upwards at small sample sizes, so compare a
  generator with ``len(real) // 2`` samples against the floor for like-for-like numbers.
- ``classifier_precision_recall``: k-NN precision/recall (``gan.knn_precision_recall``) there.
- ``composition_validity``: share of images whose predicted ``count`` lies in
  ``[min_objects, max_objects]``. The spec's "no blob the classifier rejects" is approximated,
  when ``shape_heads`` is given, by requiring the per-shape predicted counts to add up to the
  predicted total (an object no shape head recognises breaks that sum).

Images are ``(n, C, S, S)`` floats in [0, 1] with ``C`` in (1, 3) and ``S`` in (16, 32).
"""
from __future__ import annotations

import hashlib
import math
import numbers
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit import cache
from labkit.config import check_positive_float, check_positive_int
from labkit.metrics.gan import frechet_distance, knn_precision_recall
from labkit.models.toy_gan import IMAGE_CHANNELS as CHANNELS
from labkit.models.toy_gan import IMAGE_SIZES
from labkit.train import fit

__all__ = ["FeatureClassifier", "train_feature_classifier", "feature_classifier", "image_features",
           "classifier_fd", "real_floor", "classifier_precision_recall", "composition_validity"]

EMBEDDING_DIM = 64
HOLDOUT_FRACTION = 0.2
_RANGE_TOLERANCE = 1e-3


def _check_heads(heads: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(heads, Mapping) or not heads:
        raise ValueError(f"heads={heads!r} is not valid; pass a non-empty dict name -> number of classes")
    checked = {}
    for name, num_classes in heads.items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"heads has the name {name!r}; head names must be non-empty strings without '.'")
        if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"heads[{name!r}]={num_classes!r} is not valid; it must be an int >= 2")
        checked[name] = int(num_classes)
    return checked


def _check_images(name: str, images, in_channels: int | None = None,
                  image_size: int | None = None) -> torch.Tensor:
    """``images`` as a float tensor ``(n, C, S, S)`` in [0, 1] (non-finite values pass through)."""
    images = torch.as_tensor(images).detach()
    shape = tuple(images.shape)
    if (images.ndim != 4 or shape[0] == 0 or shape[1] not in CHANNELS or shape[2] != shape[3]
            or shape[2] not in IMAGE_SIZES):
        raise ValueError(f"{name} must be a non-empty (n, C, S, S) batch with C in {CHANNELS} and S in "
                         f"{IMAGE_SIZES}; got shape {shape}")
    if in_channels is not None and shape[1] != in_channels:
        raise ValueError(f"{name} has {shape[1]} channels but the model takes {in_channels}")
    if image_size is not None and shape[2] != image_size:
        raise ValueError(f"{name} are {shape[2]}x{shape[3]} but the model takes {image_size}x{image_size}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating point in [0, 1]; got dtype {images.dtype}")
    finite = images[torch.isfinite(images)]
    if finite.numel() and (finite.min() < -_RANGE_TOLERANCE or finite.max() > 1 + _RANGE_TOLERANCE):
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{float(finite.min()):.3g}, "
                         f"{float(finite.max()):.3g}] (rescale tanh outputs with (x + 1) / 2)")
    return images.float()


def _check_targets(targets: Mapping[str, torch.Tensor], num_images: int,
                   heads: Mapping[str, int] | None) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Targets as long CPU tensors ``(n,)`` and the head spec (inferred as ``max + 1`` if None)."""
    if not isinstance(targets, Mapping) or not targets:
        raise ValueError("targets must be a non-empty dict head name -> (n,) integer labels")
    checked = {}
    for name, labels in targets.items():
        labels = torch.as_tensor(labels).detach().cpu()
        if labels.ndim != 1 or len(labels) != num_images:
            raise ValueError(f"targets[{name!r}] must have shape ({num_images},), one label per image; "
                             f"got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"targets[{name!r}] must hold integer labels; got dtype {labels.dtype}")
        if labels.min() < 0:
            raise ValueError(f"targets[{name!r}] holds {int(labels.min())}; labels must be >= 0")
        checked[name] = labels.long()
    if heads is None:
        heads = {name: max(2, int(labels.max()) + 1) for name, labels in checked.items()}
    heads = _check_heads(heads)
    if set(heads) != set(checked):
        raise ValueError(f"targets have heads {sorted(checked)} but heads names {sorted(heads)}; "
                         "they must match")
    for name, labels in checked.items():
        if labels.max() >= heads[name]:
            raise ValueError(f"targets[{name!r}] holds {int(labels.max())} but heads[{name!r}]={heads[name]} "
                             f"allows labels 0..{heads[name] - 1}")
    return {name: checked[name] for name in heads}, heads


def _conv_block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    """3x3 conv + BN + ReLU (+ max-pool 2): ``(b, in, s, s)`` → ``(b, out, s or s/2, ...)``."""
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
              nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class FeatureClassifier(nn.Module):
    """Multi-head CNN whose 64-d pre-activation embedding is the feature space of Classifier-FD.

    ``heads`` maps a head name to its number of classes. ``forward(x)`` returns a dict of logits
    ``(n, heads[name])``; ``features(x)`` returns the embedding ``(n, embedding_dim)`` before
    its ReLU. ``x`` is ``(n, in_channels, image_size, image_size)`` in [0, 1].
    """

    def __init__(self, heads: Mapping[str, int], in_channels: int = 1, image_size: int = 16,
                 widths: Sequence[int] = (32, 64, 128), embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.heads_spec = _check_heads(heads)
        if in_channels not in CHANNELS or isinstance(in_channels, bool):
            raise ValueError(f"in_channels={in_channels!r} is not valid; it must be one of {CHANNELS}")
        if image_size not in IMAGE_SIZES or isinstance(image_size, bool):
            raise ValueError(f"image_size={image_size!r} is not valid; it must be one of {IMAGE_SIZES}")
        if isinstance(widths, (str, numbers.Number)) or len(widths) != 3:
            raise ValueError(f"widths={widths!r} is not valid; pass three block widths like (32, 64, 128)")
        self.in_channels, self.image_size = int(in_channels), int(image_size)
        self.widths = tuple(check_positive_int("widths", w) for w in widths)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        w0, w1, w2 = self.widths
        self.blocks = nn.Sequential(_conv_block(self.in_channels, w0, True), _conv_block(w0, w1, True),
                                    _conv_block(w1, w2, False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed = nn.Linear(w2, self.embedding_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(self.embedding_dim, num_classes)
                                    for name, num_classes in self.heads_spec.items()})

    def spec(self) -> dict:
        """Constructor arguments as plain data (what the cache stores beside the state dict)."""
        return {"heads": dict(self.heads_spec), "in_channels": self.in_channels,
                "image_size": self.image_size, "widths": list(self.widths),
                "embedding_dim": self.embedding_dim}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation embedding ``(n, embedding_dim)`` of images ``(n, C, S, S)``."""
        return self.embed(self.pool(self.blocks(x)).flatten(1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = F.relu(self.features(x))  # (n, embedding_dim)
        return {name: head(hidden) for name, head in self.heads.items()}


def _predict(model: nn.Module, images: torch.Tensor, batch_size: int, features: bool):
    """Features ``(n, d)`` or a dict of logits over ``images`` in batches, eval mode, on CPU."""
    device = next((p.device for p in model.parameters()), images.device)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size].to(device)
                out = model.features(batch) if features else model(batch)
                outputs.append(out.float().cpu() if features else {k: v.float().cpu() for k, v in out.items()})
    finally:
        model.train(was_training)
    if features:
        return torch.cat(outputs)
    return {name: torch.cat([out[name] for out in outputs]) for name in outputs[0]}


def _head_accuracy(model: FeatureClassifier, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict:
    logits = _predict(model, images, 500, features=False)
    return {name: float((logits[name].argmax(1) == labels).double().mean()) for name, labels in targets.items()}


def train_feature_classifier(images: torch.Tensor, targets: Mapping[str, torch.Tensor], steps: int,
                             seed: int = 0, batch_size: int = 128, lr: float = 2e-3, *,
                             heads: Mapping[str, int] | None = None,
                             widths: Sequence[int] = (32, 64, 128)) -> tuple[FeatureClassifier, dict]:
    """Train a ``FeatureClassifier`` on ``images`` ``(n, C, S, S)`` and ``targets`` {head: ``(n,)``}.

    A seeded random 20 % of the images is held out; Adam minimises the cross-entropy summed over
    heads on random batches of the rest for ``steps`` steps. ``heads`` (name -> classes)
    defaults to ``max label + 1`` per head. Trains on ``images``' device; the global RNG is left
    untouched. Returns ``(model in eval mode, {head: held-out accuracy})``.
    """
    images = _check_images("images", images)
    targets, heads = _check_targets(targets, len(images), heads)
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    lr = check_positive_float("lr", lr)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed={seed!r} is not valid; it must be an int")
    if not torch.isfinite(images).all():
        raise ValueError("images holds non-finite values; the classifier trains on real images only")
    num_holdout = math.ceil(HOLDOUT_FRACTION * len(images))
    if len(images) - num_holdout < 2:
        raise ValueError(f"images has {len(images)} rows; it needs at least 4 (20 % is held out)")
    device = images.device
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(images), generator=generator)
    held_out, train = order[:num_holdout], order[num_holdout:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = FeatureClassifier(heads, images.shape[1], images.shape[2], widths).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    on_device = {name: labels.to(device) for name, labels in targets.items()}

    def step_fn(_, step: int) -> dict:
        batch = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=generator)].to(device)
        logits = model(images[batch])
        return {"loss": sum(F.cross_entropy(logits[name], on_device[name][batch]) for name in heads)}

    fit(model, [None], step_fn, [optimizer], steps, log_every=steps, progress=False)
    model.eval()
    accuracy = _head_accuracy(model, images[held_out.to(device)], {n: t[held_out] for n, t in targets.items()})
    return model, accuracy


def _fingerprint(images: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes())
    for name, labels in targets.items():
        digest.update(name.encode())
        digest.update(labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def feature_classifier(name: str, images: torch.Tensor, targets: Mapping[str, torch.Tensor],
                       steps: int = 400, seed: int = 0, *, batch_size: int = 128, lr: float = 2e-3,
                       heads: Mapping[str, int] | None = None,
                       widths: Sequence[int] = (32, 64, 128)) -> tuple[FeatureClassifier, dict]:
    """``train_feature_classifier``, trained once per machine and then loaded from the cache.

    The cache entry (the state dict, the constructor spec and the held-out accuracies) is keyed
    on ``name``, the image sizes, a fingerprint of the data, the head spec, the training settings
    and ``seed`` (and, as every entry, labkit's source). Returns ``(model, accuracy)`` with the
    model in eval mode on ``images``' device.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name={name!r} is not valid; pass a non-empty string naming the classifier")
    images = _check_images("images", images)
    targets, heads = _check_targets(targets, len(images), heads)
    config = {"name": name, "shape": list(images.shape), "data": _fingerprint(images, targets),
              "heads": heads, "steps": steps, "batch_size": batch_size, "lr": lr, "widths": list(widths)}

    def compute() -> dict:
        model, accuracy = train_feature_classifier(images, targets, steps, seed, batch_size, lr,
                                                   heads=heads, widths=widths)
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        return {"spec": model.spec(), "state": state, "accuracy": accuracy}

    entry = cache.cached("feature_classifier", config, compute, seed=seed)
    model = FeatureClassifier(**entry["spec"])
    model.load_state_dict(entry["state"])
    return model.to(images.device).eval(), dict(entry["accuracy"])


def _model_images(name: str, images, model: nn.Module) -> torch.Tensor:
    return _check_images(name, images, getattr(model, "in_channels", None), getattr(model, "image_size", None))


def _features(model: nn.Module, images, batch_size: int, name: str = "images") -> torch.Tensor:
    images = _model_images(name, images, model)
    return _predict(model, images, check_positive_int("batch_size", batch_size), features=True)


def image_features(model: FeatureClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``model.features`` over ``images`` ``(n, C, S, S)`` in eval mode and batches: ``(n, d)`` on CPU."""
    return _features(model, images, batch_size)


def classifier_fd(model: FeatureClassifier, real_images: torch.Tensor, fake_images: torch.Tensor,
                  batch_size: int = 500, eps: float = 1e-6) -> float:
    """Classifier-FD: ``frechet_distance`` between the model's features of real and fake images."""
    real = _features(model, real_images, batch_size, "real_images")
    fake = _features(model, fake_images, batch_size, "fake_images")
    return frechet_distance(real, fake, eps=eps)


def real_floor(model: FeatureClassifier, real_images: torch.Tensor, seed: int = 0,
               batch_size: int = 500, eps: float = 1e-6) -> float:
    """Classifier-FD between two random halves of ``real_images``: what a perfect generator scores
    with ``len(real_images) // 2`` samples."""
    real_images = _model_images("real_images", real_images, model)
    if len(real_images) < 4:
        raise ValueError(f"real_images has {len(real_images)} images; the floor needs at least 4")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed={seed!r} is not valid; it must be an int")
    features = _features(model, real_images, batch_size, "real_images")
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(int(seed)))
    half = len(features) // 2
    return frechet_distance(features[order[:half]], features[order[half:2 * half]], eps=eps)


def classifier_precision_recall(model: FeatureClassifier, real_images: torch.Tensor,
                                fake_images: torch.Tensor, k: int = 3, batch_size: int = 500) -> dict:
    """``knn_precision_recall`` in the model's feature space: ``{"precision", "recall"}``."""
    real = _features(model, real_images, batch_size, "real_images")
    fake = _features(model, fake_images, batch_size, "fake_images")
    return knn_precision_recall(real, fake, k=k)


def composition_validity(model: nn.Module, images: torch.Tensor, min_objects: int = 2,
                         max_objects: int = 4, batch_size: int = 500,
                         shape_heads: Sequence[str] | None = None) -> float:
    """Share of ``images`` whose predicted object count (``argmax`` of the ``count`` head) lies in
    ``[min_objects, max_objects]``.

    With ``shape_heads`` (e.g. ``("circle", "square", "triangle")``) an image is valid only if
    those heads' predicted counts also add up to the predicted count: an object that no shape
    head accepts (a blob) makes it invalid. ``model(x)`` must return a dict of logits with a
    ``count`` head. Images with non-finite pixels are invalid.
    """
    for label, value in (("min_objects", min_objects), ("max_objects", max_objects)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{label}={value!r} is not valid; it must be an int >= 0")
    if min_objects > max_objects:
        raise ValueError(f"min_objects={min_objects} is larger than max_objects={max_objects}")
    images = _model_images("images", images, model)
    logits = _predict(model, images, check_positive_int("batch_size", batch_size), features=False)
    shape_heads = [] if shape_heads is None else list(shape_heads)
    missing = [head for head in ["count", *shape_heads] if head not in logits]
    if missing:
        raise ValueError(f"the model has no head {missing[0]!r}; its heads are {sorted(logits)}")
    count = logits["count"].argmax(1)  # (n,)
    valid = (count >= min_objects) & (count <= max_objects)
    if shape_heads:
        valid &= sum(logits[head].argmax(1) for head in shape_heads) == count
    valid &= torch.isfinite(images.flatten(1)).all(dim=1).cpu()
    return float(valid.double().mean())
