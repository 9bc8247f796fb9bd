"""Dual contrastive GAN: loss identities in closed form, a naive-loop reference, gradient direction,
the issue-#289 argument order, R1 in closed form, the attention blocks, and messages on bad input."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.methods import dual_contrastive as dc
from labkit.methods.dual_contrastive import (GAN_LOSSES, ReferenceAttention2d, ReferenceDiscriminator,
                                             SelfAttention2d, contrastive_term, dual_contrastive_d_loss,
                                             dual_contrastive_g_loss, r1_penalty)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def naive_term(anchors, negatives):
    """-mean_i log(e^{a_i} / (e^{a_i} + sum_j e^{n_j})), with explicit exponentials (small logits only)."""
    total = 0.0
    for a in anchors.tolist():
        total -= math.log(math.exp(a) / (math.exp(a) + sum(math.exp(n) for n in negatives.tolist())))
    return total / len(anchors)


# --- losses -----------------------------------------------------------------------------------

def test_contrastive_term_matches_a_naive_loop():
    for n, m, seed in [(1, 1, 0), (5, 3, 1), (8, 8, 2)]:
        a, neg = randn(n, seed=seed), randn(m, seed=seed + 10)
        assert contrastive_term(a, neg).item() == pytest.approx(naive_term(a, neg), rel=1e-10)


def test_dual_losses_match_the_spec_equations_term_by_term():
    real, fake = randn(6, seed=3), randn(6, seed=4)
    d = naive_term(real, fake) + naive_term(-fake, -real)  # -(L^D_real + L^D_fake)
    g = naive_term(fake, real) + naive_term(-real, -fake)  # -(L^G_real + L^G_fake)
    assert dual_contrastive_d_loss(real, fake).item() == pytest.approx(d, rel=1e-10)
    assert dual_contrastive_g_loss(real, fake).item() == pytest.approx(g, rel=1e-10)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_equal_logits_give_two_log_n_plus_one(n):
    for value in (0.0, 3.5, -12.0):
        logits = torch.full((n,), value)
        for loss in (dual_contrastive_d_loss, dual_contrastive_g_loss):
            assert loss(logits, logits.clone()).item() == pytest.approx(2 * math.log(n + 1), rel=1e-5)


def test_a_common_shift_changes_nothing():
    real, fake = randn(9, seed=5), randn(9, seed=6)
    for shift in (-100.0, 0.37, 1e3):
        for loss in (dual_contrastive_d_loss, dual_contrastive_g_loss):
            assert loss(real + shift, fake + shift).item() == pytest.approx(loss(real, fake).item(), rel=1e-9)


def test_one_pair_is_twice_the_relativistic_pairing_loss():
    for seed in range(5):
        r, f = randn(1, seed=seed) * 3, randn(1, seed=seed + 50) * 3
        assert dual_contrastive_d_loss(r, f).item() == pytest.approx(2 * F.softplus(f - r).item(), rel=1e-12)
        assert dual_contrastive_g_loss(r, f).item() == pytest.approx(2 * F.softplus(r - f).item(), rel=1e-12)


def test_d_loss_falls_when_reals_rise_and_fakes_fall():
    real, fake = randn(5, seed=7).requires_grad_(), randn(5, seed=8).requires_grad_()
    dual_contrastive_d_loss(real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()
    base = dual_contrastive_d_loss(real, fake).item()
    with torch.no_grad():
        assert dual_contrastive_d_loss(real + 0.5, fake).item() < base
        assert dual_contrastive_d_loss(real, fake - 0.5).item() < base
        bumped = real.clone()
        bumped[2] += 1.0  # one real alone rising also helps D
        assert dual_contrastive_d_loss(bumped, fake).item() < base


def test_issue_289_generator_argument_order():
    real, fake = torch.tensor([2.0, 0.5, 1.0, -0.3]), torch.tensor([-1.0, 0.2, -2.5, 0.0])
    g = dual_contrastive_g_loss(real, fake)
    # The bug: G's loss computed with D's helper in D's order, i.e. G minimizing D's own objective.
    assert abs(g.item() - dual_contrastive_d_loss(real, fake).item()) > 0.5
    # The correct call: D's helper with the roles swapped is exactly G's loss.
    assert g.item() == pytest.approx(dual_contrastive_d_loss(fake, real).item(), rel=1e-12)
    # Not symmetric, so the order matters.
    assert dual_contrastive_d_loss(real, fake).item() != pytest.approx(dual_contrastive_d_loss(fake, real).item())
    # G's gradient: raising any fake logit lowers G's loss; raising a real raises it.
    fake_g, real_g = fake.clone().requires_grad_(), real.clone().requires_grad_()
    dual_contrastive_g_loss(real_g, fake_g).backward()
    assert (fake_g.grad < 0).all() and (real_g.grad > 0).all()


def test_large_logits_stay_finite():
    real = torch.tensor([1e4, -1e4, 5e3], dtype=torch.float32)
    fake = torch.tensor([-1e4, 1e4, 0.0], dtype=torch.float32)
    for loss in (dual_contrastive_d_loss, dual_contrastive_g_loss):
        value = loss(real.clone().requires_grad_(), fake)
        assert torch.isfinite(value)
        value.backward()
    # A clear win costs almost nothing, a clear loss costs about the margin.
    assert dual_contrastive_d_loss(torch.full((2,), 1e4), torch.full((2,), -1e4)).item() == pytest.approx(0.0, abs=1e-6)
    assert dual_contrastive_g_loss(torch.full((2,), 1e4), torch.full((2,), -1e4)).item() == pytest.approx(4e4, rel=1e-3)


def test_temperature_divides_the_logits():
    real, fake = randn(4, seed=9), randn(4, seed=10)
    assert dual_contrastive_d_loss(real, fake, temperature=2.0).item() == pytest.approx(
        dual_contrastive_d_loss(real / 2, fake / 2).item(), rel=1e-12)


def test_baselines_by_hand_and_the_registry():
    real, fake = torch.tensor([2.0, -0.5]), torch.tensor([0.5, -3.0])
    d_ns, g_ns = GAN_LOSSES["ns"]
    assert d_ns(real, fake).item() == pytest.approx((F.softplus(-real).mean() + F.softplus(fake).mean()).item())
    assert g_ns(real, fake).item() == pytest.approx(F.softplus(-fake).mean().item())
    assert g_ns(None, fake).item() == g_ns(real, fake).item()
    d_hinge, g_hinge = GAN_LOSSES["hinge"]
    assert d_hinge(real, fake).item() == pytest.approx((0 + 1.5) / 2 + (1.5 + 0) / 2)
    assert g_hinge(real, fake).item() == pytest.approx(1.25)
    assert GAN_LOSSES["dcl"] == (dual_contrastive_d_loss, dual_contrastive_g_loss)
    for d_loss, g_loss in GAN_LOSSES.values():  # every G loss falls as its fakes rise
        f = fake.clone().requires_grad_()
        g_loss(real, f).backward()
        assert (f.grad < 0).all()


def test_r1_is_zero_when_d_ignores_its_input_and_the_squared_weight_norm_for_a_linear_d():
    x = randn(5, 1, 3, 3, seed=11).requires_grad_()
    bias = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
    assert r1_penalty(x, bias.expand(5)).item() == 0.0
    assert r1_penalty(x, torch.zeros(5, dtype=torch.float64)).item() == 0.0
    w = randn(9, seed=12).requires_grad_()
    penalty = r1_penalty(x, x.flatten(1) @ w + 0.3)
    assert penalty.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-12)
    penalty.backward()  # create_graph=True: the penalty trains D's weights
    assert torch.allclose(w.grad, 2 * w.detach())


# --- attention --------------------------------------------------------------------------------

def set_gamma(module, value):
    with torch.no_grad():
        module.gamma.fill_(value)


def test_self_attention_is_the_identity_at_init_and_learns_gamma():
    torch.manual_seed(0)
    block = SelfAttention2d(16)
    assert block.key_channels == 2 and SelfAttention2d(4).key_channels == 1
    h = torch.randn(2, 16, 5, 4)
    assert torch.equal(block(h), h)
    beta = block.attention_map(h)
    assert beta.shape == (2, 20, 20) and torch.allclose(beta.sum(-1), torch.ones(2, 20))
    block(h).pow(2).sum().backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs().item() > 0
    set_gamma(block, 0.5)
    assert not torch.allclose(block(h), h)


def test_self_attention_matches_a_per_position_loop():
    torch.manual_seed(1)
    block = SelfAttention2d(8, key_channels=3)
    set_gamma(block, 0.8)
    h = torch.randn(1, 8, 3, 3)
    q, k, v = (m(h)[0].flatten(1) for m in (block.query, block.key, block.value))
    mixed = torch.stack([sum(torch.softmax(q[:, j] @ k, 0)[i] * v[:, i] for i in range(9)) for j in range(9)], 1)
    expected = h + 0.8 * block.out(mixed.view(1, 8, 3, 3))
    assert torch.allclose(block(h), expected, atol=1e-5)


def test_reference_attention_takes_keys_and_values_from_the_reference_only():
    torch.manual_seed(2)
    block = ReferenceAttention2d(8)
    primary, reference = torch.randn(3, 8, 4, 4), torch.randn(3, 8, 2, 3)
    assert torch.equal(block(primary, reference), primary)  # gamma = 0: the reference is ignored
    assert torch.equal(block(primary, torch.randn(3, 8, 2, 3)), primary)
    set_gamma(block, 1.0)
    y = block(primary, reference)
    assert y.shape == primary.shape
    assert not torch.allclose(y, block(primary, reference + torch.randn_like(reference)))
    beta = block.attention_map(primary, reference)
    assert beta.shape == (3, 16, 6) and torch.allclose(beta.sum(-1), torch.ones(3, 16))
    # A spatially constant reference gives identical keys: uniform attention, and a residual that
    # is the same at every primary position (the value is constant too).
    flat = torch.randn(3, 8, 1, 1).expand(3, 8, 2, 3)
    assert torch.allclose(block.attention_map(primary, flat), torch.full((3, 16, 6), 1 / 6))
    residual = block(primary, flat) - primary
    assert torch.allclose(residual, residual[:, :, :1, :1].expand_as(residual), atol=1e-6)


def test_reference_discriminator_shares_its_trunk():
    torch.manual_seed(3)
    trunk = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
    head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 1))
    disc = ReferenceDiscriminator(trunk, head, channels=8)
    primary, reference = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)
    assert disc(primary, reference).shape == (5,)
    assert disc.attention_map(primary, reference).shape == (5, 16, 16)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(disc) == count(trunk) + count(head) + count(ReferenceAttention2d(8))
    set_gamma(disc.attention, 1.0)
    primary.requires_grad_()
    logits = disc(primary, reference)
    logits.sum().backward()
    assert trunk[0].weight.grad is not None and primary.grad is not None
    # R1 on the primary stream only works through the wrapper.
    x = torch.randn(5, 1, 8, 8, requires_grad=True)
    assert r1_penalty(x, disc(x, reference)).item() > 0


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("call, name", [
    (lambda: dual_contrastive_d_loss(torch.zeros(3), torch.zeros(4)), "real_logits"),
    (lambda: dual_contrastive_g_loss(torch.zeros(3, 1), torch.zeros(3)), "real_logits"),
    (lambda: dual_contrastive_d_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long)), "fake_logits"),
    (lambda: dual_contrastive_d_loss(torch.zeros(0), torch.zeros(0)), "real_logits"),
    (lambda: dual_contrastive_d_loss([0.0], torch.zeros(1)), "real_logits"),
    (lambda: contrastive_term(torch.zeros(2), torch.zeros(())), "negative_logits"),
    (lambda: dual_contrastive_d_loss(torch.zeros(2), torch.zeros(2), temperature=0.0), "temperature"),
    (lambda: dc.nonsaturating_d_loss(None, torch.zeros(2)), "real_logits"),
    (lambda: r1_penalty(torch.zeros(2, 3), torch.zeros(2)), "real_images"),
    (lambda: r1_penalty(torch.zeros(2, 3, requires_grad=True), torch.zeros(3)), "real_logits"),
    (lambda: SelfAttention2d(0), "channels"),
    (lambda: SelfAttention2d(8, key_channels=0), "key_channels"),
    (lambda: SelfAttention2d(8)(torch.zeros(1, 4, 2, 2)), "h must be"),
    (lambda: ReferenceAttention2d(4)(torch.zeros(2, 4, 2, 2), torch.zeros(3, 4, 2, 2)), "reference_features"),
    (lambda: ReferenceAttention2d(4)(torch.zeros(2, 4, 2), torch.zeros(2, 4, 2, 2)), "primary_features"),
    (lambda: ReferenceDiscriminator(lambda x: x, nn.Flatten(), 4), "trunk"),
    (lambda: ReferenceDiscriminator(nn.Identity(), nn.Flatten(), 1)(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)),
     "head must return"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
