"""Chapter 06 (SLADE), first part: the data pools — disjoint class sets, the novel-fraction knob,
hidden labels kept apart, determinism, and messages on bad input."""
import numpy as np
import pytest
import torch

from labkit.experiments import slade_runs as runs
from labkit.experiments import slade_student as student

SMALL = dict(num_labeled_classes=4, labeled_per_class=3, unlabeled_size=20, num_novel_classes=5,
             num_validation_classes=3, validation_per_class=2, num_test_classes=4, test_per_class=3, size=16)


def test_pools_have_disjoint_class_sets_and_the_requested_sizes():
    pools = runs.make_pools(novel_fraction=0.5, **SMALL)
    labeled = set(pools.y_labeled.tolist())
    validation, test = set(pools.y_validation.tolist()), set(pools.y_test.tolist())
    assert labeled == set(range(4)) and validation == {9, 10, 11} and test == {12, 13, 14, 15}
    assert not (labeled | set(pools.y_unlabeled_hidden.tolist())) & (validation | test)
    assert pools.X_labeled.shape == (12, 1, 16, 16) and pools.X_unlabeled.shape == (20, 1, 16, 16)
    assert pools.X_validation.shape == (6, 1, 16, 16) and pools.X_test.shape == (12, 1, 16, 16)
    # the novel flag is exactly "class outside the labeled ones"
    assert torch.equal(pools.novel, pools.y_unlabeled_hidden >= 4)
    for X in (pools.X_labeled, pools.X_unlabeled, pools.X_validation, pools.X_test):
        assert X.dtype == torch.float32 and X.min() >= 0 and X.max() <= 1


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (0.5, 10), (1.0, 20), (0.33, 7)])
def test_the_novel_fraction_sets_the_share_of_novel_images(fraction, expected):
    pools = runs.make_pools(novel_fraction=fraction, **SMALL)
    assert int(pools.novel.sum()) == expected
    seen = pools.y_unlabeled_hidden[~pools.novel]
    if len(seen):  # seen classes are spread evenly: counts differ by at most one
        counts = torch.bincount(seen, minlength=4)
        assert int(counts.max() - counts.min()) <= 1


def test_pools_are_deterministic_and_sets_do_not_move_with_the_knob():
    a, b = runs.make_pools(seed=3, **SMALL), runs.make_pools(seed=3, **SMALL)
    assert torch.equal(a.X_unlabeled, b.X_unlabeled) and torch.equal(a.X_test, b.X_test)
    other = runs.make_pools(seed=3, **{**SMALL, "unlabeled_size": 40}, novel_fraction=0.9)
    assert torch.equal(a.X_labeled, other.X_labeled) and torch.equal(a.X_test, other.X_test)
    assert torch.equal(a.X_validation, other.X_validation)
    # unlabeled renders of a labeled class are new images, not copies of the labeled ones
    assert not any(torch.equal(x, y) for x in a.X_unlabeled[~a.novel] for y in a.X_labeled)
    assert not torch.equal(runs.make_pools(seed=4, **SMALL).X_test, a.X_test)


def test_pools_bad_input():
    with pytest.raises(ValueError, match="novel_fraction=1.5 is out of range"):
        runs.make_pools(novel_fraction=1.5, **SMALL)
    with pytest.raises(ValueError, match="novel_fraction='half' is not valid"):
        runs.make_pools(novel_fraction="half", **SMALL)
    with pytest.raises(ValueError, match="num_test_classes=0 is not valid"):
        runs.make_pools(**{**SMALL, "num_test_classes": 0})


def test_the_teacher_learns_and_the_control_continues_from_it():
    pools = dict(SMALL, seed=1, validation_per_class=3)  # 9 validation images: Recall@8 needs n > 8
    teacher = runs.train_labeled(pools, seed=0, steps=30, classes_per_batch=4, samples_per_class=3)
    assert set(teacher["test"]["recall"]) == {"1", "2", "4", "8"} and 0 <= teacher["test"]["nmi"] <= 1
    losses = teacher["history"]["loss"]["value"]
    assert sum(losses[-2:]) < sum(losses[:2])  # Eq. (1) falls on the labeled batches
    control = runs.train_labeled(pools, seed=0, steps=5, init_state=teacher["state"], classes_per_batch=4,
                                 samples_per_class=3)
    assert control["warm_start"] and not teacher["warm_start"]
    # the control starts from the teacher: with zero extra steps it is the teacher
    same = runs.train_labeled(pools, seed=0, steps=0, init_state=teacher["state"], classes_per_batch=4,
                              samples_per_class=3)
    assert same["test"]["recall"] == teacher["test"]["recall"] and same["test"]["nmi"] == teacher["test"]["nmi"]
    assert np.array_equal(same["test"]["hits"], teacher["test"]["hits"])
    with pytest.raises(ValueError, match="unknown keys \\['classes'\\]"):
        runs.train_labeled(dict(pools, classes=3), seed=0, steps=1)


@pytest.fixture(scope="module")
def tiny_teacher():
    pools = dict(SMALL, seed=2, validation_per_class=3)
    return pools, runs.train_labeled(pools, seed=0, steps=40, classes_per_batch=4, samples_per_class=3)


@pytest.mark.parametrize("source", student.PAIR_SOURCES)
def test_a_student_trains_from_the_teacher_with_every_pair_source(tiny_teacher, source):
    pools, teacher = tiny_teacher
    out = student.train_student(pools, seed=0, steps=12, teacher_state=teacher["state"], k=6, pair_source=source,
                             warmup=4, classes_per_batch=4, samples_per_class=3)
    assert set(out["test"]["recall"]) == {"1", "2", "4", "8"}
    assert 0 <= out["pseudo_quality"]["purity"] <= 1 and out["pseudo_quality"]["num_clusters"] <= 6
    for kind in ("positive", "negative"):
        assert 0 <= out["pair_precision"][kind] <= 1 and 0 <= out["pair_recall"][kind] <= 1
    assert 0 <= out["auc"]["basis"] <= 1 and 0 <= out["auc"]["cosine"] <= 1
    counts = out["pair_counts"]
    assert counts["pos_true"] <= counts["pos_selected"] and counts["neg_true"] <= counts["neg_selected"]
    if source == "all":  # every pseudo-label pair of every batch after the warm-up
        assert counts["pos_selected"] + counts["neg_selected"] == 8 * (12 * 11 // 2)


def test_pseudo_label_quality_of_a_perfect_and_a_random_clustering():
    hidden = np.repeat(np.arange(4), 5)
    perfect = student.pseudo_label_quality((hidden + 1) % 4, hidden)  # renamed clusters: still perfect
    assert perfect["nmi"] == pytest.approx(1.0) and perfect["purity"] == 1.0
    merged = student.pseudo_label_quality(np.zeros(20, dtype=int), hidden)
    assert merged["purity"] == 0.25 and merged["nmi"] == pytest.approx(0.0)


def test_a_bad_pair_source_is_refused(tiny_teacher):
    pools, teacher = tiny_teacher
    with pytest.raises(ValueError, match="pair_source='labels'.*'basis', 'cosine', 'all'"):
        student.train_student(pools, seed=0, steps=1, teacher_state=teacher["state"], pair_source="labels")
