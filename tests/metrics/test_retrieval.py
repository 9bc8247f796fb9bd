import pytest
import torch

from labkit.metrics import nearest_neighbours, nmi, recall_at_k


def naive_recall_at_k(embeddings, labels, k):
    """One query at a time, with Python sorting on (distance, index) to break ties by index."""
    n = len(embeddings)
    hits = 0
    for query in range(n):
        others = [(float((embeddings[query] - embeddings[j]).norm()), j) for j in range(n) if j != query]
        neighbours = [j for _, j in sorted(others)[:k]]
        hits += any(labels[j] == labels[query] for j in neighbours)
    return hits / n


def separated_clusters(num_clusters=4, per_cluster=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = 100.0 * torch.eye(num_clusters, 8)
    labels = torch.arange(num_clusters).repeat_interleave(per_cluster)
    embeddings = centres[labels] + 0.1 * torch.randn(len(labels), 8, generator=generator)
    return embeddings, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_a_naive_loop_on_random_data(seed):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(60, 5, generator=generator)
    labels = torch.randint(0, 6, (60,), generator=generator)
    recalls = recall_at_k(embeddings, labels, ks=(1, 2, 4, 8))
    assert set(recalls) == {1, 2, 4, 8}
    for k, value in recalls.items():
        assert value == pytest.approx(naive_recall_at_k(embeddings, labels, k))
    assert recalls[1] <= recalls[2] <= recalls[4] <= recalls[8]


def test_ties_and_duplicates_match_the_naive_loop():
    # integer grid points: many exactly equal distances, and duplicated points
    generator = torch.Generator().manual_seed(5)
    embeddings = torch.randint(0, 3, (40, 2), generator=generator).float()
    labels = torch.randint(0, 3, (40,), generator=generator)
    recalls = recall_at_k(embeddings, labels, ks=(1, 3))
    for k in (1, 3):
        assert recalls[k] == pytest.approx(naive_recall_at_k(embeddings, labels, k))


def test_a_query_is_never_its_own_neighbour():
    embeddings = torch.tensor([[0.0], [1.0], [3.0]])
    assert nearest_neighbours(embeddings, 2).tolist() == [[1, 2], [0, 2], [1, 0]]
    # every label unique: only counting itself could score a hit
    assert recall_at_k(embeddings, torch.tensor([0, 1, 2]), ks=(1, 2)) == {1: 0.0, 2: 0.0}


def test_equal_distances_go_to_the_lower_index():
    embeddings = torch.tensor([[0.0], [-1.0], [1.0], [0.0]])
    assert nearest_neighbours(embeddings, 3)[0].tolist() == [3, 1, 2]


def test_neighbours_are_the_same_across_query_blocks(monkeypatch):
    import labkit.metrics.retrieval as retrieval

    embeddings = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    whole = nearest_neighbours(embeddings, 4)
    monkeypatch.setattr(retrieval, "QUERY_BLOCK", 7)
    assert torch.equal(nearest_neighbours(embeddings, 4), whole)


def test_perfectly_separated_clusters_give_recall_one():
    embeddings, labels = separated_clusters()
    assert recall_at_k(embeddings, labels) == {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0}


def test_nmi_is_one_for_separated_clusters_and_low_for_shuffled_labels():
    embeddings, labels = separated_clusters()
    assert nmi(embeddings, labels) == pytest.approx(1.0)
    assert nmi(embeddings, labels, num_clusters=4, seed=3) == pytest.approx(1.0)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert nmi(embeddings, shuffled) < 0.5


def test_metrics_accept_numpy_and_grad_tensors():
    embeddings, labels = separated_clusters()
    assert recall_at_k(embeddings.numpy(), labels.numpy(), ks=(1,)) == {1: 1.0}
    assert nmi(embeddings.requires_grad_(), labels) == pytest.approx(1.0)


@pytest.mark.parametrize("call, name", [
    (lambda e, y: recall_at_k(e, y[:-1]), "labels"),
    (lambda e, y: recall_at_k(e[0], y), "embeddings"),
    (lambda e, y: recall_at_k(e, y, ks=(0,)), "ks"),
    (lambda e, y: recall_at_k(e, y, ks=(40,)), "ks"),
    (lambda e, y: recall_at_k(e, y, ks=()), "ks"),
    (lambda e, y: recall_at_k(e, y, ks=(1.5,)), "ks"),
    (lambda e, y: recall_at_k(torch.full_like(e, float("nan")), y), "embeddings"),
    (lambda e, y: nmi(e, y[:-1]), "labels"),
    (lambda e, y: nmi(e, y, num_clusters=0), "num_clusters"),
    (lambda e, y: nmi(e, y, num_clusters=41), "num_clusters"),
])
def test_bad_input_names_the_parameter(call, name):
    embeddings, labels = separated_clusters()  # 40 samples
    with pytest.raises(ValueError, match=name):
        call(embeddings, labels)
