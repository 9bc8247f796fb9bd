
import numpy as np
import pytest
import torch
from scipy import ndimage

from labkit import data
from labkit.data.compositional import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    CompositionalScenes,
    make_compositional,
    max_objects_for,
)

EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def scenes():
    return make_compositional(300, seed=4)


def _foreground(scenes: CompositionalScenes) -> np.ndarray:
    """(n, S, S) bool: pixels that differ from the image's background grey."""
    difference = (scenes.images - scenes.backgrounds[:, None, None, None]).abs().amax(1)
    return (difference > 0).numpy()


def _num_blobs(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=EIGHT_NEIGHBOURS)[1]


def test_registries():
    assert SHAPES == ("circle", "square", "triangle")
    assert list(COLOURS) == ["red", "green", "blue"]
    for rgb in COLOURS.values():
        assert len(rgb) == 3 and all(0 <= v <= 1 for v in rgb)
    assert set(BACKGROUNDS) == {"dark", "light", "mixed"}
    assert data.COMPOSITIONAL_SHAPES is SHAPES and data.COMPOSITIONAL_COLOURS is COLOURS  # package exports


def test_shapes_dtypes_and_ranges(scenes):
    n = 300
    assert isinstance(scenes, CompositionalScenes) and len(scenes) == n
    assert scenes.images.shape == (n, 3, 32, 32) and scenes.images.dtype == torch.float32
    assert scenes.images.min() >= 0 and scenes.images.max() <= 1
    assert scenes.counts.shape == (n,) and scenes.counts.dtype == torch.long
    assert scenes.shapes.shape == scenes.colours.shape == (n, 3)
    assert scenes.shapes.dtype == scenes.colours.dtype == torch.long
    assert scenes.object_shapes.shape == scenes.object_colours.shape == scenes.radii.shape == (n, 4)
    assert scenes.centres.shape == (n, 4, 2)
    assert torch.all(scenes.backgrounds == BACKGROUNDS["dark"][0])


def test_counts_in_range_and_all_counts_occur(scenes):
    assert scenes.counts.min() >= 2 and scenes.counts.max() <= 4
    assert set(scenes.counts.tolist()) == {2, 3, 4}


def test_presence_counts_sum_to_counts_and_match_objects(scenes):
    assert torch.equal(scenes.shapes.sum(1), scenes.counts)
    assert torch.equal(scenes.colours.sum(1), scenes.counts)
    used = torch.arange(4)[None] < scenes.counts[:, None]
    assert torch.all((scenes.object_shapes >= 0) == used) and torch.all((scenes.object_colours >= 0) == used)
    assert torch.all(scenes.radii.isnan() == ~used) and torch.all(scenes.centres.isnan().all(2) == ~used)
    for k in range(3):
        assert torch.equal(scenes.shapes[:, k], (scenes.object_shapes == k).sum(1))
        assert torch.equal(scenes.colours[:, k], (scenes.object_colours == k).sum(1))


def test_every_shape_and_colour_is_common(scenes):
    # uniform draws: each of the ~900 objects is a given shape / colour with probability 1/3
    total = scenes.counts.sum().item()
    for presence in (scenes.shapes, scenes.colours):
        fractions = presence.sum(0).float() / total
        assert torch.all((fractions > 0.25) & (fractions < 0.42)), fractions


def test_connected_components_equal_counts(scenes):
    # objects never overlap or touch, so 8-connected foreground blobs are the objects
    foreground = _foreground(scenes)
    blobs = np.array([_num_blobs(mask) for mask in foreground])
    np.testing.assert_array_equal(blobs, scenes.counts.numpy())


def test_objects_stay_inside_and_apart(scenes):
    used = ~scenes.radii.isnan()
    centres, radii = scenes.centres.nan_to_num(-100.0), scenes.radii.nan_to_num(0.0)
    assert torch.all((centres - radii[..., None] >= 0.5 - 1e-4)[used])
    assert torch.all((centres + radii[..., None] <= 31.5 + 1e-4)[used])
    distance = torch.cdist(centres, centres)  # (n, M, M)
    pair = used[:, :, None] & used[:, None, :] & ~torch.eye(4, dtype=torch.bool)
    clearance = (distance - radii[:, :, None] - radii[:, None, :])[pair]
    assert clearance.min() >= 2.5 - 1e-4
    assert radii[used].min() >= 2.5 - 1e-4 and radii[used].max() <= 4.5 * 1.3 + 1e-4


def test_object_colours_are_drawn(scenes):
    # a pixel at the centre of each object has exactly its colour (full coverage)
    used = (scenes.object_shapes >= 0).nonzero()
    palette = torch.tensor(list(COLOURS.values()))
    for i, k in used[:50].tolist():
        x, y = scenes.centres[i, k].long().tolist()
        expected = palette[scenes.object_colours[i, k]]
        assert torch.allclose(scenes.images[i, :, y, x], expected, atol=1e-6)


def test_deterministic_and_image_j_depends_only_on_seed_and_j():
    a, b = make_compositional(10, seed=7), make_compositional(20, seed=7)
    assert torch.equal(a.images, b.images[:10])
    for name in ("counts", "shapes", "colours", "object_shapes", "object_colours"):
        assert torch.equal(getattr(a, name), getattr(b, name)[:10]), name
    assert torch.equal(a.centres.nan_to_num(), b.centres[:10].nan_to_num())
    assert torch.equal(make_compositional(10, seed=7).images, a.images)
    assert not torch.equal(make_compositional(10, seed=8).images, a.images)


@pytest.mark.parametrize("background", ["light", "mixed"])
def test_backgrounds(background):
    scenes = make_compositional(40, seed=1, background=background)
    assert sorted(set(scenes.backgrounds.tolist())) == pytest.approx(sorted(BACKGROUNDS[background]))
    corner = scenes.images[:, :, 0, 0]  # objects keep off the corner pixel
    assert torch.allclose(corner, scenes.backgrounds[:, None].expand(-1, 3))


@pytest.mark.parametrize("image_size, min_objects, max_objects", [(16, 1, 4), (24, 6, 6), (48, 3, 5)])
def test_other_sizes_and_counts(image_size, min_objects, max_objects):
    scenes = make_compositional(60, image_size=image_size, seed=2, min_objects=min_objects,
                                max_objects=max_objects)
    assert scenes.images.shape == (60, 3, image_size, image_size)
    assert scenes.counts.min() >= min_objects and scenes.counts.max() <= max_objects
    blobs = [_num_blobs(mask) for mask in _foreground(scenes)]
    assert blobs == scenes.counts.tolist()


def test_max_objects_for():
    assert [max_objects_for(s) for s in (16, 20, 24, 32, 128)] == [4, 5, 6, 6, 6]


@pytest.mark.parametrize("kwargs, message", [
    ({"num_images": 0}, "num_images=0"),
    ({"num_images": 2.5}, "num_images=2.5"),
    ({"image_size": 8}, "image_size=8 is not valid; it must be an int >= 16"),
    ({"seed": -1}, "seed=-1"),
    ({"min_objects": 0}, "min_objects=0"),
    ({"min_objects": 3, "max_objects": 2}, "max_objects=2 is not valid; it must be >= min_objects=3"),
    ({"max_objects": 7}, "at most 6 objects"),
    ({"image_size": 16, "max_objects": 5}, "at most 4 objects"),
    ({"background": "white"}, "background='white' is not valid; choose one of: 'dark', 'light', 'mixed'"),
])
def test_bad_arguments(kwargs, message):
    arguments = {"num_images": 4, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_compositional(**arguments)
