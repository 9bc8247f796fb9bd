import math

import numpy as np
import pytest
import torch

from labkit.data import (
    BUCKET_NAMES,
    CLASS_NAMES,
    SIZE_BUCKETS,
    SceneConfig,
    Scenes,
    coco_area_ranges,
    make_object_crops,
    make_scenes,
    scenes_to_coco,
    size_bucket,
    size_bucket_index,
)
from labkit.data.scenes import SHAPES, shape_area


@pytest.fixture(scope="module")
def scenes300():
    return make_scenes(300, seed=3)


def test_size_buckets_are_coco_fractions():
    assert tuple(SIZE_BUCKETS) == BUCKET_NAMES == ("small", "medium", "large")
    assert SIZE_BUCKETS["small"][1] == pytest.approx(1024 / 307200)
    assert SIZE_BUCKETS["medium"][1] == pytest.approx(9216 / 307200)
    ranges = coco_area_ranges(128)
    assert list(ranges) == ["all", "small", "medium", "large"]
    assert ranges["small"] == pytest.approx([0, 128 * 128 / 300])
    assert ranges["medium"] == pytest.approx([128 * 128 / 300, 0.03 * 128 * 128])
    assert ranges["large"][0] == ranges["medium"][1] and ranges["all"] == [0, 1e10]
    # at COCO's own image area the thresholds are 32² and 96²
    assert coco_area_ranges((480, 640))["medium"] == pytest.approx([1024, 9216])
    assert size_bucket(1023, 307200) == "small"
    assert size_bucket(1024, 307200) == "medium"
    assert size_bucket(9216, 307200) == "large"
    assert size_bucket_index(torch.tensor([1023.0, 1024, 9215, 9216]), 307200).tolist() == [0, 1, 1, 2]


def test_shape_distances_are_signed_and_shapes_fit_the_unit_circle():
    axis = torch.linspace(-1.5, 1.5, 301)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    outside_circle = torch.hypot(x, y) > 1.001
    areas = {}
    for name, sdf in SHAPES.items():
        d = sdf(x, y)
        assert not (d[outside_circle] < 0).any(), name
        assert (d < 0).any(), name
        areas[name] = shape_area(name)
    assert areas["circle"] == pytest.approx(math.pi, rel=0.01)
    assert areas["square"] == pytest.approx(2.0, rel=0.01)
    assert areas["bar"] < 0.25 * areas["circle"]  # the thin class
    assert len(CLASS_NAMES) >= 6 and set(CLASS_NAMES) == set(SHAPES)


def test_determinism_and_index_independence():
    a = make_scenes(6, seed=1)
    b = make_scenes(6, seed=1)
    assert torch.equal(a.images, b.images)
    for name in ("boxes", "labels", "masks", "areas"):
        assert all(torch.equal(x, y) for x, y in zip(getattr(a, name), getattr(b, name)))
    longer = make_scenes(9, seed=1)
    assert torch.equal(longer.images[:6], a.images)
    assert all(torch.equal(x, y) for x, y in zip(longer.boxes[:6], a.boxes))
    tail = make_scenes(3, seed=1, start=6)
    assert torch.equal(tail.images, longer.images[6:]) and tail.start == 6
    assert all(torch.equal(x, y) for x, y in zip(tail.masks, longer.masks[6:]))
    other = make_scenes(6, seed=2)
    assert not torch.equal(other.images, a.images)


def test_shapes_ranges_and_types(scenes300):
    s = scenes300
    assert isinstance(s, Scenes) and len(s) == 300
    assert s.images.shape == (300, 3, 128, 128) and s.images.dtype == torch.float32
    assert s.images.min() >= 0 and s.images.max() <= 1
    assert s.instance_maps.shape == (300, 128, 128) and s.instance_maps.dtype == torch.uint8
    for boxes, labels, masks, areas in zip(s.boxes, s.labels, s.masks, s.areas):
        m = len(labels)
        assert 1 <= m <= 6
        assert boxes.shape == (m, 4) and boxes.dtype == torch.float32
        assert labels.dtype == torch.long and labels.min() >= 0 and labels.max() < len(CLASS_NAMES)
        assert masks.shape == (m, 128, 128) and masks.dtype == torch.bool
        assert areas.shape == (m,)


