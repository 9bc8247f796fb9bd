"""SVMax: the bounds in closed form, a NumPy reference, gradient direction, and messages on bad input."""
import math

import numpy as np
import pytest
import torch

from labkit.methods import svmax


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_collapsed_batch_reaches_the_lower_bound():
    for b, d in [(150, 16), (40, 8), (16, 16), (144, 128)]:
        E = svmax.collapsed_batch(b, d, generator(b + d))
        assert abs(svmax.mean_singular_value(E).item() - svmax.lower_bound(b, d)) < 1e-6


def test_stacked_orthonormal_bases_reach_the_upper_bound():
    for k, d in [(1, 8), (3, 16), (10, 16), (2, 64)]:
        E = svmax.orthonormal_stack(k, d, generator(k * d))
        assert E.shape == (k * d, d)
        assert torch.allclose(E.norm(dim=1), torch.ones(k * d, dtype=E.dtype))
        assert abs(svmax.mean_singular_value(E).item() - svmax.upper_bound(k * d, d)) < 1e-6


def test_truncated_isotropic_batch_is_close_to_but_below_the_upper_bound():
    b, d = 150, 16  # 150 = 9 * 16 + 6: the tenth basis is partial
    s_mu = svmax.mean_singular_value(svmax.isotropic_batch(b, d)).item()
    upper = svmax.upper_bound(b, d)
    assert s_mu < upper - 1e-6
    assert s_mu > svmax.lower_bound(b, d) + 0.9 * (upper - svmax.lower_bound(b, d))


def test_random_unit_rows_lie_between_the_bounds():
    for b, d in [(16, 16), (40, 8), (150, 16), (160, 32), (144, 128), (500, 3)]:
        for seed in range(3):
            s_mu = svmax.mean_singular_value(svmax.random_unit_batch(b, d, generator(seed))).item()
            assert svmax.lower_bound(b, d) - 1e-9 <= s_mu <= svmax.upper_bound(b, d) + 1e-9


# The spec's outcome 1 is an invariant of the math, so it is checked here rather than claimed.
SPEC_SIZES = [(150, 16), (144, 128), (40, 2), (64, 64), (300, 32)]


