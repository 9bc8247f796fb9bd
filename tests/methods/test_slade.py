"""SLADE: pseudo labels (k-means, tiny clusters), the feature basis, Eq. (4)–(7) against NumPy
references, the momentum statistics' seeding, pair selection (detached, guarded), Eq. (1) on
selected pairs, and messages on bad input."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.methods import slade


def unit(n, d, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


# --- pseudo labels --------------------------------------------------------------------------------

def test_pseudo_labels_recover_well_separated_clusters():
    centres = unit(4, 8, seed=1) * 5
    X = torch.cat([c + 0.01 * torch.randn(10, 8, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
                   for i, c in enumerate(centres)])
    labels = slade.pseudo_labels(X, k=4)
    truth = np.repeat(np.arange(4), 10)
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, labels) == 1.0
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]


def test_pseudo_labels_fold_tiny_clusters_into_the_nearest_centre():
    X = torch.cat([torch.tensor([[1.0, 0.0]]).repeat(10, 1), torch.tensor([[0.0, 1.0]]).repeat(10, 1),
                   torch.tensor([[-1.0, 0.05]])])  # one outlier: a singleton cluster at k = 3
    labels = slade.pseudo_labels(X, k=3, min_cluster_size=2)
    assert len(set(labels.tolist())) == 2
    assert np.bincount(labels).min() >= 2
    assert set(labels.tolist()) == {0, 1}  # renumbered contiguously


def test_pseudo_labels_bad_k():
    with pytest.raises(ValueError, match="k=0 is not valid"):
        slade.pseudo_labels(unit(5, 3), k=0)
    with pytest.raises(ValueError, match="k=6 is not valid.*at most the number of embeddings"):
        slade.pseudo_labels(unit(5, 3), k=6)


# --- the basis and the similarity distributions ---------------------------------------------------

def test_basis_responses_are_cosines_to_the_normalised_rows():
    basis = slade.FeatureBasis(5, 8, scale=10.0).double()
    E = unit(6, 8)
    rows = F.normalize(basis.weight.detach(), dim=1)
    torch.testing.assert_close(basis(E), E @ rows.T)
    torch.testing.assert_close(basis.logits(E), 10.0 * E @ rows.T)
    assert basis(E).abs().max() <= 1 + 1e-12


def test_cosine_matrix_matches_numpy():
    r = torch.randn(7, 5, dtype=torch.float64)
    a = r.numpy()
    expected = (a @ a.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(a, axis=1))
    np.testing.assert_allclose(slade.cosine_matrix(r).numpy(), expected, atol=1e-12)


def test_pair_statistics_and_the_sd_loss_match_a_loop():
    s = slade.cosine_matrix(torch.randn(8, 4, dtype=torch.float64))
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    pos, neg = [], []
    for i in range(8):
        for j in range(i + 1, 8):
            (pos if labels[i] == labels[j] else neg).append(float(s[i, j]))
    stats = slade.pair_statistics(s, labels)
    assert stats["num_pos"] == len(pos) and stats["num_neg"] == len(neg)
    assert float(stats["mu_pos"]) == pytest.approx(np.mean(pos)) and float(stats["var_pos"]) == pytest.approx(np.var(pos))
    assert float(stats["mu_neg"]) == pytest.approx(np.mean(neg)) and float(stats["var_neg"]) == pytest.approx(np.var(neg))
    expected = max(np.mean(neg) - np.mean(pos) + 0.3, 0.0) + np.var(pos) + np.var(neg)
    assert float(slade.similarity_distribution_loss(s, labels, margin=0.3)) == pytest.approx(expected)


def test_sd_loss_pulls_the_bands_apart():
    r = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(12) // 3
    loss = slade.similarity_distribution_loss(slade.cosine_matrix(r), labels, margin=2.0)  # hinge active
    loss.backward()
    with torch.no_grad():
        stepped = r - 0.05 * r.grad
    before, after = (slade.pair_statistics(slade.cosine_matrix(x.detach()), labels) for x in (r, stepped))
    assert float(after["mu_pos"] - after["mu_neg"]) > float(before["mu_pos"] - before["mu_neg"])


def test_sd_loss_without_positive_pairs_keeps_only_the_negative_variance():
    s = slade.cosine_matrix(torch.randn(4, 3, dtype=torch.float64))
    labels = torch.arange(4)
    stats = slade.pair_statistics(s, labels)
    assert stats["num_pos"] == 0 and math.isnan(float(stats["mu_pos"]))
    assert float(slade.similarity_distribution_loss(s, labels)) == pytest.approx(float(stats["var_neg"]))


# --- momentum statistics and selection --------------------------------------------------------------

def _stats(mu_pos, mu_neg, num_pos=1, num_neg=1):
    return dict(mu_pos=mu_pos, var_pos=0.01, mu_neg=mu_neg, var_neg=0.02, num_pos=num_pos, num_neg=num_neg)


def test_momentum_stats_seed_from_the_first_batch_with_each_pair_type():
    stats = slade.MomentumStats(beta=0.9)
    stats.update(_stats(math.nan, 0.1, num_pos=0))  # no positives: μ⁺ not seeded from NaN or 0
    assert "mu_pos" not in stats.values and stats.values["mu_neg"] == pytest.approx(0.1)
    assert not stats.ready
    stats.update(_stats(0.8, 0.3))
    assert stats.values["mu_pos"] == pytest.approx(0.8)  # seeded, not 0.9·0 + 0.1·0.8
    assert stats.values["mu_neg"] == pytest.approx(0.9 * 0.1 + 0.1 * 0.3)
    assert stats.ready
    assert stats.thresholds(0.05) == (pytest.approx(0.85), pytest.approx(0.12 - 0.05))


def test_no_thresholds_before_both_pair_types():
    with pytest.raises(ValueError, match="no thresholds yet"):
        slade.MomentumStats().thresholds()
    with pytest.raises(ValueError, match="beta=1.0 is out of range"):
        slade.MomentumStats(beta=1.0)


def test_selection_is_off_until_the_bands_separate():
    s = torch.rand(6, 6, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    stats = slade.MomentumStats()
    stats.update(_stats(0.2, 0.5))  # μ⁺ < μ⁻: overlapping bands
    positive, negative = slade.select_pairs(s, labels, stats)
    assert not positive.any() and not negative.any()


def test_selection_by_similarity_and_by_similarity_and_label():
    s = torch.tensor([[1.0, 0.9, 0.1, 0.95],
                      [0.9, 1.0, 0.5, 0.05],
                      [0.1, 0.5, 1.0, 0.2],
                      [0.95, 0.05, 0.2, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    stats = slade.MomentumStats()
    stats.update(_stats(0.8, 0.3))
    positive, negative = slade.select_pairs(s, labels, stats, select="sim")
    assert positive.nonzero().tolist() == [[0, 1], [0, 3]] and negative.nonzero().tolist() == [[0, 2], [1, 3], [2, 3]]
    positive, negative = slade.select_pairs(s, labels, stats, select="sim+label")
    assert positive.nonzero().tolist() == [[0, 1]]  # (0, 3) is similar but the pseudo labels differ
    assert negative.nonzero().tolist() == [[0, 2], [1, 3]]  # (2, 3) shares a pseudo label
    assert not positive.requires_grad
    # δ moves both thresholds outwards, and crossing thresholds select nothing
    positive, negative = slade.select_pairs(s, labels, stats, select="sim", delta=0.12)
    assert positive.nonzero().tolist() == [[0, 3]] and negative.nonzero().tolist() == [[0, 2], [1, 3]]
    positive, negative = slade.select_pairs(s, labels, stats, delta=-0.5)
    assert not positive.any() and not negative.any()


def test_selection_bad_input():
    stats = slade.MomentumStats()
    with pytest.raises(ValueError, match="select='label'.*'sim', 'sim\\+label'"):
        slade.select_pairs(torch.eye(3), torch.arange(3), stats, select="label")
    with pytest.raises(ValueError, match="delta=nan is not valid"):
        slade.select_pairs(torch.eye(3), torch.arange(3), stats, delta=math.nan)


# --- Eq. (1) on selected pairs ----------------------------------------------------------------------

def test_masked_contrastive_loss_matches_a_loop_and_handles_no_pairs():
    E = unit(5, 4, seed=3).requires_grad_(True)
    positive = torch.zeros(5, 5, dtype=torch.bool)
    negative = torch.zeros(5, 5, dtype=torch.bool)
    positive[0, 1] = positive[2, 3] = True
    negative[0, 4] = negative[1, 2] = True
    d = torch.cdist(E.detach(), E.detach())
    expected = np.mean([max(d[0, 1] - 0.1, 0), max(d[2, 3] - 0.1, 0), max(0.8 - d[0, 4], 0), max(0.8 - d[1, 2], 0)])
    loss = slade.masked_contrastive_loss(E, positive, negative, pos_margin=0.1, neg_margin=0.8)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-9)
    loss.backward()
    assert E.grad.abs().sum() > 0
    empty = slade.masked_contrastive_loss(E, torch.zeros_like(positive), torch.zeros_like(negative))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_masked_contrastive_loss_bad_masks():
    E = unit(3, 2)
    both = torch.zeros(3, 3, dtype=torch.bool)
    both[0, 1] = True
    with pytest.raises(ValueError, match="both positive and negative"):
        slade.masked_contrastive_loss(E, both, both)
    with pytest.raises(ValueError, match="must be \\(3, 3\\) masks"):
        slade.masked_contrastive_loss(E, torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool))
