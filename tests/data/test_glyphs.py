import math

import pytest
import torch

import labkit.data.glyphs as glyphs
from labkit.data import (
    MAX_STROKES,
    GlyphJitter,
    ImageSplit,
    glyph_open_set,
    glyph_prototypes,
    glyphs_few_shot,
    make_glyphs,
    render_glyphs,
)
from labkit.data.glyphs import GLYPH_RADIUS, stroke_distance, stroke_points


def dense_distance(points, strokes, num=4001):
    """Reference: distance to a densely sampled copy of each stroke."""
    samples = stroke_points(strokes, torch.linspace(0, 1, num, dtype=torch.float64))  # (m, num, 2)
    return torch.cdist(points.double()[None].expand(len(strokes), -1, -1), samples).amin(dim=2)


def test_stroke_distance_matches_a_dense_sampling_of_segments_and_arcs():
    rng = torch.Generator().manual_seed(0)
    ends = torch.rand(60, 4, generator=rng, dtype=torch.float64) * 1.6 - 0.8
    # segments, shallow and deep minor arcs, a half circle and major arcs, bulging either way
    bends = torch.tensor([0.0, 0.3, -0.3, 0.8, -0.9, 1.0, 1.5, -1.8, 0.0, 1.2] * 6, dtype=torch.float64)
    strokes = torch.cat([ends, bends[:, None]], dim=1)
    points = torch.rand(300, 2, generator=rng, dtype=torch.float64) * 2 - 1
    exact = stroke_distance(points.float(), strokes.float()).double()
    reference = dense_distance(points, strokes)
    assert exact.shape == (60, 300)
    # sampling the stroke at 4,000 points overestimates by at most half a sample spacing
    assert (exact - reference).abs().max() < 2e-3


def test_stroke_points_hit_both_ends_and_the_apex():
    strokes = torch.tensor([[-0.5, 0.0, 0.5, 0.0, 0.0], [-0.5, 0.0, 0.5, 0.0, 0.6],
                            [-0.5, 0.0, 0.5, 0.0, -1.4]])
    points = stroke_points(strokes, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(points[:, 0], strokes[:, 0:2], atol=1e-5)
    assert torch.allclose(points[:, 2], strokes[:, 2:4], atol=1e-5)
    # the middle point is the apex: sagitta = bend × half-chord along (−dy, dx) = (0, 1)
    assert torch.allclose(points[:, 1], torch.tensor([[0.0, 0.0], [0.0, 0.3], [0.0, -0.7]]), atol=1e-5)
    # and it is on the stroke
    assert stroke_distance(points[:, 1], strokes).diagonal().max() < 1e-5


def test_prototypes_layout():
    protos = glyph_prototypes(200, seed=0)
    assert protos.shape == (200, MAX_STROKES, 6) and protos.dtype == torch.float32
    present = protos[:, :, 5]
    assert set(present.unique().tolist()) == {0.0, 1.0}
    counts = present.sum(dim=1)
    assert counts.min() == 2 and counts.max() == 4 and len(counts.unique()) == 3
    # present strokes fill the first slots; unused slots are all zeros
    assert torch.equal(present, (torch.arange(MAX_STROKES) < counts[:, None]).float())
    assert (protos[present == 0] == 0).all()
    # both segments and arcs occur
    bends = protos[..., 4][present == 1]
    assert (bends == 0).any() and (bends.abs() > 0.3).any()
    # every glyph is centred and fits the circle of GLYPH_RADIUS, touching it
    points = stroke_points(protos, torch.linspace(0, 1, 129))
    radius = torch.where(present.bool()[..., None], points.norm(dim=-1), 0.0).amax(dim=(1, 2))
    assert torch.allclose(radius, torch.full((200,), GLYPH_RADIUS), atol=2e-3)  # to sampling precision


def test_prototypes_are_deterministic_and_independent_of_the_class_count():
    first = glyph_prototypes(12, seed=3)
    assert torch.equal(first, glyph_prototypes(12, seed=3))
    assert torch.equal(first, glyph_prototypes(40, seed=3)[:12])
    assert not torch.allclose(first, glyph_prototypes(12, seed=4))
    assert not torch.allclose(first, glyph_prototypes(12, seed=3, family_size=1))
    # all classes are different glyphs
    flat = glyph_prototypes(100).flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(100)).min() > 1e-3


