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


# ---- Fréchet distance and k-NN precision/recall on feature vectors ----------------------------

import math  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from labkit.metrics.gan import frechet_distance, knn_precision_recall  # noqa: E402


def _features(n=400, d=8, seed=0, scale=None):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=generator, dtype=torch.float64)
    if scale is not None:
        features = features * torch.as_tensor(scale, dtype=torch.float64)
    return features


def _reference_fd(a, b, eps=1e-6):
    """FD through the symmetric form Tr((A^1/2 B A^1/2)^1/2), with eigh instead of sqrtm."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cov_a = np.cov(a, rowvar=False) + eps * np.eye(a.shape[1])
    cov_b = np.cov(b, rowvar=False) + eps * np.eye(a.shape[1])
    values, vectors = np.linalg.eigh(cov_a)
    root_a = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    diff = a.mean(0) - b.mean(0)
    return diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()


def test_fd_of_a_set_with_itself_is_zero():
    features = _features()
    assert frechet_distance(features, features) < 1e-6
    assert frechet_distance(features.float(), features.float()) < 1e-6


def test_fd_of_a_mean_shift_is_the_squared_shift_and_grows_with_it():
    features = _features()
    direction = torch.linspace(-1, 1, 8, dtype=torch.float64)
    values = []
    for size in (0.5, 1.0, 2.0, 4.0):
        shift = size * direction
        value = frechet_distance(features, features + shift)  # equal covariances
        assert value == pytest.approx(float(shift @ shift), rel=1e-6)
        values.append(value)
    assert values == sorted(values) and values[0] > 0


def test_fd_is_symmetric_and_matches_a_reference():
    a = _features(seed=0, scale=[1, 2, 3, 0.5, 1, 1, 4, 1])
    b = _features(n=300, seed=1, scale=[2, 1, 1, 1, 0.2, 3, 1, 1]) + 0.3
    forward, backward = frechet_distance(a, b), frechet_distance(b, a)
    assert forward == pytest.approx(backward, rel=1e-9)
    assert forward == pytest.approx(_reference_fd(a, b), rel=1e-6)
    assert forward > 5.0  # the variances differ a lot


def test_fd_on_rank_deficient_relu_features_is_finite_and_warning_free():
    a = torch.relu(_features(seed=0))
    a[:, :3] = 0.0  # dead units: a singular covariance without eps
    b = torch.relu(_features(seed=1))
    b[:, :3] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = frechet_distance(a, b)
        same = frechet_distance(a, a)
    assert math.isfinite(value) and value > 0 and same < 1e-6
    assert value == pytest.approx(_reference_fd(a, b), rel=1e-4, abs=1e-6)


def test_fd_of_a_diverged_set_is_infinite():
    fake = _features(seed=1)
    fake[3, 2] = float("nan")
    assert frechet_distance(_features(), fake) == math.inf


@pytest.mark.parametrize("a, b, eps, name", [
    (torch.zeros(10, 3), torch.zeros(10, 4), 1e-6, "dimension"),
    (torch.zeros(10), torch.zeros(10, 4), 1e-6, "features_a"),
    (torch.zeros(10, 4), torch.zeros(1, 4), 1e-6, "features_b"),
    (torch.zeros(10, 4), torch.zeros(10, 4), -1.0, "eps"),
    (torch.zeros(10, 4), torch.zeros(10, 4), float("nan"), "eps"),
])
def test_fd_bad_input_names_the_parameter(a, b, eps, name):
    with pytest.raises(ValueError, match=name):
        frechet_distance(a, b, eps=eps)


def _naive_precision_recall(real, fake, k):
    def radii(points):
        return [sorted(float(torch.dist(p, q)) for q in points)[k] for p in points]

    def inside(queries, points, balls):
        hits = sum(any(float(torch.dist(x, p)) <= r for p, r in zip(points, balls)) for x in queries)
        return hits / len(queries)

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def test_precision_recall_of_identical_sets_is_one():
    features = _features()
    assert knn_precision_recall(features, features.clone(), k=3) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_match_a_naive_loop_across_chunks():
    real, fake = _features(n=60, d=4, seed=0), _features(n=45, d=4, seed=1) * 1.5 + 0.4
    for k in (1, 3, 5):
        result = knn_precision_recall(real, fake, k=k, chunk_size=7)
        precision, recall = _naive_precision_recall(real, fake, k)
        assert result["precision"] == pytest.approx(precision) and result["recall"] == pytest.approx(recall)
    assert 0 < result["precision"] < 1 and 0 < result["recall"] < 1


def test_a_shifted_fake_set_loses_precision_and_recall():
    real = _features(seed=0)
    near = knn_precision_recall(real, _features(seed=1) + 0.5)
    far = knn_precision_recall(real, _features(seed=1) + 5.0)
    assert 0.3 < near["precision"] < 0.98 and 0.3 < near["recall"] < 0.98
    assert far == {"precision": 0.0, "recall": 0.0}


def test_mode_collapse_keeps_precision_and_loses_recall():
    real = _features(n=500)
    modes = real[:5].repeat(100, 1)  # the generator emits five real samples ...
    fake = modes + 1e-3 * _features(n=500, seed=2)  # ... with a little jitter
    result = knn_precision_recall(real, fake, k=3)
    assert result["precision"] == 1.0 and result["recall"] < 0.05
    half = real[real[:, 0] > 0]  # a generator that covers half the data
    covered = knn_precision_recall(real, half, k=3)
    assert covered["precision"] == 1.0 and 0.35 < covered["recall"] < 0.75


def test_non_finite_fakes_count_as_unrealistic():
    real = _features()
    fake = real.clone()
    fake[:100] = float("nan")
    result = knn_precision_recall(real, fake, k=3)
    # the 300 finite fakes still span a manifold that holds their own 300 reals and a few more
    assert result["precision"] == 0.75 and 0.75 <= result["recall"] < 1.0


@pytest.mark.parametrize("kwargs, name", [
    (dict(k=0), "k="),
    (dict(k=2.5), "k="),
    (dict(k=True), "k="),
    (dict(fake_features=torch.zeros(20, 5)), "dimension"),
    (dict(fake_features=torch.zeros(3, 4)), "fake_features"),
    (dict(real_features=torch.zeros(20)), "real_features"),
    (dict(real_features=torch.full((20, 4), float("inf"))), "real_features"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_precision_recall_bad_input_names_the_parameter(kwargs, name):
    arguments = dict(real_features=torch.zeros(20, 4), fake_features=torch.zeros(20, 4), k=3)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        knn_precision_recall(**arguments)