def test_boxes_are_tight_around_the_visible_masks(scenes300):
    s = scenes300
    for i in range(0, 300, 7):
        boxes, masks = s.boxes[i], s.masks[i]
        assert (masks.sum(0) <= 1).all()  # visible masks are disjoint
        for j, (box, mask) in enumerate(zip(boxes, masks)):
            rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
            expected = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float()
            assert torch.equal(box, expected)
            assert s.areas[i][j] == mask.sum()
            assert torch.equal(s.instance_maps[i] == j + 1, mask)
        assert (boxes >= 0).all() and (boxes[:, 2:] <= 128).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_objects_are_drawn_on_their_masks():
    """Turning the clutter and noise off, an object's interior pixels differ from the background."""
    config = SceneConfig(clutter=0.0, noise=0.0, texture=0.0, contrast=(0.3, 0.4))
    s = make_scenes(20, config, seed=5)
    for image, masks, instance_map in zip(s.images, s.masks, s.instance_maps):
        background = image[:, instance_map == 0].mean(1)
        for mask in masks:
            colour = image[:, mask].mean(1)
            assert (colour - background).abs().max() > 0.05


def test_size_mix_on_300_images(scenes300):
    areas = torch.cat(scenes300.areas)
    fractions = torch.bincount(size_bucket_index(areas, 128 * 128), minlength=3).float() / len(areas)
    expected = torch.tensor(SceneConfig().size_mix)
    assert len(areas) > 800
    assert (fractions - expected).abs().max() < 0.07, fractions
    # another mix moves the fractions
    s = make_scenes(150, SceneConfig(size_mix=(0.0, 0.0, 1.0)), seed=3)
    large = size_bucket_index(torch.cat(s.areas), 128 * 128)
    assert (large == 2).float().mean() > 0.9


def test_zipf_class_frequencies(scenes300):
    counts = torch.bincount(torch.cat(scenes300.labels), minlength=len(CLASS_NAMES)).float()
    frequencies = counts / counts.sum()
    expected = SceneConfig().class_probabilities().float()
    assert (frequencies - expected).abs().max() < 0.04
    assert frequencies[0] > frequencies[1] > frequencies[2] > frequencies[4]
    assert frequencies[:4].sum() > frequencies[4:].sum() * 2
    # the last class (the thin bar) is present but rare
    assert CLASS_NAMES[-1] == "bar"
    assert 0.015 < frequencies[-1] < 0.08
    uniform = make_scenes(150, SceneConfig(zipf_alpha=0.0), seed=3)
    counts = torch.bincount(torch.cat(uniform.labels), minlength=len(CLASS_NAMES)).float()
    assert counts.min() > 0.5 * counts.max()


def test_scenes_are_not_trivially_separable_from_the_background(scenes300):
    # clutter and texture: the background has plenty of high-frequency energy off the objects
    images, maps = scenes300.images[:50], scenes300.instance_maps[:50]
    dx = (images[..., 1:] - images[..., :-1]).abs().mean(1)
    background = (maps[:, :, 1:] == 0) & (maps[:, :, :-1] == 0)
    assert dx[background].mean() > 0.03


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_coco_dict_round_trips_through_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from pycocotools import mask as mask_utils

    s = make_scenes(12, seed=4)
    d = scenes_to_coco(s)
    coco = COCO()
    coco.dataset = d
    coco.createIndex()
    assert sorted(coco.getImgIds()) == list(range(1, 13))
    assert len(coco.getAnnIds()) == s.num_objects
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASS_NAMES)
    for i in (0, 5, 11):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[i + 1]))
        assert len(anns) == len(s.labels[i])
        for ann, box, label, mask in zip(anns, s.boxes[i], s.labels[i], s.masks[i]):
            x1, y1, x2, y2 = box.tolist()
            assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
            assert ann["category_id"] == int(label) + 1 and ann["iscrowd"] == 0
            assert ann["area"] == float(mask.sum())
            assert np.array_equal(coco.annToMask(ann).astype(bool), mask.numpy())
            assert mask_utils.area(ann["segmentation"]) == mask.sum()
    # perfect detections score AP 1 with our size ranges
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 1.0} for a in d["annotations"]]
    evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
    ranges = coco_area_ranges(128)
    evaluator.params.areaRng, evaluator.params.areaRngLbl = list(ranges.values()), list(ranges)
    evaluator.evaluate(), evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    assert precision[precision > -1].min() == pytest.approx(1.0)
    assert "segmentation" not in scenes_to_coco(s, include_masks=False)["annotations"][0]


