"""Single runs of chapter 06 (SLADE): the data pools so far; the teacher and student runs come next.

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

from labkit.config import check_choice, check_positive_int, check_range
from labkit.data import class_balanced_batches, glyph_prototypes, render_glyphs
from labkit.methods import slade
from labkit.metrics import nmi, recall_at_k
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
               size: int = 28, seed: int = 0, jitter: float = 1.0) -> SladePools:
    """The spec's pools (see the module docstring), deterministic from ``seed``. Class ids are
    ``[0, L)`` labeled, ``[L, L + N)`` novel, then validation, then test."""
    counts = {name: check_positive_int(name, value) for name, value in (
        ("num_labeled_classes", num_labeled_classes), ("labeled_per_class", labeled_per_class),
        ("unlabeled_size", unlabeled_size), ("num_novel_classes", num_novel_classes),
        ("num_validation_classes", num_validation_classes), ("validation_per_class", validation_per_class),
        ("num_test_classes", num_test_classes), ("test_per_class", test_per_class))}
    if not isinstance(novel_fraction, numbers.Real) or isinstance(novel_fraction, bool) \
            or not math.isfinite(novel_fraction):
        raise ValueError(f"novel_fraction={novel_fraction!r} is not valid; it must be a number in [0, 1]")
    check_range("novel_fraction", novel_fraction, 0.0, 1.0)
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
    y_novel = _round_robin(novel, num_novel)
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
             "num_validation_classes", "validation_per_class", "num_test_classes", "test_per_class", "size", "seed")
RECALL_KS = (1, 2, 4, 8)


def embedding_net(dim: int = 64, widths: tuple = (16, 32, 64)) -> torch.nn.Module:
    """The spec's CNN (3×3 conv-BN-ReLU blocks, max-pools, GAP) with a Linear to ``dim``; the
    embedding is its output L2-normalised (``embed``)."""
    return PlainCNN(num_classes=dim, in_channels=1, widths=tuple(widths))


def embed(model: torch.nn.Module, X: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """L2-normalised embeddings ``(n, dim)`` in eval mode, no gradient."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([torch.nn.functional.normalize(model(X[i:i + batch_size]), dim=1)
                         for i in range(0, len(X), batch_size)])
    model.train(was_training)
    return out


