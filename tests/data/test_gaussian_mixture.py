import math

import pytest
import torch

from labkit.data import MIXTURES, grid_centres, mixture_centres, ring_centres, sample_mixture


def test_ring_centres_lie_on_the_circle_and_average_to_the_origin():
    centres = ring_centres(8, radius=2.0)
    assert centres.shape == (8, 2) and centres.dtype == torch.float32
    assert torch.allclose(centres.norm(dim=1), torch.full((8,), 2.0))
    assert centres.mean(dim=0).abs().max() < 1e-6
    assert torch.allclose(centres[0], torch.tensor([2.0, 0.0]))
    # evenly spaced: neighbouring centres are one chord apart
    chord = 2 * 2.0 * math.sin(math.pi / 8)
    gaps = (centres - centres.roll(1, dims=0)).norm(dim=1)
    assert torch.allclose(gaps, torch.full((8,), chord), atol=1e-5)


def test_grid_centres_are_a_centred_lattice():
    centres = grid_centres(side=5, spacing=2.0)
    assert centres.shape == (25, 2)
    assert centres.mean(dim=0).abs().max() < 1e-6
    assert set(centres[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert len({tuple(c) for c in centres.tolist()}) == 25


def test_mixture_centres_match_the_registry():
    for kind in MIXTURES:
        assert torch.equal(mixture_centres(kind), MIXTURES[kind]())


def test_same_seed_same_samples_and_different_seed_different():
    first = sample_mixture(500, "ring", generator=3)
    assert torch.equal(first, sample_mixture(500, "ring", generator=3))
    assert torch.equal(first, sample_mixture(500, "ring", generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(first, sample_mixture(500, "ring", generator=4))
    assert torch.equal(sample_mixture(50), sample_mixture(50))  # no seed still repeats


def test_sampling_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample_mixture(100, generator=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("kind", ["ring", "grid"])
def test_samples_sit_near_their_modes_and_are_centred(kind):
    std = 0.02
    samples = sample_mixture(20_000, kind, std=std, generator=0)
    assert samples.shape == (20_000, 2) and samples.dtype == torch.float32
    nearest = torch.cdist(samples, mixture_centres(kind)).min(dim=1).values
    assert nearest.max() < 6 * std
    assert nearest.mean() > 0.5 * std  # noise was actually added
    assert samples.mean(dim=0).abs().max() < 0.1
    counts = torch.cdist(samples, mixture_centres(kind)).argmin(dim=1).bincount()
    assert len(counts) == len(mixture_centres(kind)) and counts.min() > 0


@pytest.mark.parametrize("call, name", [
    (lambda: sample_mixture(0), "num_samples"),
    (lambda: sample_mixture(2.5), "num_samples"),
    (lambda: sample_mixture(10, kind="spiral"), "kind"),
    (lambda: sample_mixture(10, std=0.0), "std"),
    (lambda: sample_mixture(10, std=-1.0), "std"),
    (lambda: sample_mixture(10, std=float("nan")), "std"),
    (lambda: sample_mixture(10, generator="seed"), "generator"),
    (lambda: ring_centres(0), "num_modes"),
    (lambda: ring_centres(8, radius=0.0), "radius"),
    (lambda: grid_centres(0), "side"),
    (lambda: grid_centres(5, spacing=-2.0), "spacing"),
    (lambda: mixture_centres("spiral"), "kind"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
