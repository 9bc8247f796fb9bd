"""Scalable GAN fingerprinting: the baking identity, demodulation against a naive per-sample conv,
the fingerprint reaching every modulated layer, the same-z consistency term, BCE on logits, the
binomial detection threshold against scipy, attribution with a known code book, and bad input."""
import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from labkit.methods import fingerprints as fp
from labkit.methods.fingerprints import (FingerprintDecoder, FingerprintedGenerator, ModulatedConv2d, attribute,
                                         bake, bit_accuracy, decode_bits, detect, detection_threshold,
                                         generator_losses, hamming_distances, sample_fingerprints)
from labkit.models.toy_gan import ImageDiscriminator

D_C, LATENT = 16, 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def make_G(seed=0, randomize_biases=True, **kwargs):
    """An untrained G; with ``randomize_biases`` the zero-initialised biases (conv biases and the
    affines' biases) get random values too, so folding them is tested as well."""
    torch.manual_seed(seed)
    G = FingerprintedGenerator(D_C, LATENT, **kwargs)
    if randomize_biases:
        with torch.no_grad():
            for name, p in G.named_parameters():
                if name.endswith("bias"):
                    p.copy_(0.3 * torch.randn(p.shape))
    return G.eval()


def modulated_layers(G):
    return [layer for layer in (*G.convs, G.to_rgb) if layer.modulated]


def zero_affine(layer):
    with torch.no_grad():
        layer.affine.weight.zero_()
        layer.affine.bias.zero_()


# --- baking -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(embedding="modulation"), dict(embedding="concat"),
                                    dict(embedding="modulation", modulated_resolutions=(4,)),
                                    dict(embedding="modulation", modulated_resolutions=(16,))],
                         ids=["modulation", "concat", "mod-4-only", "mod-16-only"])
def test_baking_is_the_identity(kwargs):
    G = make_G(1, **kwargs)
    z = torch.randn(6, LATENT, generator=gen(2))
    codes = sample_fingerprints(4, D_C, gen(3))
    codes[0] = 0.0  # the all-zero and all-one codes too
    codes[1] = 1.0
    with torch.no_grad():
        for k, code in enumerate(codes):
            # both accepted shapes of c: (d_c,) and (1, d_c)
            baked = bake(G, code if k % 2 else code[None])
            assert isinstance(baked, fp.BakedGenerator) and not baked.training
            assert not list(baked.parameters()) and not any(b.requires_grad for b in baked.buffers())
            expected = G(z, code.expand(len(z), -1))
            assert (baked(z) - expected).abs().max().item() < 1e-5
    baked = bake(G, codes[2])
    weights = list(baked.buffers())
    assert len(weights) == 2 * (len(G.convs) + 2)  # stem, convs and toRGB: a weight and a bias each
    # copies, not views of G's tensors: training G further must not change a shipped model
    assert not any(w.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
                   for w in weights for p in G.parameters())


def test_a_batch_of_different_fingerprints_is_a_batch_of_baked_models():
    G = make_G(4)
    z = torch.randn(5, LATENT, generator=gen(5))
    c = sample_fingerprints(5, D_C, gen(6))
    with torch.no_grad():
        together = G(z, c)
        one_by_one = torch.cat([bake(G, c[i])(z[i:i + 1]) for i in range(len(z))])
    assert (together - one_by_one).abs().max().item() < 1e-5
    # and the fingerprint matters: a different c gives a different image from the same z
    assert (together[0] - G(z[:1], 1 - c[:1])).abs().max().item() > 1e-3


def test_baking_an_unfingerprinted_G_raises():
    G = FingerprintedGenerator(D_C, LATENT, embedding="none")
    with pytest.raises(ValueError, match="embedding='none'"):
        bake(G, torch.zeros(D_C))


