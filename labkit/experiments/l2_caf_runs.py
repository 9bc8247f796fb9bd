"""Chapter 10's pieces: the scenes, the three networks, their training, and every attention map.

**Data** (``make_sets``): single-object scenes from ``labkit.data.scenes`` (six shapes, uniform
classes, light clutter) for training; test scenes in two size buckets, *medium* (0.33–3 % of the
image, smaller than one cell of the last 8×8 map at 64×64) and *large* (3–20 %); and a two-object
set (two different classes whose boxes do not overlap) for class-specific maps.

**Networks** (``ShapeNet``): one trunk of four conv-BN-ReLU blocks with a 2× max-pool in front of
blocks 1–3 (so ``trunk.3`` gives an (S/8)² map and ``trunk.2`` an (S/4)² map), and three heads:

- ``cam``: GAP → linear (CAM applies; Grad-CAM equals CAM);
- ``mlp``: GAP → 64 → ReLU → linear (Grad-CAM no longer equals CAM);
- ``retrieval``: GAP → linear → L2-normalised embedding: the ``cam`` classifier's trunk fine-tuned
  with the batch-hard triplet loss (a pretrained network fine-tuned with a ranking loss, as the
  paper's retrieval nets are).

``forward_from(index, A)`` replays the network after block ``index``: that is $h$, the fast mode's
head. The filter sits after the block's ReLU.

**Maps** (``attention_maps``): L2-CAF class-specific and class-oblivious (fast mode, batched),
Grad-CAM, CAM and a centre prior, each as low-resolution maps ``(n, h, w)`` that ``score`` puts
through the one post-processing of ``labkit.metrics.localization``.

**Devices**: ``train_net(..., device=)`` trains on the CPU or a GPU; every other function runs on
the device its network is on (images move there batch by batch) and returns CPU tensors. L2-CAF's
filters and their optimiser stay on the CPU, where ``l2_caf.optimise_filters`` draws them: only
the network's replay runs on the device, so the draws, and the maps on the CPU, do not depend on it.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit.config import check_choice, check_device
from labkit.data.scenes import SceneConfig, make_scenes
from labkit.losses.ranking import triplet_loss
from labkit.methods import l2_caf
from labkit.metrics import localization as loc
from labkit.metrics.retrieval import recall_at_k
from labkit.models.small_cnn import init_weights
from labkit.train import fit

__all__ = ["CLASSES", "KINDS", "LAYERS", "METHODS", "SPECIFIC_POSITIVE", "Sets", "make_sets", "ShapeNet", "train_net", "predict",
           "attention_maps", "score", "pair_maps"]

CLASSES = ("circle", "square", "triangle", "ring", "cross", "star")
KINDS = ("cam", "mlp", "retrieval")
LAYERS = {"last": 3, "penultimate": 2}  # trunk block after which the filter sits
SPECIFIC, OBLIVIOUS, GRAD_CAM, CAM, CENTRE = "L2-CAF specific", "L2-CAF oblivious", "Grad-CAM", "CAM", "centre prior"
METHODS = (SPECIFIC, OBLIVIOUS, GRAD_CAM, CAM, CENTRE)
SPECIFIC_POSITIVE = "L2-CAF specific, f⁺ (ours)"  # a read-out of the class-specific filter, for the pairs
_SIZE_MIX = {"medium": (0.0, 1.0, 0.0), "large": (0.0, 0.0, 1.0), "both": (0.0, 0.5, 0.5), "mostly large": (0.0, 0.2, 0.8)}


def methods_for(kind: str) -> tuple[str, ...]:
    """The maps a network supports: no class-specific map for an embedding, CAM only for GAP + linear."""
    check_choice("kind", kind, KINDS)
    if kind == "retrieval":
        return OBLIVIOUS, GRAD_CAM, CENTRE
    return (SPECIFIC, OBLIVIOUS, GRAD_CAM, CAM, CENTRE) if kind == "cam" else (SPECIFIC, OBLIVIOUS, GRAD_CAM, CENTRE)


def _scene_config(image_size: int, size: str, objects: int = 1) -> SceneConfig:
    return SceneConfig(image_size=image_size, min_objects=objects, max_objects=objects, classes=CLASSES,
                       zipf_alpha=0.0, size_mix=_SIZE_MIX[size], max_area=0.2 if objects == 1 else 0.1,
                       contrast=(0.25, 0.5), clutter=0.5, texture=0.5)


@dataclasses.dataclass
class Sets:
    """``train_x`` ``(n, 3, S, S)``, ``train_y``; ``test_x``, ``test_y``, ``test_boxes`` ``(n, 4)``,
    ``test_size`` (``"medium"``/``"large"`` per image); ``pair_x``, ``pair_y`` ``(m, 2)``,
    ``pair_boxes`` ``(m, 2, 4)``."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_boxes: torch.Tensor
    test_size: tuple
    pair_x: torch.Tensor
    pair_y: torch.Tensor
    pair_boxes: torch.Tensor


