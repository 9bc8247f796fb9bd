"""NT-Xent (labkit.losses.contrastive) against a hand computation and on its bad input."""
import math

import pytest
import torch

from labkit.losses.contrastive import nt_xent


def test_nt_xent_matches_a_hand_computation_for_two_images():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    # anchor 0 (z1[0]): positive z2[0] (cos 1), others z1[1] (cos 0) and z2[1] (cos 0); by symmetry all 4 anchors agree
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * math.exp(0.0)))
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(expected, rel=1e-6)


def test_nt_xent_rows_are_normalised_and_matching_views_score_lower():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    aligned = nt_xent(z, 3.0 * z)  # scale does not matter: rows are normalised
    assert float(aligned) == pytest.approx(float(nt_xent(z, z)), rel=1e-6)
    shuffled = nt_xent(z, z[torch.randperm(16)])
    assert float(aligned) < float(shuffled)


@pytest.mark.parametrize("z1, z2, tau, match", [
    (torch.zeros(4, 3), torch.zeros(4, 2), 0.5, "same shape|both have shape"),
    (torch.zeros(1, 3), torch.zeros(1, 3), 0.5, "at least 2 images"),
    (torch.ones(4, 3), torch.ones(4, 3), 0.0, "temperature=0.0"),
    (torch.ones(4, 3), torch.ones(4, 3), float("nan"), "temperature=nan"),
])
def test_nt_xent_bad_input(z1, z2, tau, match):
    with pytest.raises(ValueError, match=match):
        nt_xent(z1, z2, tau)