def test_bake_checks_its_fingerprint():
    G = make_G(0)
    with pytest.raises(ValueError, match="c must have shape"):
        bake(G, torch.zeros(D_C + 1))
    with pytest.raises(ValueError, match="c must have shape"):
        bake(G, torch.zeros(2, D_C))  # one fingerprint per baked model
    with pytest.raises(ValueError, match="c must hold bits"):
        bake(G, torch.full((D_C,), 0.5))
    baked = bake(G, torch.zeros(D_C))
    with pytest.raises(ValueError, match=f"z must have shape \\(n, {LATENT}\\)"):
        baked(torch.zeros(3, LATENT + D_C))
    with pytest.raises(ValueError, match="z must have shape"):
        baked(torch.zeros(LATENT))


# --- modulation and demodulation -----------------------------------------------------------------

def test_demodulation_makes_every_output_channel_unit_norm():
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 6, 3, style_dim=10)
    with torch.no_grad():
        conv.affine.bias.copy_(torch.randn(8))
        for seed in range(3):
            w = torch.randn(1, 10, generator=gen(seed)) * 2
            folded = conv.folded_weight(w)
            assert folded.shape == conv.weight.shape
            norms = folded.flatten(1).norm(dim=1)
            # ||Ŵ_o||² = S / (S + 1e-8) with S the modulated weight's squared norm: 1 up to the ε
            np.testing.assert_allclose(norms.numpy(), 1.0, atol=1e-6)
            # and Eq. (2)-(3) literally
            modulated = conv.weight * conv.styles(w)[0][None, :, None, None]
            expected = modulated / (modulated.square().sum((1, 2, 3), keepdim=True) + fp.DEMOD_EPS).sqrt()
            torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-7)


def test_to_rgb_is_modulated_but_not_demodulated():
    torch.manual_seed(1)
    conv = ModulatedConv2d(8, 3, 1, style_dim=10, demodulate=False)
    w = torch.randn(1, 10, generator=gen(1)) * 2
    with torch.no_grad():
        folded = conv.folded_weight(w)
        torch.testing.assert_close(folded, conv.weight * conv.styles(w)[0][None, :, None, None])
    norms = folded.flatten(1).norm(dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-2)
    G = make_G(0)
    assert G.to_rgb.demodulate is False and all(conv.demodulate for conv in G.convs)


def naive_modulated_conv(conv, x, w):
    """Per sample: fold the sample's style into the weight and run a plain F.conv2d (a loop)."""
    outs = []
    for i in range(len(x)):
        weight = conv.folded_weight(w[i:i + 1])
        outs.append(F.conv2d(x[i:i + 1], weight, conv.bias, padding=conv.padding))
    return torch.cat(outs)


def grouped_modulated_conv(conv, x, w):
    """The fused form: one grouped conv, one weight per sample."""
    n, c_in, h, width = x.shape
    weight = torch.cat([conv.folded_weight(w[i:i + 1]) for i in range(n)])  # (n·out, in, k, k)
    y = F.conv2d(x.reshape(1, n * c_in, h, width), weight, padding=conv.padding, groups=n)
    return y.reshape(n, -1, h, width) + conv.bias[None, :, None, None]


@pytest.mark.parametrize("kernel,demodulate", [(3, True), (1, False), (3, False)])
def test_the_non_fused_forward_equals_a_per_sample_conv(kernel, demodulate):
    torch.manual_seed(2)
    conv = ModulatedConv2d(5, 4, kernel, style_dim=7, demodulate=demodulate).double()
    with torch.no_grad():
        conv.bias.copy_(torch.randn(4, dtype=torch.float64))
        conv.affine.bias.copy_(torch.randn(5, dtype=torch.float64))
        x = torch.randn(3, 5, 6, 6, generator=gen(7), dtype=torch.float64)
        w = torch.randn(3, 7, generator=gen(8), dtype=torch.float64)
        y = conv(x, w)
        torch.testing.assert_close(y, naive_modulated_conv(conv, x, w), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y, grouped_modulated_conv(conv, x, w), rtol=1e-10, atol=1e-12)


def test_an_unmodulated_conv_is_a_plain_conv():
    torch.manual_seed(3)
    conv = ModulatedConv2d(4, 4, 3, style_dim=6, modulated=False)
    assert conv.affine is None and not conv.modulated
    x = torch.randn(2, 4, 5, 5, generator=gen(1))
    with torch.no_grad():
        torch.testing.assert_close(conv(x, None), F.conv2d(x, conv.weight, conv.bias, padding=1))
        torch.testing.assert_close(conv.folded_weight(None), conv.weight)


