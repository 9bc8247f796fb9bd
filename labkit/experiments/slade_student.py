"""The SLADE student of chapter 06 (steps 2–3 of the method) and its diagnostics.

``train_student`` starts from a teacher's weights: pseudo labels by k-means on the teacher's
embeddings of the unlabeled pool, then Eq. (9) with the feature basis. Because the synthetic pool
keeps its true classes (``SladePools.y_unlabeled_hidden``), every run also measures what the paper
cannot: the precision and recall of the pairs it mined, and how well basis similarity and plain
embedding cosine tell truly-same from truly-different pairs (ROC-AUC).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from labkit.config import check_choice, check_device, check_positive_int
from labkit.data import class_balanced_batches
from labkit.experiments.slade_runs import embed, embedding_net, load_pools, retrieval_metrics, state_copy
from labkit.methods import slade
from labkit.train import fit

__all__ = ["PAIR_SOURCES", "DELTAS", "HISTOGRAM_BINS", "train_student", "pseudo_label_quality", "similarity_auc",
           "similarity_snapshot", "delta_curve"]

#: how the student picks its unlabeled pairs: SLADE's basis similarity (Eq. 7), the raw embedding
#: cosine with the same thresholds rule, or every pseudo-label pair (no selection)
PAIR_SOURCES = ("basis", "cosine", "all")
#: the threshold offsets of the precision-against-δ curve
DELTAS = tuple(float(d) + 0.0 for d in np.round(np.arange(-0.2, 0.301, 0.05), 2))  # + 0.0: no −0.0
HISTOGRAM_BINS = np.linspace(-1.0, 1.0, 51)
SNAPSHOT_IMAGES = 300  # unlabeled images whose pair similarities the histograms show


def pseudo_label_quality(pseudo: np.ndarray, hidden: np.ndarray) -> dict:
    """NMI (scikit-learn) and purity of pseudo labels against the hidden classes."""
    from sklearn.metrics import normalized_mutual_info_score

    table = np.zeros((pseudo.max() + 1, hidden.max() + 1), dtype=np.int64)
    np.add.at(table, (pseudo, hidden), 1)
    return {"nmi": float(normalized_mutual_info_score(hidden, pseudo)), "purity": float(table.max(1).sum() / len(pseudo)),
            "num_clusters": int(len(np.unique(pseudo)))}


def _similarities(model: torch.nn.Module, basis: slade.FeatureBasis, X: torch.Tensor, source: str) -> torch.Tensor:
    """All-pairs similarity ``(n, n)`` of ``X`` as the run selects by: basis (Eq. 4) or embedding
    cosine; on the CPU, whatever device ``model`` and ``basis`` are on."""
    E = embed(model, X)  # (n, dim), CPU
    if source == "cosine":
        return E @ E.T
    with torch.no_grad():
        return slade.cosine_matrix(basis(E.to(basis.weight.device))).cpu()


def similarity_auc(model: torch.nn.Module, basis, X: torch.Tensor, hidden: torch.Tensor) -> dict:
    """ROC-AUC of basis similarity and of embedding cosine for telling truly-same from
    truly-different unlabeled pairs (i < j), by the hidden labels."""
    from sklearn.metrics import roc_auc_score

    same, different = slade.pseudo_label_pairs(hidden)
    upper = same | different
    truth = same[upper].numpy()
    return {source: float(roc_auc_score(truth, _similarities(model, basis, X, source)[upper].numpy()))
            for source in ("basis", "cosine")}


def similarity_snapshot(model, basis, X: torch.Tensor, pseudo: torch.Tensor, source: str) -> dict:
    """Histograms (``HISTOGRAM_BINS``) of the pair similarities of ``X`` for same and different
    pseudo labels, with each group's mean and variance (the Gaussians Eq. 5 shapes)."""
    s = _similarities(model, basis, X, source)
    out = {}
    for name, mask in zip(("same", "different"), slade.pseudo_label_pairs(pseudo)):
        values = s[mask].numpy()
        out[name] = np.histogram(values, HISTOGRAM_BINS)[0]
        out[f"mu_{name}"] = float(values.mean()) if values.size else float("nan")
        out[f"var_{name}"] = float(values.var()) if values.size else float("nan")
    return out


