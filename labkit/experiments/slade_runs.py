"""Single runs of chapter 06 (SLADE): the data pools, the SSL initialisation, the teacher (and its
compute-matched control) and the student.

``make_pools`` draws the spec's four disjoint sets of glyph classes from one set of prototypes:

- **labeled**: ``num_labeled_classes`` classes × ``labeled_per_class`` images (the teacher's data);
- **unlabeled**: ``unlabeled_size`` images, a ``novel_fraction`` of them from ``num_novel_classes``
  classes the labels never show and the rest new renders of the labeled classes (the NABirds role:
  partly overlapping, partly new). Their true classes are kept as ``y_unlabeled_hidden`` for
  diagnostics only (pseudo-label NMI and purity, mined-pair precision);
- **validation**: further classes on which k, λ and thresholds are chosen, never on test recall;
- **test**: further classes again, every image a query against the others.

Cluster-balanced unlabeled batches are ``labkit.data.class_balanced_batches`` on the pseudo labels.
"""
from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import torch

from labkit.config import check_device, check_positive_int, check_range
from labkit.data import class_balanced_batches, glyph_prototypes, render_glyphs
from labkit.data.augment import random_affine
from labkit.losses.contrastive import nt_xent
from labkit.methods import slade
from labkit.metrics import nearest_neighbours, nmi, recall_at_k
from labkit.models.small_cnn import PlainCNN
from labkit.train import fit

# stream tags: every set is rendered from its own generator, so changing one knob (the novel
# fraction) leaves the other sets' images unchanged
_LABELED, _UNLABELED_SEEN, _UNLABELED_NOVEL, _VALIDATION, _TEST = range(5)


@dataclasses.dataclass(frozen=True)
class SladePools:
    """Images ``(n, 1, size, size)`` in [0, 1] and class ids ``(n,)`` of the four disjoint class sets."""

    X_labeled: torch.Tensor
    y_labeled: torch.Tensor
    X_unlabeled: torch.Tensor
    y_unlabeled_hidden: torch.Tensor  # diagnostics only: never seen by a model
    novel: torch.Tensor  # (n_unlabeled,) bool: from a class outside the labeled ones
    X_validation: torch.Tensor
    y_validation: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor


def _stream(seed: int, tag: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, 606, tag]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def _round_robin(classes: range, n: int) -> torch.Tensor:
    """``n`` class ids cycling through ``classes``: as balanced as ``n`` allows."""
    return torch.tensor(list(classes))[torch.arange(n) % len(classes)]


def make_pools(num_labeled_classes: int = 30, labeled_per_class: int = 10, unlabeled_size: int = 600,
               novel_fraction: float = 0.5, num_novel_classes: int = 30, num_validation_classes: int = 20,
               validation_per_class: int = 20, num_test_classes: int = 40, test_per_class: int = 20,
               size: int = 28, seed: int = 0, jitter: float = 1.0, novel_from_test: bool = False) -> SladePools:
    """The spec's pools (see the module docstring), deterministic from ``seed``. Class ids are
    ``[0, L)`` labeled, ``[L, L + N)`` novel, then validation, then test.

    Test classes never reach the labeled or unlabeled images, unless ``novel_from_test``: then the
    novel part of the unlabeled pool is drawn from the *test* classes (other renders than the test
    images), mimicking the paper's external pools, which may share categories with the test split."""
    counts = {name: check_positive_int(name, value) for name, value in (
        ("num_labeled_classes", num_labeled_classes), ("labeled_per_class", labeled_per_class),
        ("unlabeled_size", unlabeled_size), ("num_novel_classes", num_novel_classes),
        ("num_validation_classes", num_validation_classes), ("validation_per_class", validation_per_class),
        ("num_test_classes", num_test_classes), ("test_per_class", test_per_class))}
    if not isinstance(novel_fraction, numbers.Real) or isinstance(novel_fraction, bool) \
            or not math.isfinite(novel_fraction):
        raise ValueError(f"novel_fraction={novel_fraction!r} is not valid; it must be a number in [0, 1]")
    check_range("novel_fraction", novel_fraction, 0.0, 1.0)
    if not isinstance(novel_from_test, bool):
        raise ValueError(f"novel_from_test={novel_from_test!r} is not valid; it must be True or False")
    L, N, V, T = (counts[k] for k in ("num_labeled_classes", "num_novel_classes", "num_validation_classes",
                                      "num_test_classes"))
    prototypes = glyph_prototypes(L + N + V + T, seed)
    labeled, novel = range(L), range(L, L + N)
    validation, test = range(L + N, L + N + V), range(L + N + V, L + N + V + T)

    def render(y: torch.Tensor, tag: int) -> torch.Tensor:
        return render_glyphs(y, prototypes, size, _stream(seed, tag), jitter)

    y_labeled = torch.tensor(list(labeled)).repeat_interleave(counts["labeled_per_class"])
    num_novel = int(round(novel_fraction * counts["unlabeled_size"]))
    y_seen = _round_robin(labeled, counts["unlabeled_size"] - num_novel)
    y_novel = _round_robin(test if novel_from_test else novel, num_novel)
    y_validation = torch.tensor(list(validation)).repeat_interleave(counts["validation_per_class"])
    y_test = torch.tensor(list(test)).repeat_interleave(counts["test_per_class"])
    return SladePools(
        X_labeled=render(y_labeled, _LABELED), y_labeled=y_labeled,
        X_unlabeled=torch.cat([render(y_seen, _UNLABELED_SEEN), render(y_novel, _UNLABELED_NOVEL)]),
        y_unlabeled_hidden=torch.cat([y_seen, y_novel]),
        novel=torch.cat([torch.zeros(len(y_seen), dtype=torch.bool), torch.ones(num_novel, dtype=torch.bool)]),
        X_validation=render(y_validation, _VALIDATION), y_validation=y_validation,
        X_test=render(y_test, _TEST), y_test=y_test)