# --- where the fingerprint goes -----------------------------------------------------------------

def test_the_fingerprint_reaches_every_modulated_layer():
    G = make_G(5)
    layers = modulated_layers(G)
    assert len(layers) == 4  # three 3×3 convs and toRGB
    z = torch.randn(4, LATENT, generator=gen(1))
    c1, c2 = sample_fingerprints(4, D_C, gen(2)), sample_fingerprints(4, D_C, gen(3))
    assert (c1 != c2).any(1).all()
    for index in range(len(layers)):
        only = copy.deepcopy(G)
        for k, layer in enumerate(modulated_layers(only)):
            if k != index:
                zero_affine(layer)  # styles all ones: c cannot act there
        with torch.no_grad():
            assert (only(z, c1) - only(z, c2)).abs().max().item() > 1e-4, f"c does not reach layer {index}"
            zero_affine(modulated_layers(only)[index])
            assert torch.equal(only(z, c1), only(z, c2)), f"c acts outside the modulated layers ({index})"


def test_zeroed_affines_give_unit_styles():
    G = make_G(6)
    for layer in modulated_layers(G):
        zero_affine(layer)
    w = G.style(sample_fingerprints(3, D_C, gen(0)))
    for layer in modulated_layers(G):
        assert torch.equal(layer.styles(w), torch.ones(3, layer.affine.out_features))


@pytest.mark.parametrize("resolutions,expected", [((4,), [True, False, False, False]),
                                                  ((8,), [False, True, False, False]),
                                                  ((16,), [False, False, True, True]),
                                                  ((16, 4), [True, False, True, True]),
                                                  ((4, 8, 16), [True, True, True, True])])
def test_modulated_resolutions_pick_the_layers(resolutions, expected):
    G = FingerprintedGenerator(D_C, LATENT, modulated_resolutions=resolutions)
    layers = [*G.convs, G.to_rgb]
    assert [layer.modulated for layer in layers] == expected
    assert [layer.affine is not None for layer in layers] == expected
    assert G.modulated_resolutions == tuple(sorted(resolutions))


def test_only_the_first_conv_is_modulated_at_4_only():
    G = make_G(7, modulated_resolutions=(4,))
    first, *others = [*G.convs, G.to_rgb]
    assert first.modulated and first.affine is not None
    assert all(layer.modulated is False and layer.affine is None for layer in others)
    z = torch.randn(3, LATENT, generator=gen(1))
    c1, c2 = sample_fingerprints(3, D_C, gen(2)), sample_fingerprints(3, D_C, gen(3))
    with torch.no_grad():
        assert (G(z, c1) - G(z, c2)).abs().max().item() > 1e-4
        zero_affine(first)
        assert torch.equal(G(z, c1), G(z, c2))


def test_concat_and_none_embeddings():
    concat = make_G(8, embedding="concat")
    assert concat.mapping is None and not any(layer.modulated for layer in (*concat.convs, concat.to_rgb))
    assert concat.stem.in_features == LATENT + D_C
    z = torch.randn(3, LATENT, generator=gen(1))
    c1, c2 = sample_fingerprints(3, D_C, gen(2)), sample_fingerprints(3, D_C, gen(3))
    with torch.no_grad():
        assert (concat(z, c1) - concat(z, c2)).abs().max().item() > 1e-4
        concat.stem.weight[:, LATENT:] = 0  # the only way in for c
        assert torch.equal(concat(z, c1), concat(z, c2))
    none = make_G(8, embedding="none")
    assert none.mapping is None and none.stem.in_features == LATENT
    with torch.no_grad():
        x = none(z)
        assert x.shape == (3, 1, 16, 16) and torch.equal(x, none(z, c1))  # c ignored


# --- the losses --------------------------------------------------------------------------------

