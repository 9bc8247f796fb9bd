"""Ranking losses and the spread-out regularizer against naive loop references (float64)."""
import itertools
import math

import numpy as np
import pytest
import torch

from labkit import losses
from labkit.losses import ranking


def unit_batch(labels, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(len(labels), d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, np.asarray(labels)


def as_tensors(X, y):
    return torch.from_numpy(X), torch.from_numpy(y)


LABELS = [2, 0, 1, 2, 0, 1, 1, 2, 0, 2]  # 3 classes, shuffled, unequal counts


def distance(a, b):
    return math.sqrt(((a - b) ** 2).sum())


def reference_pairs(y):
    """Anchor/positive indices as the spec says: first two samples of each class, by label."""
    return [tuple(np.flatnonzero(y == c)[:2]) for c in sorted(set(y.tolist()))]


def test_pairwise_distances_match_loops_and_have_finite_gradients():
    X, _ = unit_batch(LABELS)
    X[3] = X[0]  # a duplicate row: a zero off-diagonal distance
    E = torch.from_numpy(X).requires_grad_(True)
    D = ranking.pairwise_distances(E)
    reference = [[distance(X[i], X[j]) for j in range(len(X))] for i in range(len(X))]
    np.testing.assert_allclose(D.detach().numpy(), reference, atol=1e-7)
    assert (D.diagonal() == 0).all()
    D.sum().backward()
    assert torch.isfinite(E.grad).all()


@pytest.mark.parametrize("name", list(losses.RANKING_LOSSES))
def test_gradients_stay_finite_on_exactly_repeated_rows(name):
    # One-hot rows make the squared distances exactly 0 (diagonal and duplicates), where a
    # plain sqrt has an infinite slope: the regime of a collapsed model.
    y = np.repeat([0, 1, 2], 4)
    for rows in (np.eye(3)[y], np.tile([0.0, 1.0, 0.0], (12, 1))):
        E = torch.from_numpy(rows).float().requires_grad_(True)
        loss = losses.ranking_loss(name)(E, torch.from_numpy(y))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(E.grad).all(), name


def test_contrastive_loss_matches_a_loop():
    X, y = unit_batch(LABELS)
    margin = 1.0
    terms = [distance(X[i], X[j]) if y[i] == y[j] else max(0.0, margin - distance(X[i], X[j]))
             for i, j in itertools.combinations(range(len(X)), 2)]
    assert losses.contrastive_loss(*as_tensors(X, y), margin).item() == pytest.approx(np.mean(terms))


def test_contrastive_loss_stays_in_zero_two():
    for seed in range(5):
        X, y = unit_batch(LABELS, d=3, seed=seed)
        assert 0.0 <= losses.contrastive_loss(*as_tensors(X, y)).item() <= 2.0
    antipodal = np.array([[1.0, 0.0], [-1.0, 0.0]])  # one positive pair as far apart as possible
    assert losses.contrastive_loss(*as_tensors(antipodal, np.array([0, 0]))).item() == pytest.approx(2.0)


def test_triplet_loss_matches_a_loop():
    X, y = unit_batch(LABELS)
    margin = 0.2
    terms = []
    for a in range(len(X)):
        positives = [distance(X[a], X[p]) for p in range(len(X)) if p != a and y[p] == y[a]]
        negatives = [distance(X[a], X[n]) for n in range(len(X)) if y[n] != y[a]]
        if positives and negatives:
            terms.append(max(0.0, max(positives) - min(negatives) + margin))
    assert losses.triplet_loss(*as_tensors(X, y), margin).item() == pytest.approx(np.mean(terms))


def test_triplet_loss_is_zero_for_separated_classes_and_positive_otherwise():
    centres = np.eye(3)
    y = np.repeat([0, 1, 2], 4)
    X = centres[y] + 0.01 * np.random.default_rng(0).normal(size=(12, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    assert losses.triplet_loss(*as_tensors(X, y), 0.2).item() == 0.0
    assert losses.triplet_loss(*as_tensors(X, np.roll(y, 1)), 0.2).item() > 0.0


def test_triplet_loss_needs_an_anchor_with_positive_and_negative():
    X, _ = unit_batch([0, 1, 2])
    with pytest.raises(ValueError, match="positive and a negative"):
        losses.triplet_loss(*as_tensors(X, np.array([0, 1, 2])))


def test_npair_loss_matches_a_loop():
    X, y = unit_batch(LABELS)
    pairs = reference_pairs(y)
    terms = []
    for i, (a, p) in enumerate(pairs):
        own = X[a] @ X[p]
        others = [X[a] @ X[q] for j, (_, q) in enumerate(pairs) if j != i]
        terms.append(math.log(1 + sum(math.exp(o - own) for o in others)))
    assert losses.npair_loss(*as_tensors(X, y)).item() == pytest.approx(np.mean(terms))
    chosen = [k for pair in pairs for k in pair]
    with_l2 = np.mean(terms) + 0.01 * np.mean((X[chosen] ** 2).sum(axis=1))
    assert losses.npair_loss(*as_tensors(X, y), l2_weight=0.01).item() == pytest.approx(with_l2)


def test_npair_and_angular_reject_a_singleton_class():
    X, y = unit_batch([0, 0, 1, 2, 2])
    for loss in (losses.npair_loss, losses.angular_loss):
        with pytest.raises(ValueError, match=r"class\(es\) \[1\] have only 1"):
            loss(*as_tensors(X, y))


def test_angular_loss_matches_a_loop():
    X, y = unit_batch(LABELS)
    alpha = 40.0
    t2 = math.tan(math.radians(alpha)) ** 2
    terms = []
    for a, p in reference_pairs(y):
        total = 1.0
        for n in range(len(X)):
            if y[n] != y[a]:
                total += math.exp(4 * t2 * (X[a] + X[p]) @ X[n] - 2 * (1 + t2) * X[a] @ X[p])
        terms.append(math.log(total))
    assert losses.angular_loss(*as_tensors(X, y), alpha).item() == pytest.approx(np.mean(terms))


def test_every_loss_is_finite_and_differentiable_at_float32():
    X, y = unit_batch(LABELS)
    for name in losses.RANKING_LOSSES:
        E = torch.from_numpy(X).float().requires_grad_(True)
        losses.ranking_loss(name)(E, torch.from_numpy(y)).backward()
        assert torch.isfinite(E.grad).all(), name


def test_registry_error_lists_the_valid_names():
    assert losses.ranking_loss("triplet") is losses.triplet_loss
    with pytest.raises(ValueError, match=r"loss='hinge'.*'contrastive'.*'triplet'.*'npair'.*'angular'"):
        losses.ranking_loss("hinge")


def test_spread_out_matches_a_loop():
    X, y = unit_batch(LABELS)
    dots = [X[i] @ X[j] for i, j in itertools.combinations(range(len(X)), 2) if y[i] != y[j]]
    reference = np.mean(dots) ** 2 + max(0.0, np.mean(np.square(dots)) - 1 / X.shape[1])
    assert losses.spread_out_regularizer(*as_tensors(X, y)).item() == pytest.approx(reference)


def test_spread_out_is_zero_when_classes_are_orthogonal_and_large_when_collapsed():
    y = np.repeat(np.arange(4), 3)
    orthogonal = np.eye(4)[y]  # each class on its own axis: non-matching dot products are 0
    collapsed = np.tile([1.0, 0.0, 0.0, 0.0], (12, 1))
    assert losses.spread_out_regularizer(*as_tensors(orthogonal, y)).item() == pytest.approx(0.0, abs=1e-12)
    assert losses.spread_out_regularizer(*as_tensors(collapsed, y)).item() == pytest.approx(1 + (1 - 1 / 4))


def test_spread_out_without_labels_uses_every_pair():
    X, _ = unit_batch(LABELS)
    dots = [X[i] @ X[j] for i, j in itertools.combinations(range(len(X)), 2)]
    reference = np.mean(dots) ** 2 + max(0.0, np.mean(np.square(dots)) - 1 / X.shape[1])
    assert losses.spread_out_regularizer(torch.from_numpy(X), None).item() == pytest.approx(reference)


def test_bad_shapes_and_margins_are_named():
    X, y = unit_batch(LABELS)
    E, labels = as_tensors(X, y)
    with pytest.raises(ValueError, match=r"labels must have shape \(b,\)"):
        losses.contrastive_loss(E, labels[:-1])
    with pytest.raises(ValueError, match="margin"):
        losses.triplet_loss(E, labels, margin=-0.1)
    with pytest.raises(ValueError, match="alpha_deg"):
        losses.angular_loss(E, labels, alpha_deg=90.0)
