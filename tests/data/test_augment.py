"""labkit.data.augment.random_affine: identity at zero strength, one draw per image, determinism, range."""
import pytest
import torch

from labkit.data.augment import random_affine


def _images(n=6, size=12):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g)


def test_zero_strength_is_the_identity():
    x = _images()
    out = random_affine(x, torch.Generator().manual_seed(1), rotation_deg=0, scale=0, shift=0, noise=0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_each_image_gets_its_own_warp_and_a_generator_fixes_it():
    x = _images(n=1).repeat(2, 1, 1, 1)  # two copies of one image
    out = random_affine(x, torch.Generator().manual_seed(3), noise=0)
    assert not torch.allclose(out[0], out[1])  # different draws for the two copies
    again = random_affine(x, torch.Generator().manual_seed(3), noise=0)
    torch.testing.assert_close(out, again)


def test_output_keeps_shape_and_range():
    x = _images()
    out = random_affine(x, torch.Generator().manual_seed(2), noise=0.5)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(rotation_deg=-1), "rotation_deg=-1"), (dict(scale=0.95), "scale=0.95"),
    (dict(shift=2.0), "shift=2.0"), (dict(noise=-0.1), "noise=-0.1"),
])
def test_bad_strengths_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_affine(_images(), **kwargs)


def test_images_must_be_a_batch():
    with pytest.raises(ValueError, match=r"images must have shape \(n, c, h, w\)"):
        random_affine(torch.zeros(12, 12))