def delta_curve(s: torch.Tensor, pseudo: torch.Tensor, hidden: torch.Tensor, stats: slade.MomentumStats) -> dict:
    """For each δ of ``DELTAS`` and each selection rule: how many positive / negative pairs Eq. (7)
    keeps on the whole pool with the run's final statistics, and the share truly same / different;
    ``all_pairs``: every same-pseudo-label pair (no selection) for comparison."""
    true_same, true_different = slade.pseudo_label_pairs(hidden)
    same_pseudo = slade.pseudo_label_pairs(pseudo)[0]
    out: dict = {"delta": list(DELTAS), "all_pairs": {
        "pos_count": int(same_pseudo.sum()), "pos_precision": int((same_pseudo & true_same).sum()) / max(int(same_pseudo.sum()), 1)}}
    for select in slade.SELECTIONS:
        rows = {key: [] for key in ("pos_count", "pos_precision", "neg_count", "neg_precision")}
        for delta in DELTAS:
            positive, negative = slade.select_pairs(s, pseudo, stats, select, delta)
            for sign, mask, truth in (("pos", positive, true_same), ("neg", negative, true_different)):
                count = int(mask.sum())
                rows[f"{sign}_count"].append(count)
                rows[f"{sign}_precision"].append(int((mask & truth).sum()) / count if count else float("nan"))
        out[select] = rows
    return out


