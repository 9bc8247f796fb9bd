import numpy as np
import pytest
import torch

from labkit.data import (
    SMALL_DATASETS,
    ImageSplit,
    all_digits,
    class_counts,
    digits_few_shot,
    glyphs_few_shot,
    load_small_data,
    stratified_indices,
    upsampled_digits,
)


def sorted_rows(X):
    rows = X.flatten(1).numpy()
    return rows[np.lexsort(rows.T[::-1])]


def test_upsampled_digits_shapes_range_and_identity_at_8px():
    X, y = upsampled_digits(16)
    assert X.shape == (1797, 1, 16, 16) and X.dtype == torch.float32 and y.dtype == torch.long
    assert X.min() >= 0 and X.max() <= 1
    original, labels = all_digits()
    assert torch.equal(y, labels)
    # bilinear upsampling keeps the overall brightness of each image
    assert (X.mean(dim=(1, 2, 3)) - original.mean(dim=1)).abs().max() < 0.03
    assert torch.equal(upsampled_digits(8)[0].flatten(1), original)


def test_digits_few_shot_counts_and_coverage():
    split = digits_few_shot(samples_per_class=15, size=16, seed=0)
    assert isinstance(split, ImageSplit) and split.num_classes == 10
    assert split.X_train.shape == (150, 1, 16, 16) and split.X_train.dtype == torch.float32
    assert torch.equal(class_counts(split.y_train), torch.full((10,), 15))
    X, y = upsampled_digits(16)
    assert len(split.y_test) == 1797 - 150
    assert torch.equal(class_counts(split.y_test) + 15, class_counts(y))
    # train and test together are exactly all digits (as multisets of images)
    both = torch.cat([split.X_train, split.X_test])
    assert np.array_equal(sorted_rows(both), sorted_rows(X))
    assert split.train_classes == split.test_classes == tuple(range(10)) and not split.is_open_set
    assert split.image_shape == (1, 16, 16)


def test_digits_few_shot_is_deterministic_from_the_seed():
    first = digits_few_shot(5, seed=3)
    again = digits_few_shot(5, seed=3)
    assert torch.equal(first.X_train, again.X_train) and torch.equal(first.y_test, again.y_test)
    assert not torch.equal(first.X_train, digits_few_shot(5, seed=4).X_train)


def test_stratified_indices_pick_disjoint_random_members_of_every_class():
    shuffle = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0] * 7 + [1] * 4 + [2] * 9)[shuffle]
    mask = stratified_indices(y, 3, generator=1)
    assert mask.dtype == torch.bool and mask.shape == (20,)
    assert torch.equal(torch.bincount(y[mask]), torch.tensor([3, 3, 3]))
    assert torch.equal(mask, stratified_indices(y, 3, generator=1))
    picks = {tuple(stratified_indices(y, 3, generator=g).nonzero().squeeze(1).tolist())
             for g in range(10)}
    assert len(picks) > 5
    # a class with too few members is taken whole
    assert torch.equal(torch.bincount(y[stratified_indices(y, 5, generator=0)]), torch.tensor([5, 4, 5]))
    with pytest.raises(ValueError, match="samples_per_class"):
        stratified_indices(y, 0)
    with pytest.raises(ValueError, match="y"):
        stratified_indices(torch.tensor([0.0, 1.0]), 1)


def test_largest_valid_samples_per_class_keeps_test_images_in_every_class():
    split = digits_few_shot(173)
    assert class_counts(split.y_test).min() == 1
    with pytest.raises(ValueError, match="samples_per_class=174.*maximum is 173"):
        digits_few_shot(174)


def test_class_counts():
    assert torch.equal(class_counts(torch.tensor([2, 0, 2])), torch.tensor([1, 0, 2]))
    assert torch.equal(class_counts(torch.tensor([1]), num_classes=4), torch.tensor([0, 1, 0, 0]))
    for bad in (torch.tensor([0.5]), torch.tensor([[1]]), torch.tensor([-1])):
        with pytest.raises(ValueError, match="y"):
            class_counts(bad)
    with pytest.raises(ValueError, match="num_classes"):
        class_counts(torch.tensor([3]), num_classes=2)


def test_registry_and_loader():
    assert set(SMALL_DATASETS) == {"digits", "glyphs"}
    assert SMALL_DATASETS["glyphs"] is glyphs_few_shot
    split = load_small_data("glyphs", num_classes=3, samples_per_class=2, test_per_class=2, size=16)
    assert split.X_train.shape == (6, 1, 16, 16)
    assert torch.equal(load_small_data("digits", samples_per_class=2).X_train,
                       digits_few_shot(samples_per_class=2).X_train)
    with pytest.raises(ValueError, match="name='cifar'.*'digits', 'glyphs'"):
        load_small_data("cifar")


def test_image_split_checks_shapes():
    with pytest.raises(ValueError, match="X_train"):
        ImageSplit(torch.zeros(3, 8, 8), torch.zeros(3, dtype=torch.long), torch.zeros(1, 1, 8, 8),
                   torch.zeros(1, dtype=torch.long), 1, "bad")
    with pytest.raises(ValueError, match="X_test"):
        ImageSplit(torch.zeros(3, 1, 8, 8), torch.zeros(3, dtype=torch.long), torch.zeros(2, 1, 8, 8),
                   torch.zeros(1, dtype=torch.long), 1, "bad")


@pytest.mark.parametrize("kwargs, name", [
    ({"samples_per_class": 0}, "samples_per_class"),
    ({"samples_per_class": 2.0}, "samples_per_class"),
    ({"size": 4}, "size"),
    ({"size": 16.0}, "size"),
    ({"seed": -1}, "seed"),
    ({"seed": None}, "seed"),
])
def test_digits_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        digits_few_shot(**kwargs)
