import itertools

import pytest
import torch

from labkit.data import DigitsSplit, all_digits, class_balanced_batches, load_digits_split


def test_all_digits_shapes_and_range():
    X, y = all_digits()
    assert X.shape == (1797, 64) and X.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.long
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(y.tolist()) == set(range(10))


def test_all_digits_returns_copies():
    X, _ = all_digits()
    X[0] = 99.0
    assert all_digits()[0].max() == 1.0


def test_split_is_class_disjoint_and_covers_every_sample_of_its_classes():
    split = load_digits_split()
    assert isinstance(split, DigitsSplit)
    X, y = all_digits()
    assert set(split.y_train.tolist()) == {0, 1, 2, 3, 4}
    assert set(split.y_test.tolist()) == {5, 6, 7, 8, 9}
    assert len(split.y_train) == int((y < 5).sum()) and len(split.y_test) == int((y >= 5).sum())
    assert torch.equal(split.X_train, X[y < 5]) and torch.equal(split.X_test, X[y >= 5])
    assert split.images_train.shape == (len(split.y_train), 8, 8)
    assert torch.equal(split.images_test.reshape(-1, 64), split.X_test)


def test_custom_split_keeps_only_the_named_classes():
    split = load_digits_split(train_classes=[1, 7], test_classes=(3,))
    assert set(split.y_train.tolist()) == {1, 7} and set(split.y_test.tolist()) == {3}
    assert split.train_classes == (1, 7) and split.test_classes == (3,)


@pytest.mark.parametrize("train, test, name", [
    ((0, 1), (1, 2), "share"),
    ((), (1, 2), "train_classes"),
    ((0, 1), (), "test_classes"),
    ((0, 10), (1,), "train_classes"),
    ((0, -1), (1,), "train_classes"),
    ((0, 1.5), (2,), "train_classes"),
    ((0, 0), (2,), "train_classes"),
    ((0,), 5, "test_classes"),
])
def test_bad_class_sets_are_rejected(train, test, name):
    with pytest.raises(ValueError, match=name):
        load_digits_split(train, test)


def take(batches, count):
    return list(itertools.islice(batches, count))


def test_balanced_batches_have_the_requested_composition():
    y = torch.tensor([0] * 50 + [1] * 40 + [2] * 30 + [3] * 60 + [4] * 35)
    for batch in take(class_balanced_batches(y, 3, 10, generator=0), 20):
        assert batch.shape == (30,) and batch.dtype == torch.long
        blocks = y[batch].reshape(3, 10)
        assert (blocks == blocks[:, :1]).all()  # each block is one class
        assert len(set(blocks[:, 0].tolist())) == 3  # three different classes
        for block in batch.reshape(3, 10):
            assert len(set(block.tolist())) == 10  # enough examples: no repeats


def test_balanced_batches_use_replacement_only_for_small_classes():
    y = torch.tensor([0] * 3 + [1] * 20)
    for batch in take(class_balanced_batches(y, 2, 8, generator=1), 10):
        blocks = batch.reshape(2, 8)
        for block in blocks:
            label = int(y[block[0]])
            assert (y[block] == label).all()
            if label == 1:
                assert len(set(block.tolist())) == 8
            else:
                assert set(block.tolist()) <= {0, 1, 2}


def test_balanced_batches_reach_every_sample_and_class():
    y = torch.arange(6).repeat_interleave(5)
    seen = torch.cat(take(class_balanced_batches(y, 2, 3, generator=2), 200))
    assert set(seen.tolist()) == set(range(30))


def test_balanced_batches_are_deterministic_from_the_generator():
    y = load_digits_split().y_train
    first = take(class_balanced_batches(y, 5, 30, generator=7), 5)
    again = take(class_balanced_batches(y, 5, 30, generator=torch.Generator().manual_seed(7)), 5)
    other = take(class_balanced_batches(y, 5, 30, generator=8), 5)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert not torch.equal(first[0], first[1])


def test_balanced_batches_accept_arbitrary_label_values():
    y = torch.tensor([5, 9, 5, 9, 7, 7])
    batch = next(class_balanced_batches(y, 3, 2, generator=0))
    assert sorted(y[batch].tolist()) == [5, 5, 7, 7, 9, 9]


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_classes_per_batch=0, samples_per_class=2), "num_classes_per_batch"),
    (dict(num_classes_per_batch=4, samples_per_class=2), "num_classes_per_batch"),
    (dict(num_classes_per_batch=2, samples_per_class=0), "samples_per_class"),
    (dict(num_classes_per_batch=2, samples_per_class=2, generator="x"), "generator"),
])
def test_bad_batch_arguments_fail_at_call_time(kwargs, name):
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=name):
        class_balanced_batches(y, **kwargs)


@pytest.mark.parametrize("y", [torch.zeros(0, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long),
                               torch.tensor([0.0, 1.0])])
def test_bad_labels_are_rejected(y):
    with pytest.raises(ValueError, match="y must"):
        class_balanced_batches(y, 1, 1)
