import pytest
import torch

from labkit.data import grid_centres, ring_centres, sample_mixture
from labkit.metrics import mode_quality


def test_samples_exactly_at_the_centres_cover_every_mode():
    centres = ring_centres()
    samples = centres.repeat(20, 1)  # 20 per mode
    result = mode_quality(samples, centres, std=0.02)
    assert result == {"modes_covered": 8, "high_quality_fraction": 1.0, "per_mode_counts": [20] * 8}


def test_samples_far_from_every_centre_cover_nothing():
    samples = torch.full((500, 2), 50.0)
    result = mode_quality(samples, ring_centres(), std=0.02)
    assert result == {"modes_covered": 0, "high_quality_fraction": 0.0, "per_mode_counts": [0] * 8}


def test_coverage_threshold_is_inclusive_and_respected():
    centres = ring_centres()
    counts = torch.tensor([20, 19, 0, 25, 1, 20, 0, 0])
    samples = centres.repeat_interleave(counts, dim=0)
    result = mode_quality(samples, centres, std=0.02)
    assert result["per_mode_counts"] == counts.tolist()
    assert result["modes_covered"] == 3
    assert mode_quality(samples, centres, std=0.02, min_samples_per_mode=1)["modes_covered"] == 5
    assert mode_quality(samples, centres, std=0.02, min_samples_per_mode=21)["modes_covered"] == 1


def test_quality_radius_is_quality_sigmas_times_std():
    centres = ring_centres()
    inside = centres[:1] + torch.tensor([[0.0, 0.059]])  # 2.95 sigma
    outside = centres[:1] + torch.tensor([[0.0, 0.061]])  # 3.05 sigma
    result = mode_quality(torch.cat([inside, outside]), centres, std=0.02, min_samples_per_mode=1)
    assert result["high_quality_fraction"] == 0.5 and result["per_mode_counts"][0] == 1
    wider = mode_quality(torch.cat([inside, outside]), centres, std=0.02, quality_sigmas=4.0)
    assert wider["high_quality_fraction"] == 1.0


def test_collapsed_generator_covers_one_mode():
    centres = ring_centres()
    samples = centres[2] + 0.01 * torch.randn(2500, 2, generator=torch.Generator().manual_seed(0))
    result = mode_quality(samples, centres, std=0.02)
    assert result["modes_covered"] == 1 and result["per_mode_counts"][2] > 2400


@pytest.mark.parametrize("kind, centres", [("ring", ring_centres()), ("grid", grid_centres())])
def test_real_data_covers_every_mode(kind, centres):
    result = mode_quality(sample_mixture(2500, kind, std=0.02, generator=0), centres, std=0.02)
    assert result["modes_covered"] == len(centres)
    assert result["high_quality_fraction"] > 0.98


def test_diverged_samples_count_as_low_quality():
    centres = ring_centres()
    samples = torch.cat([centres.repeat(20, 1), torch.full((160, 2), float("nan"))])
    result = mode_quality(samples, centres, std=0.02)
    assert result["modes_covered"] == 8 and result["high_quality_fraction"] == 0.5


@pytest.mark.parametrize("kwargs, name", [
    (dict(samples=torch.zeros(0, 2)), "samples"),
    (dict(samples=torch.zeros(5)), "samples"),
    (dict(samples=torch.zeros(5, 3)), "dimension"),
    (dict(centres=torch.zeros(0, 2)), "centres"),
    (dict(std=0.0), "std"),
    (dict(std=float("nan")), "std"),
    (dict(quality_sigmas=-1.0), "quality_sigmas"),
    (dict(min_samples_per_mode=0), "min_samples_per_mode"),
    (dict(min_samples_per_mode=2.5), "min_samples_per_mode"),
])
def test_bad_input_names_the_parameter(kwargs, name):
    arguments = dict(samples=torch.zeros(5, 2), centres=ring_centres(), std=0.02)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        mode_quality(**arguments)