def _single(n: int, image_size: int, size: str, seed: int):
    scenes = make_scenes(n, _scene_config(image_size, size), seed=seed)
    return scenes.images, torch.cat(scenes.labels), torch.cat(scenes.boxes)


def _pairs(n: int, image_size: int, seed: int):
    """The first ``n`` two-object scenes (in scene order) whose objects differ in class and whose
    boxes do not overlap; about a third of the scenes qualify."""
    from torchvision.ops import box_iou

    images, labels, boxes = [], [], []
    start = 0
    while len(images) < n:
        scenes = make_scenes(4 * n, _scene_config(image_size, "mostly large", objects=2), seed=seed, start=start)
        for image, y, b in zip(scenes.images, scenes.labels, scenes.boxes):
            if len(y) == 2 and y[0] != y[1] and float(box_iou(b[:1], b[1:])[0, 0]) == 0.0 and len(images) < n:
                images.append(image), labels.append(y), boxes.append(b)
        start += 4 * n
    return torch.stack(images), torch.stack(labels), torch.stack(boxes)


def make_sets(image_size: int = 64, num_train: int = 1500, num_test: int = 60, num_pairs: int = 20,
              seed: int = 0) -> Sets:
    """The chapter's data, fixed by ``seed`` (training seeds vary only the networks). The test set is
    half medium, half large objects; each set has its own scene seed."""
    base = 1000 * seed
    train_x, train_y, _ = _single(num_train, image_size, "mostly large", base + 1)
    half = num_test // 2
    medium, large = _single(half, image_size, "medium", base + 2), _single(num_test - half, image_size, "large",
                                                                             base + 3)
    pair_x, pair_y, pair_boxes = _pairs(num_pairs, image_size, base + 4)
    return Sets(train_x, train_y, torch.cat([medium[0], large[0]]), torch.cat([medium[1], large[1]]),
                torch.cat([medium[2], large[2]]), ("medium",) * half + ("large",) * (num_test - half),
                pair_x, pair_y, pair_boxes)


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.MaxPool2d(2)] if pool else []
    return nn.Sequential(*layers, nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=False))


class _Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image to zero mean and unit variance per channel: the scenes' background colours vary
    far more than the objects' contrast, and a small net learns much faster without that nuisance."""
    return (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True).clamp_min(1e-3)