def train_student(pools: dict, seed: int, steps: int, teacher_state: dict, *, k: int = 60,
                  pair_source: str = "basis", select: str = "sim+label", delta: float = 0.0, lambda1: float = 1.0,
                  lambda2: float = 0.5, beta: float = 0.99, warmup: int = 50, sd_margin: float = 0.3,
                  dim: int = 64, widths: tuple = (16, 32, 64), lr: float = 1e-3, classes_per_batch: int = 8,
                  samples_per_class: int = 4, neg_margin: float = 0.8, snapshots: int = 6,
                  device: str = "cpu") -> dict:
    """Steps 2–3 of SLADE from a teacher's state: pseudo labels by k-means, then the student
    (initialised from the teacher) with the feature basis on Eq. (9). The first ``warmup`` steps
    train the basis alone on detached embeddings, so the statistics separate before mining starts.
    ``pair_source`` picks the unlabeled pairs (``PAIR_SOURCES``); every source trains the basis, so
    the rows differ only in which pairs the ranking loss sees (ours).

    Returns test and validation metrics, the pseudo labels' quality, the mined pairs' precision and
    recall against the hidden labels (over all steps after the warm-up), the AUCs, the statistics'
    ``trace``, ``snapshots`` similarity histograms over training, the precision-against-δ curve at
    the end, and the student's ``state``.

    The student and the basis train on ``device``; pseudo labels, index draws and every
    diagnostic stay on the CPU, and everything returned is on the CPU."""
    device = check_device(device)
    check_choice("pair_source", pair_source, PAIR_SOURCES)
    check_choice("select", select, slade.SELECTIONS)  # before any training, not when mining first starts
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not np.isfinite(delta):
        raise ValueError(f"delta={delta!r} is not valid; it must be a finite number")
    check_positive_int("snapshots", snapshots)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or not 0 <= warmup < steps:
        raise ValueError(f"warmup={warmup!r} is not valid; it must be an integer in [0, steps={steps})")
    data = load_pools(pools)
    torch.manual_seed(seed)
    model = embedding_net(dim, widths).to(device)
    model.load_state_dict(teacher_state)
    pseudo = slade.pseudo_labels(embed(model, data.X_unlabeled), k, seed=seed)
    quality = pseudo_label_quality(pseudo, data.y_unlabeled_hidden.numpy())
    pseudo = torch.as_tensor(pseudo)
    basis = slade.FeatureBasis(int(data.y_labeled.max()) + 1, dim).to(device)  # drawn on the CPU, then moved
    optimizer = torch.optim.Adam([*model.parameters(), *basis.parameters()], lr=lr)
    rng = torch.Generator().manual_seed(seed + 2)
    labeled = class_balanced_batches(data.y_labeled, classes_per_batch, samples_per_class, generator=rng)
    unlabeled = class_balanced_batches(pseudo, min(classes_per_batch, quality["num_clusters"]), samples_per_class,
                                       generator=rng)
    stats = slade.MomentumStats(beta)
    source = "cosine" if pair_source == "cosine" else "basis"
    counts = dict(pos_selected=0, pos_true=0, neg_selected=0, neg_true=0, pos_available=0, neg_available=0)
    trace: dict[str, list] = {k: [] for k in ("step", "mu_pos", "mu_neg", "var_pos", "var_neg")}
    shown = torch.randperm(len(pseudo), generator=torch.Generator().manual_seed(seed))[:SNAPSHOT_IMAGES]
    snapshot_steps = sorted({0, warmup, *np.linspace(0, steps, snapshots).round().astype(int).tolist()})
    history_snapshots: list[dict] = []

    def snapshot(step: int) -> None:
        entry = similarity_snapshot(model, basis, data.X_unlabeled[shown], pseudo[shown], source)
        entry.update(step=step, thresholds=list(stats.thresholds(delta)) if stats.ready else None)
        history_snapshots.append(entry)

    def step_fn(_, step: int) -> dict:
        if step in snapshot_steps:
            snapshot(step)
        index_l, index_u = next(labeled), next(unlabeled)
        warming = step < warmup
        E_l = F.normalize(model(data.X_labeled[index_l].to(device)), dim=1)
        E_u = F.normalize(model(data.X_unlabeled[index_u].to(device)), dim=1)
        y_l, y_u, hidden = (labels.to(device) for labels in (data.y_labeled[index_l], pseudo[index_u],
                                                             data.y_unlabeled_hidden[index_u]))
        basis_in_l, basis_in_u = (E_l.detach(), E_u.detach()) if warming else (E_l, E_u)
        s_basis = slade.cosine_matrix(basis(basis_in_u))
        loss_basis = (F.cross_entropy(basis.logits(basis_in_l), y_l)
                      + slade.similarity_distribution_loss(s_basis, y_u, sd_margin))
        s_select = s_basis if source == "basis" else E_u @ E_u.T
        stats.update(slade.pair_statistics(s_select.detach(), y_u))
        if warming:
            positive = negative = torch.zeros(len(y_u), len(y_u), dtype=torch.bool, device=device)
            loss = lambda2 * loss_basis
        else:
            if pair_source == "all":
                positive, negative = slade.pseudo_label_pairs(y_u)
            else:
                positive, negative = slade.select_pairs(s_select, y_u, stats, select, delta)
            true_same, true_different = slade.pseudo_label_pairs(hidden)
            for sign, mask, truth in (("pos", positive, true_same), ("neg", negative, true_different)):
                counts[f"{sign}_selected"] += int(mask.sum())
                counts[f"{sign}_true"] += int((mask & truth).sum())
                counts[f"{sign}_available"] += int(truth.sum())
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
    snapshot(steps)
    precision = {sign: counts[f"{key}_true"] / max(counts[f"{key}_selected"], 1)
                 for sign, key in (("positive", "pos"), ("negative", "neg"))}
    recall = {sign: counts[f"{key}_true"] / max(counts[f"{key}_available"], 1)
              for sign, key in (("positive", "pos"), ("negative", "neg"))}
    curve = (delta_curve(_similarities(model, basis, data.X_unlabeled, source), pseudo, data.y_unlabeled_hidden,
                         stats) if stats.ready else None)
    return dict(seed=seed, steps=steps, warmup=warmup, pair_source=pair_source, select=select, delta=delta, k=k,
                test=retrieval_metrics(model, data.X_test, data.y_test, seed),
                validation=retrieval_metrics(model, data.X_validation, data.y_validation, seed),
                pseudo_quality=quality, pair_counts=counts, pair_precision=precision, pair_recall=recall,
                auc=similarity_auc(model, basis, data.X_unlabeled, data.y_unlabeled_hidden), trace=trace,
                snapshots=history_snapshots, delta_curve=curve, state=state_copy(model), history=history.to_dict())