class Recorder(torch.nn.Module):
    """Wraps G and records the (z, c) of every call and whether its output carries a graph."""

    def __init__(self, G):
        super().__init__()
        self.G, self.calls = G, []

    def forward(self, z, c):
        out = self.G(z, c)
        self.calls.append(dict(z=z, z_value=z.clone(), c=c, grad=out.requires_grad))
        return out


def loss_nets(seed=0):
    G = make_G(seed).train()
    torch.manual_seed(seed + 100)
    return G, ImageDiscriminator(1, 16, 8), FingerprintDecoder(D_C, LATENT, width=8)


def test_the_consistency_term_uses_the_same_z_and_a_different_c():
    G, D, F_net = loss_nets()
    recorder = Recorder(G)
    z = torch.randn(4, LATENT, generator=gen(1))
    c, c_prime = sample_fingerprints(4, D_C, gen(2)), sample_fingerprints(4, D_C, gen(3))
    terms = generator_losses(recorder, D, F_net, z, c, c_prime)
    assert len(recorder.calls) == 2
    first, second = recorder.calls
    assert first["z"] is z and second["z"] is z  # the same latent tensor, not a fresh draw
    assert torch.equal(first["z_value"], second["z_value"])
    assert torch.equal(first["c"], c) and torch.equal(second["c"], c_prime) and not torch.equal(c, c_prime)
    assert first["grad"] and second["grad"]  # both passes carry gradient
    assert set(terms) == {"adversarial", "latent", "fingerprint", "consistency", "total"}
    assert all(v.ndim == 0 for v in terms.values())


def test_the_consistency_gradient_flows_through_both_passes():
    G, D, F_net = loss_nets(1)
    z = torch.randn(4, LATENT, generator=gen(1))
    c, c_prime = sample_fingerprints(4, D_C, gen(2)), sample_fingerprints(4, D_C, gen(3))
    params = [p for p in G.parameters()]

    def grads(loss):
        return torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)

    term = generator_losses(G, D, F_net, z, c, c_prime)["consistency"]
    got = grads(term)
    assert any(g is not None and g.abs().sum() > 0 for g in got)
    both = grads((G(z, c) - G(z, c_prime)).square().mean())
    first_only = grads((G(z, c) - G(z, c_prime).detach()).square().mean())
    for g, ref in zip(got, both):
        if ref is None:
            assert g is None or g.abs().sum() == 0
        else:
            torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-7)
    # a detached second pass would give another gradient (the mapping's, e.g.): the check has teeth
    differs = [(a - b).abs().max().item() for a, b in zip(both, first_only) if a is not None and b is not None]
    assert max(differs) > 1e-6


def test_the_consistency_term_is_zero_for_the_same_fingerprint():
    G, D, F_net = loss_nets(2)
    z = torch.randn(3, LATENT, generator=gen(1))
    c = sample_fingerprints(3, D_C, gen(2))
    terms = generator_losses(G, D, F_net, z, c, c.clone())
    assert terms["consistency"].item() == 0.0


def test_the_terms_and_their_weights():
    G, D, F_net = loss_nets(3)
    z = torch.randn(4, LATENT, generator=gen(1))
    c, c_prime = sample_fingerprints(4, D_C, gen(2)), sample_fingerprints(4, D_C, gen(3))
    terms = generator_losses(G, D, F_net, z, c, c_prime)
    with torch.no_grad():
        x = G(z, c)
        z_hat, logits = F_net(x)
        # BCE on the decoder's logits with {0, 1} targets
        assert terms["fingerprint"].item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, c).item(),
                                                            rel=1e-6)
        manual = -(c * F.logsigmoid(logits) + (1 - c) * F.logsigmoid(-logits)).mean()
        assert terms["fingerprint"].item() == pytest.approx(manual.item(), rel=1e-5)
        assert terms["adversarial"].item() == pytest.approx(F.softplus(-D(x)).mean().item(), rel=1e-6)
        assert terms["latent"].item() == pytest.approx((z - z_hat).square().mean().item(), rel=1e-6)
        assert terms["consistency"].item() == pytest.approx((x - G(z, c_prime)).square().mean().item(), rel=1e-6)
    w = fp.LOSS_WEIGHTS
    assert w == {"adversarial": 1.0, "latent": 1.0, "fingerprint": 2.0, "consistency": 2.0}
    expected = sum(w[k] * terms[k].item() for k in w)
    assert terms["total"].item() == pytest.approx(expected, rel=1e-6)
    # partial weights override only the named terms; a zero consistency weight drops its pass
    recorder = Recorder(G)
    dropped = generator_losses(recorder, D, F_net, z, c, c_prime, {"consistency": 0.0, "latent": 0.5})
    assert len(recorder.calls) == 1 and "consistency" not in dropped
    assert dropped["total"].item() == pytest.approx(
        dropped["adversarial"].item() + 0.5 * dropped["latent"].item() + 2 * dropped["fingerprint"].item(), rel=1e-6)