def sibling_to_stranger_distance(family_size, num_classes=120):
    protos = glyph_prototypes(num_classes, seed=0, family_size=family_size)
    clean = render_glyphs(torch.arange(num_classes), protos, jitter=0)
    # compare at 8×8, where two nearby strokes overlap instead of missing each other by a pixel
    coarse = torch.nn.functional.avg_pool2d(clean, 4).flatten(1)
    distance = torch.cdist(coarse, coarse)
    family = torch.arange(num_classes) // 4
    same = (family[:, None] == family[None]) & ~torch.eye(num_classes, dtype=torch.bool)
    return distance[same].mean() / distance[family[:, None] != family[None]].mean()


def test_siblings_are_closer_than_strangers():
    assert sibling_to_stranger_distance(family_size=4) < 0.93
    # with unrelated classes, "siblings" (classes 4f..4f+3) are no closer than any other pair
    assert sibling_to_stranger_distance(family_size=1) > 0.97


def test_render_shapes_range_and_determinism():
    protos = glyph_prototypes(10)
    labels = torch.arange(10).repeat(3)
    images = render_glyphs(labels, protos, size=24, generator=5)
    assert images.shape == (30, 1, 24, 24) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert images.amax(dim=(1, 2, 3)).min() > 0.8  # every image has ink
    assert torch.equal(images, render_glyphs(labels, protos, size=24, generator=5))
    assert torch.equal(images, render_glyphs(labels, protos, size=24,
                                             generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(images, render_glyphs(labels, protos, size=24, generator=6))
    # jitter makes every image of a class different
    assert not torch.equal(images[0], images[10])


def test_clean_renders_ignore_the_generator_and_keep_the_background_dark():
    protos = glyph_prototypes(8)
    labels = torch.arange(8).repeat_interleave(2)
    clean = render_glyphs(labels, protos, jitter=0, generator=1)
    assert torch.equal(clean, render_glyphs(labels, protos, jitter=GlyphJitter.none(), generator=2))
    assert torch.equal(clean[0::2], clean[1::2])
    ink = (clean > 0.5).float().mean(dim=(1, 2, 3))
    assert (ink > 0.02).all() and (ink < 0.35).all()
    # the border stays empty: the glyph fits its circle, so nothing touches the frame
    assert clean[..., 0, :].max() < 0.05 and clean[..., :, -1].max() < 0.05


def test_texture_lightens_the_background():
    protos = glyph_prototypes(4)
    labels = torch.arange(4).repeat(5)
    plain = render_glyphs(labels, protos, generator=0, jitter=GlyphJitter(noise=0.0))
    textured = render_glyphs(labels, protos, generator=0, jitter=GlyphJitter(noise=0.0, texture=0.3))
    assert textured[..., 0, :].mean() > plain[..., 0, :].mean() + 0.05
    assert textured.max() <= 1


def test_rendering_does_not_depend_on_the_chunk_size(monkeypatch):
    protos = glyph_prototypes(6)
    labels = torch.arange(6).repeat(7)
    whole = render_glyphs(labels, protos, size=16, generator=2)
    monkeypatch.setattr(glyphs, "_CHUNK_ELEMENTS", 5 * MAX_STROKES * 16 * 16)  # 5 images a chunk
    assert torch.equal(whole, render_glyphs(labels, protos, size=16, generator=2))


def test_clean_templates_classify_jittered_samples_well_above_chance():
    num_classes = 40
    protos = glyph_prototypes(num_classes)
    templates = render_glyphs(torch.arange(num_classes), protos, jitter=0).flatten(1)
    X, y = make_glyphs(num_classes, 10)
    predicted = torch.cdist(X.flatten(1), templates).argmin(dim=1)
    assert (predicted == y).float().mean() > 10 / num_classes


def test_jittered_samples_are_closer_to_their_own_class_mean():
    num_classes = 30
    X, y = make_glyphs(num_classes, 20, seed=1)
    X = X.flatten(1)
    # means from the first half of each class, distances from the second half
    first = (torch.arange(len(y)) % 20) < 10
    means = torch.stack([X[first & (y == c)].mean(dim=0) for c in range(num_classes)])
    distance = torch.cdist(X[~first], means)                        # (n, classes)
    own = distance.gather(1, y[~first, None]).squeeze(1)
    others = distance.masked_fill(torch.nn.functional.one_hot(y[~first], num_classes).bool(), math.nan)
    assert own.mean() < 0.85 * others.nanmean()
    accuracy = (distance.argmin(dim=1) == y[~first]).float().mean()
    # distinguishable, but fine-grained: raw pixels do not solve it
    assert 0.3 < accuracy < 0.97


def test_make_glyphs_is_class_major_and_seeded():
    X, y = make_glyphs(5, 3, size=20, seed=2)
    assert X.shape == (15, 1, 20, 20) and y.dtype == torch.long
    assert torch.equal(y, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]))
    assert torch.equal(X, make_glyphs(5, 3, size=20, seed=2)[0])
    assert not torch.equal(X, make_glyphs(5, 3, size=20, seed=3)[0])