@pytest.mark.parametrize("b, d", SPEC_SIZES)
def test_bounds_hold_in_float64(b, d):
    """L <= s_mu <= U for random unit rows; a collapsed batch gives L and stacked bases U (|error| < 1e-6)."""
    lower, upper = svmax.lower_bound(b, d), svmax.upper_bound(b, d)
    for seed in range(20):
        E = svmax.random_unit_batch(b, d, generator(seed))
        assert E.dtype == torch.float64
        assert lower - 1e-12 <= svmax.mean_singular_value(E).item() <= upper + 1e-12
    collapsed = svmax.collapsed_batch(b, d, generator(b))
    assert collapsed.dtype == torch.float64
    assert abs(svmax.mean_singular_value(collapsed).item() - lower) < 1e-6
    if b % d == 0:
        stack = svmax.orthonormal_stack(b // d, d, generator(d))
        assert stack.dtype == torch.float64
        assert abs(svmax.mean_singular_value(stack).item() - upper) < 1e-6


def test_mean_singular_value_matches_numpy_svd():
    rng = np.random.default_rng(0)
    for b, d in [(20, 5), (7, 7), (64, 16)]:
        X = rng.normal(size=(b, d))  # not normalized: the definition does not need unit rows
        reference = np.linalg.svd(X, compute_uv=False).sum() / d
        assert svmax.mean_singular_value(torch.from_numpy(X)).item() == pytest.approx(reference, rel=1e-12)


def test_bounds_of_the_spec_example():
    assert round(svmax.lower_bound(144, 128), 5) == 0.09375
    assert round(svmax.upper_bound(144, 128), 4) == 1.0607
    assert svmax.upper_bound(150, 16) == pytest.approx(math.sqrt(150 / 16))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bounds_reject_non_positive_integers(bad):
    with pytest.raises(ValueError, match="b must be a positive integer"):
        svmax.lower_bound(bad, 4)
    with pytest.raises(ValueError, match="d must be a positive integer"):
        svmax.upper_bound(4, bad)


def test_bounded_form_is_lambda_e_at_collapse_and_lambda_at_isotropy():
    b, d, lam = 64, 16, 0.7
    collapsed = svmax.svmax_bounded(svmax.collapsed_batch(b, d), lam)
    isotropic = svmax.svmax_bounded(svmax.orthonormal_stack(4, d), lam)
    assert collapsed.item() == pytest.approx(lam * math.e, abs=1e-6)
    assert isotropic.item() == pytest.approx(lam * 1.0, abs=1e-6)


def test_plain_form_subtracts_the_mean_singular_value():
    E = svmax.random_unit_batch(50, 10)
    assert svmax.svmax_plain(E, 2.0).item() == pytest.approx(-2.0 * svmax.mean_singular_value(E).item())


def test_normalized_spread_is_zero_at_collapse_and_one_at_isotropy():
    assert svmax.normalized_spread(svmax.collapsed_batch(48, 16)).item() == pytest.approx(0.0, abs=1e-6)
    assert svmax.normalized_spread(svmax.orthonormal_stack(3, 16)).item() == pytest.approx(1.0, abs=1e-6)


def near_collapsed_unit_batch(b=60, d=12, noise=0.05):
    E = svmax.collapsed_batch(b, d, generator(1))
    E = E + noise * torch.randn(b, d, generator=generator(2), dtype=E.dtype)
    return torch.nn.functional.normalize(E, dim=1)


@pytest.mark.parametrize("form", ["bounded", "plain"])
def test_a_gradient_step_on_the_penalty_spreads_the_batch(form):
    E = near_collapsed_unit_batch().requires_grad_(True)
    before = svmax.mean_singular_value(E.detach()).item()
    svmax.svmax_penalty(E, 1.0, form).backward()
    stepped = torch.nn.functional.normalize(E.detach() - 0.5 * E.grad, dim=1)  # back onto the sphere
    assert svmax.mean_singular_value(stepped).item() > before + 1e-3


@pytest.mark.parametrize("batch", ["isotropic", "collapsed"])
def test_gradient_is_finite_where_singular_values_repeat(batch):
    E = svmax.orthonormal_stack(4, 8) if batch == "isotropic" else svmax.collapsed_batch(32, 8)
    E.requires_grad_(True)
    svmax.svmax_bounded(E, 1.0).backward()
    assert torch.isfinite(E.grad).all()


def test_fewer_rows_than_columns_is_refused_with_b_and_d_in_the_message():
    E = svmax.random_unit_batch(6, 10)
    with pytest.raises(ValueError, match=r"b=6 .*d=10.*b >= d"):
        svmax.mean_singular_value(E)
    with pytest.raises(ValueError, match=r"b=6 .*d=10"):
        svmax.svmax_bounded(E, 1.0)


def test_fewer_rows_allowed_warns_and_divides_by_d():
    E = svmax.random_unit_batch(6, 10)
    with pytest.warns(UserWarning, match="bounds .*do not hold"):
        s_mu = svmax.mean_singular_value(E, allow_fewer_rows=True)
    reference = np.linalg.svd(E.numpy(), compute_uv=False).sum() / 10
    assert s_mu.item() == pytest.approx(reference, rel=1e-12)
    # The b >= d upper bound sqrt(b/d) used by the paper is out of reach: at most b/d.
    assert s_mu.item() <= 6 / 10 + 1e-9 < math.sqrt(6 / 10)
    with pytest.warns(UserWarning):
        svmax.svmax_penalty(E, 1.0, "bounded", allow_fewer_rows=True)


def test_unknown_form_lists_the_valid_forms():
    with pytest.raises(ValueError, match=r"form='exp' is not valid.*'bounded'.*'plain'"):
        svmax.svmax_penalty(svmax.random_unit_batch(20, 4), 1.0, "exp")


def test_check_normalized_rejects_rows_off_the_sphere():
    E = svmax.random_unit_batch(20, 4)
    svmax.svmax_bounded(E, 1.0, check_normalized=True)  # unit rows pass
    with pytest.raises(ValueError, match="L2-normalized"):
        svmax.svmax_bounded(2 * E, 1.0, check_normalized=True)


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"shape \(b, d\)"):
        svmax.mean_singular_value(torch.ones(3, 4, 5))
    with pytest.raises(ValueError, match="lam"):
        svmax.svmax_bounded(svmax.random_unit_batch(20, 4), -1.0)
    with pytest.raises(ValueError, match="L == U"):
        svmax.normalized_spread(svmax.random_unit_batch(20, 1))