def test_an_unfingerprinted_G_has_only_the_adversarial_term():
    G = make_G(0, embedding="none").train()
    D = ImageDiscriminator(1, 16, 8)
    terms = generator_losses(G, D, None, torch.randn(3, LATENT, generator=gen(0)), None, None)
    assert set(terms) == {"adversarial", "total"} and terms["total"].item() == terms["adversarial"].item()


def test_an_unknown_weight_name_raises():
    G, D, F_net = loss_nets()
    z, c = torch.randn(2, LATENT), sample_fingerprints(2, D_C)
    with pytest.raises(ValueError, match="unknown terms.*'consistancy'.*consistency"):
        generator_losses(G, D, F_net, z, c, c, {"consistancy": 1.0})


def test_discriminator_loss_in_closed_form():
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.0])
    expected = np.mean(np.log1p(np.exp([-3.0, 0.0]))) + np.mean(np.log1p(np.exp([-2.0, 1.0, -0.5])))
    assert fp.discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)


# --- decoding, detection, attribution ------------------------------------------------------------

def test_decode_bits_thresholds_logits_at_zero():
    logits = torch.tensor([[0.1, -0.1, 0.3, -0.3, 0.4, 0.0, 7.0, -7.0]])
    assert torch.sigmoid(torch.tensor(0.3)) > 0.5  # a logit of 0.3 is a "1" (a probability cut at 0.5 would say 0)
    assert decode_bits(logits).tolist() == [[1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]]
    assert decode_bits(logits).dtype == torch.float32
    c = torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]])
    assert bit_accuracy(logits, c).tolist() == [0.75]


@pytest.mark.parametrize("d,alpha,num_models", list(itertools.product((8, 12, 16, 32, 64, 128),
                                                                     (0.05, 0.01, 1e-3), (1, 100))))
def test_the_detection_threshold_matches_scipy(d, alpha, num_models):
    level = alpha / num_models
    candidates = [m for m in range(d + 1) if stats.binom.sf(m - 1, d, 0.5) <= level]
    if not candidates:
        with pytest.raises(ValueError, match=f"fingerprint_dim={d} is too short"):
            detection_threshold(d, alpha, num_models)
        return
    m = detection_threshold(d, alpha, num_models)
    assert m == min(candidates)
    assert stats.binom.sf(m - 1, d, 0.5) <= level < stats.binom.sf(m - 2, d, 0.5)


def test_the_detection_threshold_at_the_chapters_setting():
    assert detection_threshold(16, 0.01) == 14  # P(≥ 14 of 16) = 137 / 2^16 ≈ 0.0021; P(≥ 13) ≈ 0.0106
    assert detection_threshold(16, 0.01, num_models=100) == 16
    assert detection_threshold(128, 0.01) == 78
    with pytest.raises(ValueError, match="fingerprint_dim=4 is too short"):
        detection_threshold(4, 0.01)
    with pytest.raises(ValueError, match="fingerprint_dim"):
        detection_threshold(16, 0.01, num_models=10 ** 6)


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.1, True, "0.01", None])
def test_a_bad_alpha_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        detection_threshold(16, alpha)


def test_bad_threshold_arguments_raise():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="fingerprint_dim"):
            detection_threshold(bad, 0.01)
        with pytest.raises(ValueError, match="num_models"):
            detection_threshold(16, 0.01, num_models=bad)