# --- the teacher, and the compute-matched control -------------------------------------------------

POOL_KEYS = ("num_labeled_classes", "labeled_per_class", "unlabeled_size", "novel_fraction", "num_novel_classes",
             "num_validation_classes", "validation_per_class", "num_test_classes", "test_per_class", "size", "seed",
             "novel_from_test")
RECALL_KS = (1, 2, 4, 8)


def embedding_net(dim: int = 64, widths: tuple = (16, 32, 64)) -> torch.nn.Module:
    """The spec's CNN (3×3 conv-BN-ReLU blocks, max-pools, GAP) with a Linear to ``dim``; the
    embedding is its output L2-normalised (``embed``)."""
    return PlainCNN(num_classes=dim, in_channels=1, widths=tuple(widths))


def embed(model: torch.nn.Module, X: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """L2-normalised embeddings ``(n, dim)`` of ``X`` ``(n, 1, size, size)`` in eval mode, no
    gradient, on the CPU: batches go to the model's device and come back, so every metric and
    diagnostic reads CPU tensors whatever device trained the net."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([torch.nn.functional.normalize(model(X[i:i + batch_size].to(device)), dim=1).cpu()
                         for i in range(0, len(X), batch_size)])
    model.train(was_training)
    return out


def retrieval_metrics(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict:
    """Recall@{1, 2, 4, 8} (each image a query against the others), NMI with the number of classes
    in ``y``, and ``hits``: per query, 1 when its nearest other image shares its class (the items
    a test bootstrap resamples)."""
    E = embed(model, X)
    recall = recall_at_k(E, y, RECALL_KS)
    hits = (y[nearest_neighbours(E, 1)[:, 0]] == y).numpy().astype(np.uint8)
    return {"recall": {str(k): float(v) for k, v in recall.items()}, "nmi": float(nmi(E, y, seed=seed)), "hits": hits}


def load_pools(pools: dict) -> SladePools:
    unknown = set(pools) - set(POOL_KEYS)
    if unknown:
        raise ValueError(f"pools has unknown keys {sorted(unknown)}; valid: {', '.join(POOL_KEYS)}")
    return make_pools(**pools)


def state_copy(model: torch.nn.Module) -> dict:
    """A copy of the model's state dict on the CPU (what runs return and caches store)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_labeled(pools: dict, seed: int, steps: int, init_state: dict | None = None, *, dim: int = 64,
                  widths: tuple = (16, 32, 64), lr: float = 1e-3, classes_per_batch: int = 8,
                  samples_per_class: int = 4, neg_margin: float = 0.8, eval_every: int = 0,
                  device: str = "cpu") -> dict:
    """Eq. (1) on class-balanced labeled batches (Adam): the teacher from scratch (or from an SSL
    ``init_state``), or — from a teacher's ``init_state`` — the compute-matched control, the same
    extra steps on labels only.

    ``pools`` holds ``make_pools``'s keyword arguments. Returns ``state`` (the net's state dict),
    test and validation ``recall``/``nmi`` and the loss ``history``. With ``eval_every`` it also
    scores validation R@1 at step 0 and every ``eval_every`` steps and returns ``early_stopped``:
    the checkpoint with the best validation R@1 (the first on ties) and its test metrics — the
    control with early stopping chosen on validation classes, never on test recall.

    The net trains on ``device``; the pools and index draws stay on the CPU and each batch moves
    over, and everything returned is on the CPU."""
    device = check_device(device)
    data = load_pools(pools)
    torch.manual_seed(seed)
    model = embedding_net(dim, widths).to(device)  # initialised on the CPU: the same weights on any device
    if init_state is not None:
        model.load_state_dict(init_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = class_balanced_batches(data.y_labeled, classes_per_batch, samples_per_class,
                                     generator=torch.Generator().manual_seed(seed + (0 if init_state is None else 1)))

    checkpoints: dict[str, list] = {"step": [], "validation_r1": []}
    best: dict = {}

    def checkpoint(step: int) -> None:
        r1 = float(recall_at_k(embed(model, data.X_validation), data.y_validation, (1,))[1])
        checkpoints["step"].append(step)
        checkpoints["validation_r1"].append(r1)
        if not best or r1 > best["validation_r1"]:
            best.update(step=step, validation_r1=r1, state=state_copy(model))

    def step_fn(index: torch.Tensor, step: int) -> dict:
        if eval_every and step % eval_every == 0:
            checkpoint(step)
        E = torch.nn.functional.normalize(model(data.X_labeled[index].to(device)), dim=1)
        positive, negative = slade.pseudo_label_pairs(data.y_labeled[index].to(device))  # true labels here
        return {"loss": slade.masked_contrastive_loss(E, positive, negative, neg_margin=neg_margin)}

    history = fit(model, batches, step_fn, [optimizer], steps, log_every=10, progress=False)
    out = dict(seed=seed, steps=steps, warm_start=init_state is not None, state=state_copy(model),
               test=retrieval_metrics(model, data.X_test, data.y_test, seed),
               validation=retrieval_metrics(model, data.X_validation, data.y_validation, seed),
               history=history.to_dict())
    if eval_every:
        checkpoint(steps)
        final = state_copy(model)
        model.load_state_dict(best["state"])
        out["early_stopped"] = dict(step=best["step"], validation_r1=best["validation_r1"],
                                    test=retrieval_metrics(model, data.X_test, data.y_test, seed))
        out["checkpoints"] = checkpoints
        model.load_state_dict(final)
    return out


def pretrain_simclr(pools: dict, seed: int, steps: int, *, dim: int = 64, widths: tuple = (16, 32, 64),
                    lr: float = 1e-3, batch_size: int = 64, temperature: float = 0.5, device: str = "cpu") -> dict:
    """The optional SSL initialisation (the paper uses SwAV; the spec's stand-in is SimCLR): NT-Xent
    on two ``random_affine`` views of every labeled and unlabeled image (labels unused), through a
    2-layer projection head that is then dropped. Returns the net's ``state``, its test and
    validation metrics (SSL alone) and the loss ``history``. The nets train on ``device``; the
    views are drawn and warped on the CPU (the same views on any device), then moved."""
    device = check_device(device)
    data = load_pools(pools)
    torch.manual_seed(seed)
    model = embedding_net(dim, widths).to(device)
    head = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, dim)).to(device)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=lr)
    images = torch.cat([data.X_labeled, data.X_unlabeled])
    rng = torch.Generator().manual_seed(seed + 3)

    def step_fn(_, step: int) -> dict:
        batch = images[torch.randperm(len(images), generator=rng)[:batch_size]]
        views = [head(model(random_affine(batch, rng).to(device))) for _ in range(2)]
        return {"loss": nt_xent(*views, temperature)}

    history = fit(model, [None], step_fn, [optimizer], steps, log_every=10, progress=False)
    return dict(seed=seed, steps=steps, state=state_copy(model),
                test=retrieval_metrics(model, data.X_test, data.y_test, seed),
                validation=retrieval_metrics(model, data.X_validation, data.y_validation, seed),
                history=history.to_dict())