def test_object_crops():
    X, y = make_object_crops(40, seed=2)
    assert X.shape == (40, 3, 48, 48) and X.dtype == torch.float32
    assert X.min() >= 0 and X.max() <= 1
    assert torch.equal(y, torch.arange(40) % len(CLASS_NAMES))
    X2, y2 = make_object_crops(10, SceneConfig(classes=("circle", "bar")), seed=2, size=32)
    assert X2.shape == (10, 3, 32, 32) and set(y2.tolist()) == {0, 1}
    again, _ = make_object_crops(20, seed=2)
    assert torch.equal(again, X[:20])
    assert not torch.equal(make_object_crops(5, seed=3)[0], X[:5])
    # the object is centred: clean crops differ from their background in the middle, not the corners
    clean = SceneConfig(clutter=0.0, noise=0.0, texture=0.0, contrast=(0.3, 0.4))
    X3, _ = make_object_crops(16, clean, seed=2)
    centre = (X3[..., 22:26, 22:26] - X3[..., :3, :3].mean((2, 3), keepdim=True)).abs().amax((1, 2, 3))
    ring_classes = torch.arange(16) % len(CLASS_NAMES) == CLASS_NAMES.index("ring")  # hollow centre
    assert (centre[~ring_classes] > 0.1).float().mean() >= 0.9 and centre[~ring_classes].mean() > 0.25


@pytest.mark.parametrize("kwargs, name", [
    (dict(image_size=32), "image_size"),
    (dict(image_size=1024), "image_size"),
    (dict(min_objects=0), "min_objects"),
    (dict(min_objects=4, max_objects=3), "min_objects"),
    (dict(max_objects=100), "max_objects"),
    (dict(classes=("circle",)), "classes"),
    (dict(classes=("circle", "blob")), "classes"),
    (dict(classes=["circle", "bar"]), "classes"),
    (dict(zipf_alpha=-1.0), "zipf_alpha"),
    (dict(size_mix=(0.5, 0.5)), "size_mix"),
    (dict(size_mix=(0.0, 0.0, 0.0)), "size_mix"),
    (dict(contrast=(0.5, 0.1)), "contrast"),
    (dict(clutter=-1.0), "clutter"),
    (dict(noise=float("nan")), "noise"),
    (dict(min_visible=1.5), "min_visible"),
])
def test_bad_config_raises_naming_the_field(kwargs, name):
    with pytest.raises(ValueError, match=f"config.{name}="):
        SceneConfig(**kwargs)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_images"):
        make_scenes(0)
    with pytest.raises(ValueError, match="seed"):
        make_scenes(2, seed=-1)
    with pytest.raises(ValueError, match="start"):
        make_scenes(2, start=-3)
    with pytest.raises(ValueError, match="config"):
        make_scenes(2, config={"image_size": 128})
    with pytest.raises(ValueError, match="size"):
        make_object_crops(2, size=8)
    with pytest.raises(ValueError, match="num_images"):
        make_object_crops(1.5)
    with pytest.raises(ValueError, match="scenes"):
        scenes_to_coco({"images": []})
    with pytest.raises(ValueError, match="image_area"):
        size_bucket(10, 0)
    with pytest.raises(ValueError, match="image_size"):
        coco_area_ranges("big")