def flipped(code, positions):
    out = code.clone()
    out[list(positions)] = 1 - out[list(positions)]
    return out


def logits_for(bits, scale=3.0):
    """Logits that decode to ``bits``, of uneven sizes (a decoder is never equally sure of every bit)."""
    sizes = torch.linspace(0.05, scale, bits.shape[-1])
    return (2 * bits - 1) * sizes


def test_detect_on_constructed_logits():
    code = sample_fingerprints(1, 16, gen(0))[0]
    rows = torch.stack([flipped(code, range(k)) for k in range(5)])  # 0 to 4 wrong bits
    logits = logits_for(rows)
    c = code.expand(5, -1)
    assert detect(logits, c).tolist() == [True, True, True, False, False]  # m* = 14 of 16
    assert detect(logits, c, num_models=100).tolist() == [True, False, False, False, False]  # m* = 16
    assert detect(logits, c, alpha=0.05).tolist() == [True] * 5  # m* = 12: four wrong bits still pass
    # a fingerprint with no relation to the image: about half the bits match, never detected
    assert not detect(logits_for(code[None]), 1 - code[None]).item()


def test_detect_at_alpha_005_uses_its_own_threshold():
    m = detection_threshold(16, 0.05)
    assert m == 12  # P(≥ 12) ≈ 0.038, P(≥ 11) ≈ 0.105
    code = torch.zeros(16)
    rows = torch.stack([flipped(code, range(k)) for k in range(6)])
    assert detect(logits_for(rows), code.expand(6, -1), alpha=0.05).tolist() == [True] * 5 + [False]


def spread_codebook(k, d, min_distance, seed=0):
    rng = gen(seed)
    while True:
        book = sample_fingerprints(k, d, rng)
        distances = hamming_distances(book, book) + d * torch.eye(k, dtype=torch.long)
        if distances.min() >= min_distance:
            return book


def test_attribution_with_a_known_codebook():
    book = spread_codebook(12, 32, min_distance=7)
    rng = np.random.default_rng(0)
    rows, owners = [], []
    for k, code in enumerate(book):
        for flips in (0, 1, 3):  # at most 3 of ≥ 7: still nearest to the own code
            rows.append(flipped(code, rng.choice(32, flips, replace=False).tolist()))
            owners.append(k)
    predicted = attribute(logits_for(torch.stack(rows)), book)
    assert predicted.tolist() == owners
    assert predicted.dtype == torch.long


def test_attribution_ties_go_to_the_lowest_index():
    book = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]])
    bits = torch.tensor([[0.0, 0, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1]])
    # distances: [4, 2, 2, 1] -> 3; [2, 2, 2, 3] -> 0; [1, 3, 1, 2] -> 0
    assert hamming_distances(bits, book).tolist() == [[4, 2, 2, 1], [2, 2, 2, 3], [1, 3, 1, 2]]
    assert attribute(logits_for(bits), book).tolist() == [3, 0, 0]
    tie_late = torch.tensor([[1.0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0]])
    assert attribute(logits_for(torch.tensor([[0.0, 0, 0, 0]])), tie_late).tolist() == [1]
    duplicated = torch.cat([book[1:2], book, book[1:2]])  # the same code registered twice
    assert attribute(logits_for(book[1:2]), duplicated).tolist() == [0]
    many = torch.zeros(200, 8)  # a long row of equal distances
    assert attribute(logits_for(torch.ones(3, 8)), many).tolist() == [0, 0, 0]


def test_hamming_distances_match_numpy():
    rng = np.random.default_rng(3)
    bits, book = rng.integers(0, 2, (7, 20)), rng.integers(0, 2, (5, 20))
    expected = (bits[:, None, :] != book[None, :, :]).sum(2)
    got = hamming_distances(torch.tensor(bits, dtype=torch.float32), torch.tensor(book, dtype=torch.float32))
    np.testing.assert_array_equal(got.numpy(), expected)
    assert got.shape == (7, 5)