def retrieval_metrics(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict:
    """Recall@{1, 2, 4, 8} (each image a query against the others) and NMI with the number of
    classes in ``y``."""
    E = embed(model, X)
    recall = recall_at_k(E, y, RECALL_KS)
    return {"recall": {str(k): float(v) for k, v in recall.items()}, "nmi": float(nmi(E, y, seed=seed))}


def train_labeled(pools: dict, seed: int, steps: int, init_state: dict | None = None, *, dim: int = 64,
                  widths: tuple = (16, 32, 64), lr: float = 1e-3, classes_per_batch: int = 8,
                  samples_per_class: int = 4, neg_margin: float = 0.8) -> dict:
    """Eq. (1) on class-balanced labeled batches (Adam): the teacher from scratch, or — from a
    teacher's ``init_state`` — the compute-matched control, the same extra steps on labels only.

    ``pools`` holds ``make_pools``'s keyword arguments. Returns ``state`` (the net's state dict),
    test and validation ``recall``/``nmi`` and the loss ``history``."""
    unknown = set(pools) - set(POOL_KEYS)
    if unknown:
        raise ValueError(f"pools has unknown keys {sorted(unknown)}; valid: {', '.join(POOL_KEYS)}")
    data = make_pools(**pools)
    torch.manual_seed(seed)
    model = embedding_net(dim, widths)
    if init_state is not None:
        model.load_state_dict(init_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = class_balanced_batches(data.y_labeled, classes_per_batch, samples_per_class,
                                     generator=torch.Generator().manual_seed(seed + (0 if init_state is None else 1)))

    def step_fn(index: torch.Tensor, step: int) -> dict:
        E = torch.nn.functional.normalize(model(data.X_labeled[index]), dim=1)
        positive, negative = slade.pseudo_label_pairs(data.y_labeled[index])  # true labels here
        return {"loss": slade.masked_contrastive_loss(E, positive, negative, neg_margin=neg_margin)}

    history = fit(model, batches, step_fn, [optimizer], steps, log_every=10, progress=False)
    return dict(seed=seed, steps=steps, warm_start=init_state is not None,
                state={k: v.detach().clone() for k, v in model.state_dict().items()},
                test=retrieval_metrics(model, data.X_test, data.y_test, seed),
                validation=retrieval_metrics(model, data.X_validation, data.y_validation, seed),
                history=history.to_dict())


# --- the student ------------------------------------------------------------------------------------

#: how the student picks its unlabeled pairs: SLADE's basis similarity (Eq. 7), the raw embedding
#: cosine with the same thresholds rule, or every pseudo-label pair (no selection)
PAIR_SOURCES = ("basis", "cosine", "all")


def pseudo_label_quality(pseudo: np.ndarray, hidden: np.ndarray) -> dict:
    """NMI (scikit-learn) and purity of pseudo labels against the hidden classes."""
    from sklearn.metrics import normalized_mutual_info_score

    table = np.zeros((pseudo.max() + 1, hidden.max() + 1), dtype=np.int64)
    np.add.at(table, (pseudo, hidden), 1)
    return {"nmi": float(normalized_mutual_info_score(hidden, pseudo)), "purity": float(table.max(1).sum() / len(pseudo)),
            "num_clusters": int(len(np.unique(pseudo)))}


def similarity_auc(model: torch.nn.Module, basis, X: torch.Tensor, hidden: torch.Tensor) -> dict:
    """ROC-AUC of basis similarity and of embedding cosine for telling truly-same from
    truly-different unlabeled pairs (i < j), by the hidden labels."""
    from sklearn.metrics import roc_auc_score

    E = embed(model, X)
    with torch.no_grad():
        basis_sim = slade.cosine_matrix(basis(E))
    same, different = slade.pseudo_label_pairs(hidden)
    upper = same | different
    truth = same[upper].numpy()
    return {"basis": float(roc_auc_score(truth, basis_sim[upper].numpy())),
            "cosine": float(roc_auc_score(truth, (E @ E.T)[upper].numpy()))}


def train_student(pools: dict, seed: int, steps: int, teacher_state: dict, *, k: int = 60,
                  pair_source: str = "basis", select: str = "sim+label", delta: float = 0.0, lambda1: float = 1.0,
                  lambda2: float = 0.5, beta: float = 0.99, warmup: int = 50, sd_margin: float = 0.3,
                  dim: int = 64, widths: tuple = (16, 32, 64), lr: float = 1e-3, classes_per_batch: int = 8,
                  samples_per_class: int = 4, neg_margin: float = 0.8) -> dict:
    """Steps 2–3 of SLADE from a teacher's state: pseudo labels by k-means, then the student
    (initialised from the teacher) with the feature basis on Eq. (9). The first ``warmup`` steps
    train the basis alone on detached embeddings, so the statistics separate before mining starts.
    ``pair_source`` picks the unlabeled pairs (``PAIR_SOURCES``); every source trains the basis, so
    the rows differ only in which pairs the ranking loss sees (ours). Returns test and validation
    metrics, the pseudo labels' quality, the mined pairs' precision and recall against the hidden
    labels, the AUCs, the statistics' trace and the student's ``state``."""
    check_choice("pair_source", pair_source, PAIR_SOURCES)
    data = make_pools(**pools)
    torch.manual_seed(seed)
    model = embedding_net(dim, widths)
    model.load_state_dict(teacher_state)
    pseudo = slade.pseudo_labels(embed(model, data.X_unlabeled), k, seed=seed)
    quality = pseudo_label_quality(pseudo, data.y_unlabeled_hidden.numpy())
    pseudo = torch.as_tensor(pseudo)
    basis = slade.FeatureBasis(int(data.y_labeled.max()) + 1, dim)
    optimizer = torch.optim.Adam([*model.parameters(), *basis.parameters()], lr=lr)
    rng = torch.Generator().manual_seed(seed + 2)
    labeled = class_balanced_batches(data.y_labeled, classes_per_batch, samples_per_class, generator=rng)
    unlabeled = class_balanced_batches(pseudo, min(classes_per_batch, quality["num_clusters"]), samples_per_class,
                                       generator=rng)
    stats = slade.MomentumStats(beta)
    counts = dict(pos_selected=0, pos_true=0, neg_selected=0, neg_true=0, pos_available=0, neg_available=0)
    trace: dict[str, list] = {k: [] for k in ("step", "mu_pos", "mu_neg", "var_pos", "var_neg")}

    def step_fn(_, step: int) -> dict:
        index_l, index_u = next(labeled), next(unlabeled)
        warming = step < warmup
        E_l = torch.nn.functional.normalize(model(data.X_labeled[index_l]), dim=1)
        E_u = torch.nn.functional.normalize(model(data.X_unlabeled[index_u]), dim=1)
        y_l, y_u, hidden = data.y_labeled[index_l], pseudo[index_u], data.y_unlabeled_hidden[index_u]
        basis_in_l, basis_in_u = (E_l.detach(), E_u.detach()) if warming else (E_l, E_u)
        s_basis = slade.cosine_matrix(basis(basis_in_u))
        loss_basis = (torch.nn.functional.cross_entropy(basis.logits(basis_in_l), y_l)
                      + slade.similarity_distribution_loss(s_basis, y_u, sd_margin))
        s_select = s_basis if pair_source == "basis" else E_u @ E_u.T
        stats.update(slade.pair_statistics(s_select.detach(), y_u))
        if pair_source == "all":
            positive, negative = slade.pseudo_label_pairs(y_u)
        elif warming:
            positive = negative = torch.zeros(len(y_u), len(y_u), dtype=torch.bool)
        else:
            positive, negative = slade.select_pairs(s_select, y_u, stats, select, delta)
        true_same, true_different = slade.pseudo_label_pairs(hidden)
        if not warming:
            counts["pos_selected"] += int(positive.sum())
            counts["pos_true"] += int((positive & true_same).sum())
            counts["neg_selected"] += int(negative.sum())
            counts["neg_true"] += int((negative & true_different).sum())
            counts["pos_available"] += int(true_same.sum())
            counts["neg_available"] += int(true_different.sum())
        if warming:
            loss = lambda2 * loss_basis
        else:
            positive_l, negative_l = slade.pseudo_label_pairs(y_l)
            loss = (slade.masked_contrastive_loss(E_l, positive_l, negative_l, neg_margin=neg_margin)
                    + lambda1 * slade.masked_contrastive_loss(E_u, positive, negative, neg_margin=neg_margin)
                    + lambda2 * loss_basis)
        if step % 10 == 0 and "mu_pos" in stats.values and "mu_neg" in stats.values:
            trace["step"].append(step)
            for name in ("mu_pos", "mu_neg", "var_pos", "var_neg"):
                trace[name].append(stats.values[name])
        return {"loss": loss, "selected": float(positive.sum() + negative.sum())}

    history = fit(model, [None], step_fn, [optimizer], steps, log_every=10, progress=False)
    precision = {"positive": counts["pos_true"] / max(counts["pos_selected"], 1),
                 "negative": counts["neg_true"] / max(counts["neg_selected"], 1)}
    recall = {"positive": counts["pos_true"] / max(counts["pos_available"], 1),
              "negative": counts["neg_true"] / max(counts["neg_available"], 1)}
    return dict(seed=seed, steps=steps, pair_source=pair_source, select=select, delta=delta, k=k,
                test=retrieval_metrics(model, data.X_test, data.y_test, seed),
                validation=retrieval_metrics(model, data.X_validation, data.y_validation, seed),
                pseudo_quality=quality, pair_counts=counts, pair_precision=precision, pair_recall=recall,
                auc=similarity_auc(model, basis, data.X_unlabeled, data.y_unlabeled_hidden), trace=trace,
                state={k_: v.detach().clone() for k_, v in model.state_dict().items()}, history=history.to_dict())
