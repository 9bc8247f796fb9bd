import os
import socket

import numpy as np
import pytest
import torch

from labkit.data import photos
from labkit.data.photos import (
    PHOTO_FILES,
    PHOTO_NAMES,
    class_names,
    load_photo,
    photo_patches,
    split_boundary,
)


def test_photo_names_are_known_pngs_shipped_in_the_wheel():
    import skimage.data

    assert 12 <= len(PHOTO_NAMES) <= 16 and len(set(PHOTO_NAMES)) == len(PHOTO_NAMES)
    for name, file in PHOTO_FILES.items():
        assert file.endswith(".png"), name
        path = os.path.join(skimage.data.data_dir, file)
        assert os.path.isfile(path), path
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n", name  # PNG signature, not a JPEG
    assert set(PHOTO_NAMES) <= set(PHOTO_FILES)
    assert not {"rocket", "retina", "hubble_deep_field"} & set(PHOTO_FILES)


def test_every_photo_loads_with_the_network_off(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a photo tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    photos._photo_tensor.cache_clear()  # decode every file now, not from an earlier test's cache
    for name in PHOTO_FILES:
        photo = load_photo(name)
        assert photo.ndim == 3 and photo.shape[0] == 3 and photo.dtype == torch.float32, name
        assert photo.min() >= 0.0 and photo.max() <= 1.0, name
        assert photo.std() > 0.01, name


def test_load_photo_matches_scikit_image_loaders():
    import skimage.data
    from skimage.color import rgba2rgb

    camera = load_photo("camera")  # gray: repeated to 3 channels
    assert torch.equal(camera[0], camera[2])
    assert np.allclose(camera[0].numpy(), skimage.data.camera() / 255.0, atol=1e-6)
    assert np.allclose(load_photo("coffee").permute(1, 2, 0).numpy(), skimage.data.coffee() / 255.0,
                       atol=1e-6)
    assert np.allclose(load_photo("clock")[0].numpy(), skimage.data.clock() / 255.0, atol=1e-6)
    # RGBA is composited over white, as rgba2rgb does
    assert np.allclose(load_photo("logo").permute(1, 2, 0).numpy(), rgba2rgb(skimage.data.logo()),
                       atol=1e-5)
    horse = load_photo("horse")
    assert horse.shape == (3, 328, 400)
    assert ((horse == 0) | (horse == 1)).float().mean() > 0.95  # a silhouette with soft edges


def test_load_photo_returns_copies():
    photo = load_photo("moon")
    photo.fill_(-1.0)
    assert load_photo("moon").min() >= 0.0


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"name='rocket'.*'astronaut'"):
        load_photo("rocket")
    with pytest.raises(ValueError, match="repeats"):
        class_names(("moon", "moon"))
    with pytest.raises(ValueError, match="sequence of photo names"):
        photo_patches(2, names="moon")


def test_class_names():
    assert class_names() == PHOTO_NAMES
    assert class_names(["text", "moon"]) == ("text", "moon")


@pytest.mark.parametrize("split", ["train", "test"])
def test_patches_shapes_range_and_balance(split):
    X, y = photo_patches(5, patch_size=48, split=split)
    n = 5 * len(PHOTO_NAMES)
    assert X.shape == (n, 3, 48, 48) and X.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.long
    assert X.min() >= 0.0 and X.max() <= 1.0
    assert torch.bincount(y).tolist() == [5] * len(PHOTO_NAMES)


def test_patches_are_crops_of_their_photo_at_the_offsets():
    X, y, offsets = photo_patches(3, patch_size=32, split="test", names=("coins", "chelsea"),
                                  return_offsets=True)
    assert offsets.shape == (6, 3) and torch.equal(offsets[:, 0], y)
    names = ("coins", "chelsea")
    for crop, (index, top, left) in zip(X, offsets.tolist()):
        assert torch.equal(crop, load_photo(names[index])[:, top:top + 32, left:left + 32])


def test_patches_are_deterministic_and_depend_on_the_seed():
    a = photo_patches(4, seed=3)
    b = photo_patches(4, seed=3)
    c = photo_patches(4, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("train_fraction", [0.7, 0.5])
def test_train_and_test_regions_do_not_overlap(train_fraction):
    p = 40
    _, _, train = photo_patches(60, patch_size=p, split="train", train_fraction=train_fraction,
                                return_offsets=True)
    _, _, test = photo_patches(60, patch_size=p, split="test", train_fraction=train_fraction,
                               return_offsets=True)
    for index, name in enumerate(PHOTO_NAMES):
        height, width = load_photo(name).shape[1:]
        boundary = split_boundary(name, train_fraction)
        assert boundary == int(np.floor(train_fraction * width))
        tr, te = train[train[:, 0] == index], test[test[:, 0] == index]
        assert (tr[:, 2] >= 0).all() and (tr[:, 2] + p <= boundary).all(), name
        assert (te[:, 2] >= boundary).all() and (te[:, 2] + p <= width).all(), name
        for offsets in (tr, te):
            assert (offsets[:, 1] >= 0).all() and (offsets[:, 1] + p <= height).all(), name
        # the samples spread over the region rather than sticking to one corner
        assert tr[:, 2].unique().numel() > 10 and te[:, 2].unique().numel() > 10, name


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="split='val'.*'train', 'test'"):
        photo_patches(2, split="val")
    with pytest.raises(ValueError, match="num_per_class"):
        photo_patches(0)
    with pytest.raises(ValueError, match="patch_size"):
        photo_patches(2, patch_size=-3)
    # text is 448 px wide: its test region at 0.7 is 135 px
    with pytest.raises(ValueError, match=r"patch_size=160 does not fit the test region of photo 'text'"):
        photo_patches(2, patch_size=160, split="test", names=("text",))
    with pytest.raises(ValueError, match="train_fraction"):
        photo_patches(2, train_fraction=1.0)
    with pytest.raises(ValueError, match="seed"):
        photo_patches(2, seed=-1)
    with pytest.raises(ValueError, match="names is empty"):
        photo_patches(2, names=())
