"""Embedded datasets, each deterministic from a seed and vectorized (see ``data/README.md``)."""
from labkit.data.digits import (
    DigitsSplit,
    all_digits,
    class_balanced_batches,
    load_digits_split,
)
from labkit.data.gaussian_mixture import (
    MIXTURES,
    as_generator,
    grid_centres,
    mixture_centres,
    ring_centres,
    sample_mixture,
)

__all__ = [
    "DigitsSplit",
    "MIXTURES",
    "all_digits",
    "as_generator",
    "class_balanced_batches",
    "grid_centres",
    "load_digits_split",
    "mixture_centres",
    "ring_centres",
    "sample_mixture",
]

from labkit.data.small_data import (
    SMALL_DATASETS,
    ImageSplit,
    class_counts,
    digits_few_shot,
    load_small_data,
    stratified_indices,
    upsampled_digits,
)
from labkit.data.glyphs import (
    MAX_STROKES,
    GlyphJitter,
    glyph_open_set,
    glyph_prototypes,
    glyphs_few_shot,
    make_glyphs,
    render_glyphs,
)

__all__ += [
    "GlyphJitter",
    "ImageSplit",
    "MAX_STROKES",
    "SMALL_DATASETS",
    "class_counts",
    "digits_few_shot",
    "glyph_open_set",
    "glyph_prototypes",
    "glyphs_few_shot",
    "load_small_data",
    "make_glyphs",
    "render_glyphs",
    "stratified_indices",
    "upsampled_digits",
]

from labkit.data.scenes import (
    BUCKET_NAMES,
    CLASS_NAMES,
    SHAPES,
    SIZE_BUCKETS,
    SceneConfig,
    Scenes,
    coco_area_ranges,
    make_object_crops,
    make_scenes,
    scenes_to_coco,
    size_bucket,
    size_bucket_index,
    size_thresholds,
)

__all__ += [
    "BUCKET_NAMES",
    "CLASS_NAMES",
    "SHAPES",
    "SIZE_BUCKETS",
    "SceneConfig",
    "Scenes",
    "coco_area_ranges",
    "make_object_crops",
    "make_scenes",
    "scenes_to_coco",
    "size_bucket",
    "size_bucket_index",
    "size_thresholds",
]
from labkit.data.photos import PHOTO_FILES, PHOTO_NAMES, class_names, load_photo, photo_patches, split_boundary

__all__ += ["PHOTO_FILES", "PHOTO_NAMES", "class_names", "load_photo", "photo_patches", "split_boundary"]
from labkit.data.compositional import COLOURS as COMPOSITIONAL_COLOURS
from labkit.data.compositional import SHAPES as COMPOSITIONAL_SHAPES
from labkit.data.compositional import CompositionalScenes, make_compositional

__all__ += ["COMPOSITIONAL_COLOURS", "COMPOSITIONAL_SHAPES", "CompositionalScenes", "make_compositional"]