class ShapeNet(nn.Module):
    """The trunk (``trunk.0``–``trunk.3``, after ``standardise``) and a ``kind`` head; see the
    module docstring."""

    def __init__(self, kind: str = "cam", num_classes: int = len(CLASSES), widths: tuple = (16, 32, 64, 64),
                 embedding_dim: int = 32):
        super().__init__()
        check_choice("kind", kind, KINDS)
        self.kind = kind
        chans = (3, *widths)
        self.trunk = nn.Sequential(*[_block(chans[i], chans[i + 1], pool=i > 0) for i in range(4)])
        pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if kind == "cam":
            self.head = nn.Sequential(*pool, nn.Linear(widths[-1], num_classes))
        elif kind == "mlp":
            self.head = nn.Sequential(*pool, nn.Linear(widths[-1], 64), nn.ReLU(), nn.Linear(64, num_classes))
        else:
            self.head = nn.Sequential(*pool, nn.Linear(widths[-1], embedding_dim), _Normalize())
        init_weights(self)

    def forward_from(self, index: int, A: torch.Tensor) -> torch.Tensor:
        """$h$: the blocks after ``trunk[index]`` and the head, applied to its output ``A``."""
        if index < 0:
            A = standardise(A)
        for block in self.trunk[index + 1:]:
            A = block(A)
        return self.head(A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(-1, x)


RETRIEVAL_FINETUNE = 4  # the retrieval net fine-tunes for steps / 4 at lr / 3 after its classifier pretraining


def device_of(net: nn.Module) -> torch.device:
    """The device ``net``'s parameters are on."""
    return next(net.parameters()).device


def _fit(net: ShapeNet, sets: Sets, seed: int, steps: int, batch_size: int, lr: float) -> dict:
    """Adam with linear decay on random batches, cross-entropy (classifiers) or the batch-hard
    triplet loss (margin 0.2, the retrieval net), then BN recalibration. Trains on ``net``'s
    device; the batch indices are drawn on the CPU."""
    device = device_of(net)
    n = len(sets.train_x)
    generator = torch.Generator().manual_seed(seed)
    batches = (torch.randperm(n, generator=generator)[:batch_size] for _ in iter(int, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / steps)

    def step_fn(index: torch.Tensor, step: int) -> dict:
        out, y = net(sets.train_x[index].to(device)), sets.train_y[index].to(device)
        return {"loss": triplet_loss(out, y) if net.kind == "retrieval" else F.cross_entropy(out, y)}

    history = fit(net, batches, step_fn, [optimizer], steps, schedulers=[schedule], log_every=10, progress=False)
    recalibrate_batch_norm(net, sets.train_x)
    return history.to_dict()


def train_net(kind: str, sets: Sets, seed: int, steps: int = 250, batch_size: int = 64, lr: float = 3e-3,
              widths: tuple = (16, 32, 64, 64), device: str = "cpu") -> tuple[ShapeNet, dict]:
    """Train one network on ``device``; returns it (in eval mode, on ``device``) and its history.

    The retrieval net is trained as the paper's are, a pretrained classifier fine-tuned with a
    ranking loss: the cam classifier of the same seed (identical to the chapter's), then its trunk
    under a new embedding head for ``steps / 4`` steps of the batch-hard triplet loss at ``lr / 3``.
    From scratch, every ranking loss we tried (batch-hard triplet, contrastive, N-pair, on random
    or class-balanced batches) stayed near chance Recall@1 within the budget, in our pilots."""
    device = check_device(device)
    torch.manual_seed(seed)
    if kind != "retrieval":
        net = ShapeNet(kind, widths=widths).to(device)  # initialised on the CPU: the same weights on any device
        return net.eval(), _fit(net, sets, seed, steps, batch_size, lr)
    classifier, pretraining = train_net("cam", sets, seed, steps, batch_size, lr, widths, device=device)
    net = ShapeNet("retrieval", widths=widths).to(device)
    net.trunk.load_state_dict(classifier.trunk.state_dict())
    history = _fit(net, sets, seed + 1, max(1, steps // RETRIEVAL_FINETUNE), batch_size, lr / 3)
    return net.eval(), {"pretraining loss": pretraining["loss"], **history}


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, x: torch.Tensor, batch_size: int = 250) -> None:
    """Replace BN's running statistics by their average over ``x`` (a mean of batch means, exact for
    equal batches) with the final weights. The
    moving averages lag a short, fast training run (eval accuracy 0.44 against 0.60 in train mode,
    in our pilot), and L2-CAF explains the network in eval mode, so eval mode must be the network.
    ``x`` may stay on the CPU: each batch moves to ``net``'s device."""
    device = device_of(net)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    net.train()
    for lo in range(0, len(x), batch_size):
        net(x[lo:lo + batch_size].to(device))
    for m in norms:
        m.momentum = 0.1
    net.eval()


@torch.no_grad()
def predict(net: ShapeNet, x: torch.Tensor) -> torch.Tensor:
    """The eval-mode outputs ``(n, K)`` for ``x`` ``(n, 3, S, S)``, computed on ``net``'s device and
    returned on the CPU."""
    return net.eval()(x.to(device_of(net))).cpu()


def quality(net: ShapeNet, sets: Sets) -> dict:
    """Test accuracy (classifiers) or Recall@1 (retrieval) and the per-image correctness."""
    out = predict(net, sets.test_x)
    if net.kind == "retrieval":
        return dict(recall_at_1=recall_at_k(out, sets.test_y, (1,))[1])
    correct = (out.argmax(1) == sets.test_y).numpy()
    return dict(accuracy=float(correct.mean()), correct=correct)


def _l2_caf(net: ShapeNet, x: torch.Tensor, kind: str, target: torch.Tensor | None, layer: str, slow: bool,
            seed: int, **options) -> dict:
    index, device = LAYERS[layer], device_of(net)
    x, target = x.to(device), None if target is None else target.cpu()
    with l2_caf.frozen(net):
        A = l2_caf.capture(net, f"trunk.{index}", x)
        reference = predict(net, x) if kind == "oblivious" else None  # (n, K), CPU
        replay = (l2_caf.filtered_forward(net, f"trunk.{index}", x) if slow
                  else lambda f_hat: net.forward_from(index, A * f_hat[:, None]))

        def forward(f_hat: torch.Tensor) -> torch.Tensor:
            # the filters live on the CPU (optimise_filters draws and steps them there); the replay on
            # the network's device, and its outputs come back (no-ops on the CPU)
            return replay(f_hat.to(device)).cpu()

        start = time.perf_counter()
        out = l2_caf.optimise_filters(forward, (len(x), *A.shape[2:]), kind, reference, target,
                                      generator=torch.Generator().manual_seed(seed), **options)
        out["seconds"] = time.perf_counter() - start
    return out


def attention_maps(net: ShapeNet, x: torch.Tensor, y: torch.Tensor, method: str, *, layer: str = "last",
                   slow: bool = False, seed: int = 0, **options) -> dict:
    """One method's low-resolution maps ``(n, h, w)`` for images ``x`` (``y`` the class to explain),
    with ``iterations`` and ``seconds`` (per image) for L2-CAF. ``options`` go to
    ``l2_caf.optimise_filters``; L2-CAF maps are ``|f|``, the official heatmap, and ``signed`` keeps
    f̂ itself. Runs on ``net``'s device; everything returned is on the CPU."""
    check_choice("method", method, METHODS)
    check_choice("layer", layer, LAYERS)
    if method in (SPECIFIC, OBLIVIOUS):
        kind = "specific" if method == SPECIFIC else "oblivious"
        out = _l2_caf(net, x, kind, y if kind == "specific" else None, layer, slow, seed, **options)
        return dict(maps=out["filters"].abs(), signed=out["filters"], iterations=out["iterations"].numpy(),
                    seconds=out["seconds"] / len(x), losses=out["losses"], snapshots=out["snapshots"])
    name, device = f"trunk.{LAYERS[layer]}", device_of(net)
    if method == CAM and (net.kind != "cam" or layer != "last"):
        raise ValueError("method='CAM' needs the GAP + linear network (kind='cam') at layer='last'")
    x, y = x.to(device), None if y is None else y.to(device)
    start = time.perf_counter()
    if method == GRAD_CAM:
        maps = l2_caf.grad_cam(net, name, x, None if net.kind == "retrieval" else y)
    elif method == CAM:
        maps = l2_caf.cam(l2_caf.capture(net, name, x), net.head[-1].weight.detach(), y)
    else:
        side = l2_caf.capture(net, name, x[:1]).shape[-1]
        centre = torch.full((len(x), 2), (side - 1) / 2)
        maps = l2_caf.gaussian_bump(centre, side, side)
    maps = maps.cpu()  # inside the timing: the copy waits for the device to finish
    return dict(maps=maps, seconds=(time.perf_counter() - start) / len(x))


def score(maps: torch.Tensor, boxes: torch.Tensor, image_size: int) -> dict:
    """The one post-processing: hits at every τ ``(n, len(TAUS))`` and pointing hits ``(n,)``."""
    heat = loc.normalise_maps(maps, (image_size, image_size))
    per_image = [b.reshape(-1, 4) for b in boxes]
    return dict(hits=loc.localization_hits(heat, per_image), pointing=loc.pointing_hits(heat, per_image))


def pair_maps(net: ShapeNet, sets: Sets, method: str, seed: int = 0, **options) -> dict:
    """Two-object images, each explained for each of its two classes: ``on_queried`` ``(m, 2)`` (the
    peak lies in the queried object's box), ``on_other`` ``(m, 2)`` and the maps ``(m, 2, h, w)``.
    ``SPECIFIC_POSITIVE`` reads the class-specific filter's positive part max(f̂, 0) instead
    of |f̂| (ours): where the other classes' evidence dominates, the optimum makes f̂
    negative, and |f̂| lights up there too."""
    m = len(sets.pair_x)
    x = sets.pair_x.repeat(2, 1, 1, 1)
    y = torch.cat([sets.pair_y[:, 0], sets.pair_y[:, 1]])
    if method == SPECIFIC_POSITIVE:
        out = attention_maps(net, x, y, SPECIFIC, seed=seed, **options)
        out["maps"] = out["signed"].clamp_min(0)
    else:
        out = attention_maps(net, x, y, method, seed=seed, **options)
    heat = loc.normalise_maps(out["maps"], tuple(x.shape[-2:]))
    queried = torch.cat([sets.pair_boxes[:, 0], sets.pair_boxes[:, 1]])[:, None]
    other = torch.cat([sets.pair_boxes[:, 1], sets.pair_boxes[:, 0]])[:, None]
    on_queried = loc.pointing_hits(heat, queried).reshape(2, m).T
    on_other = loc.pointing_hits(heat, other).reshape(2, m).T
    return dict(on_queried=on_queried, on_other=on_other,
                maps=out["maps"].reshape(2, m, *out["maps"].shape[1:]).transpose(0, 1).numpy())


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-image Pearson correlation of two sets of maps ``(n, h, w)``."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).numpy()