def test_hamming_distances_check_their_inputs():
    with pytest.raises(ValueError, match="codebook"):
        hamming_distances(torch.zeros(2, 4), torch.full((3, 4), 2.0))
    with pytest.raises(ValueError, match="codebook must have shape \\(n, 4\\)"):
        hamming_distances(torch.zeros(2, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="bits must hold bits"):
        hamming_distances(torch.full((2, 4), 0.5), torch.zeros(3, 4))


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "16", None])
def test_a_bad_fingerprint_dim_raises(bad):
    with pytest.raises(ValueError, match="fingerprint_dim"):
        FingerprintedGenerator(bad)
    with pytest.raises(ValueError, match="fingerprint_dim"):
        FingerprintDecoder(bad, LATENT)
    with pytest.raises(ValueError, match="fingerprint_dim"):
        sample_fingerprints(3, bad)


def test_a_bad_embedding_lists_the_choices():
    with pytest.raises(ValueError, match="embedding='fused'.*'modulation', 'concat', 'none'"):
        FingerprintedGenerator(D_C, embedding="fused")


@pytest.mark.parametrize("bad", [(), (5,), (4, 32), 4, "4", None])
def test_bad_modulated_resolutions_raise(bad):
    with pytest.raises(ValueError, match="modulated_resolutions"):
        FingerprintedGenerator(D_C, modulated_resolutions=bad)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_other_bad_sizes_raise(bad):
    for name in ("latent_dim", "width", "channels"):
        with pytest.raises(ValueError, match=name):
            FingerprintedGenerator(D_C, **{name: bad})
    with pytest.raises(ValueError, match="n="):
        sample_fingerprints(bad, D_C)


def test_a_fingerprint_of_the_wrong_shape_raises():
    G = make_G(0)
    z = torch.zeros(3, LATENT)
    for bad in (torch.zeros(3, D_C - 1), torch.zeros(3, D_C + 1), torch.zeros(D_C), torch.zeros(3, D_C, 1),
                torch.zeros(0, D_C), [[0.0] * D_C] * 3, None):
        with pytest.raises(ValueError, match=f"c must have shape \\(n, {D_C}\\)"):
            G(z, bad)
    with pytest.raises(ValueError, match="c has 2 rows but z has 3"):
        G(z, torch.zeros(2, D_C))


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, float("nan"), 1e-3])
def test_a_fingerprint_outside_the_bits_raises(value):
    G = make_G(0)
    c = torch.zeros(3, D_C)
    c[1, 4] = value
    with pytest.raises(ValueError, match="c must hold bits"):
        G(torch.zeros(3, LATENT), c)
    with pytest.raises(ValueError, match="c must hold bits"):
        bit_accuracy(torch.zeros(3, D_C), c)
    with pytest.raises(ValueError, match="c must hold bits"):
        detect(torch.zeros(3, D_C), c)


def test_integer_and_boolean_bits_are_accepted():
    G = make_G(0)
    z = torch.randn(2, LATENT, generator=gen(0))
    c = sample_fingerprints(2, D_C, gen(1))
    with torch.no_grad():
        reference = G(z, c)
        assert torch.equal(G(z, c.long()), reference) and torch.equal(G(z, c.bool()), reference)


def test_z_of_the_wrong_shape_raises():
    G = make_G(0)
    c = torch.zeros(3, D_C)
    for bad in (torch.zeros(3, LATENT + 1), torch.zeros(LATENT), torch.zeros(3, LATENT, 1), [[0.0] * LATENT] * 3):
        with pytest.raises(ValueError, match=f"z must have shape \\(n, {LATENT}\\)"):
            G(bad, c)
    none = make_G(0, embedding="none")
    with pytest.raises(ValueError, match="z must have shape"):
        none(torch.zeros(3, LATENT - 1))


def test_sample_fingerprints_are_bits_and_seeded():
    a = sample_fingerprints(500, 16, gen(4))
    assert a.shape == (500, 16) and a.dtype == torch.float32 and ((a == 0) | (a == 1)).all()
    assert torch.equal(a, sample_fingerprints(500, 16, gen(4)))
    assert 0.45 < a.mean().item() < 0.55
    assert fp.check_fingerprints(a, 16) is not None