def test_few_shot_split_counts_and_stable_test_set():
    split = glyphs_few_shot(num_classes=6, samples_per_class=4, test_per_class=7, size=16)
    assert isinstance(split, ImageSplit) and split.num_classes == 6
    assert split.X_train.shape == (24, 1, 16, 16) and split.X_test.shape == (42, 1, 16, 16)
    assert torch.equal(torch.bincount(split.y_train), torch.full((6,), 4))
    assert torch.equal(torch.bincount(split.y_test), torch.full((6,), 7))
    assert split.train_classes == split.test_classes == tuple(range(6)) and not split.is_open_set
    again = glyphs_few_shot(num_classes=6, samples_per_class=4, test_per_class=7, size=16)
    assert torch.equal(split.X_train, again.X_train) and torch.equal(split.X_test, again.X_test)
    # train and test are independent renders
    assert not torch.equal(split.X_train[:4], split.X_test[:4])
    # a sweep over training-set sizes is scored on one test set
    larger = glyphs_few_shot(num_classes=6, samples_per_class=9, test_per_class=7, size=16)
    assert torch.equal(larger.X_test, split.X_test)
    other_seed = glyphs_few_shot(num_classes=6, samples_per_class=4, test_per_class=7, size=16, seed=1)
    assert not torch.equal(other_seed.X_test, split.X_test)


def test_open_set_classes_are_disjoint():
    split = glyph_open_set(num_train_classes=7, num_test_classes=5, samples_per_class=3, size=16)
    assert split.num_classes == 12 and split.is_open_set
    assert split.train_classes == tuple(range(7)) and split.test_classes == tuple(range(7, 12))
    assert len(split.y_train) == 21 and len(split.y_test) == 15
    assert len(glyph_open_set(7, 5, 3, size=16, test_per_class=4).y_test) == 20
    assert torch.equal(split.X_test, glyph_open_set(7, 5, 3, size=16).X_test)
    # held-out classes are the same glyphs as classes 7..11 of a closed set
    protos = glyph_prototypes(12)
    clean = glyph_open_set(7, 5, 1, size=16, jitter=0)
    assert torch.equal(clean.X_test, render_glyphs(torch.arange(7, 12), protos, size=16, jitter=0))


@pytest.mark.parametrize("call, name", [
    (lambda: glyph_prototypes(0), "num_classes"),
    (lambda: glyph_prototypes(3, seed=-1), "seed"),
    (lambda: glyph_prototypes(3, seed=1.5), "seed"),
    (lambda: glyph_prototypes(3, family_size=0), "family_size"),
    (lambda: make_glyphs(3, 0), "samples_per_class"),
    (lambda: make_glyphs(3, 2, size=4), "size"),
    (lambda: make_glyphs(3, 2, jitter=-1.0), "jitter"),
    (lambda: make_glyphs(3, 2, jitter="lots"), "jitter"),
    (lambda: make_glyphs(3, 2, jitter=10.0), "jitter"),
    (lambda: GlyphJitter(scale=1.2), "scale"),
    (lambda: GlyphJitter(noise=-0.1), "noise"),
    (lambda: render_glyphs(torch.tensor([0, 3]), glyph_prototypes(3)), "labels"),
    (lambda: render_glyphs(torch.tensor([0.0, 1.0]), glyph_prototypes(3)), "labels"),
    (lambda: render_glyphs(torch.tensor([0]), torch.zeros(3, 5)), "prototypes"),
    (lambda: glyphs_few_shot(test_per_class=0), "test_per_class"),
    (lambda: glyphs_few_shot(num_classes=-2), "num_classes"),
    (lambda: glyph_open_set(num_test_classes=0), "num_test_classes"),
    (lambda: glyph_open_set(num_train_classes=2.0), "num_train_classes"),
])
def test_bad_arguments_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
