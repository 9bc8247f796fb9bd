"""Knowledge evolution: mask blocks, re-initialisation, slim extraction equal to the dense net."""
import math

import pytest
import torch
from torch import nn

from labkit.methods import knowledge_evolution as ke
from labkit.models import BACKBONES, ResNetSmall, make_backbone


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def model(name="resnet", multiplier=1.0, seed=0, **kwargs):
    torch.manual_seed(seed)
    return make_backbone(name, num_classes=10, in_channels=kwargs.pop("in_channels", 1),
                         width_multiplier=multiplier, **kwargs)


def test_split_layers_are_in_forward_order():
    names = [name for name, _ in ke.split_layers(model("resnet"))]
    assert names[0] == "stem.0" and names[-1] == "classifier"
    assert "stages.1.downsample.0" in names and len(names) == 10
    assert [name for name, _ in ke.split_layers(model("plain"))] == [
        "blocks.0.0", "blocks.1.0", "blocks.2.0", "classifier"]


@pytest.mark.parametrize("split_rate", [0.5, 0.3, 0.75])
def test_kels_masks_cover_every_layer_with_the_right_shapes(split_rate):
    net = model("resnet")
    masks = ke.kels_masks(net, split_rate)
    params = dict(net.named_parameters())
    expected = {f"{name}.weight" for name, _ in ke.split_layers(net)} | {"classifier.bias"}
    assert set(masks) == expected  # no BatchNorm parameter is ever masked
    for key, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[key].shape


def test_kels_block_by_hand():
    mask = ke.kels_masks(model("resnet"), 0.3)["stages.2.conv1.weight"]  # (128, 64, 3, 3)
    keep_out, keep_in = math.ceil(0.3 * 128), math.ceil(0.3 * 64)  # 39, 20
    expected = torch.zeros(128, 64, 3, 3, dtype=torch.bool)
    for o in range(128):
        for i in range(64):
            if o < keep_out and i < keep_in:
                expected[o, i] = True
    assert torch.equal(mask, expected)
    assert mask.sum().item() == 39 * 20 * 9


def test_kels_first_conv_and_classifier_exceptions():
    masks = ke.kels_masks(model("plain", in_channels=3), 0.5)
    stem = masks["blocks.0.0.weight"]  # (32, 3, 3, 3)
    assert stem[:16].all() and not stem[16:].any()  # every image channel of the first 16 filters
    classifier = masks["classifier.weight"]  # (10, 128)
    assert classifier[:, :64].all() and not classifier[:, 64:].any()  # every class row, first inputs
    assert masks["classifier.bias"].all()


def test_kels_bias_of_a_hidden_layer_keeps_its_first_outputs():
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 6, 3, bias=True), nn.Flatten(), nn.Linear(6, 3))
    masks = ke.kels_masks(net, 0.5)
    assert masks["1.bias"].tolist() == [True] * 3 + [False] * 3
    assert masks["0.weight"].shape == (8, 1, 3, 3) and masks["0.weight"][:4].all()


def test_wels_fraction_and_determinism():
    net = model("resnet")
    masks = ke.wels_masks(net, 0.3, generator(1))
    big = masks["stages.2.conv2.weight"]  # 147,456 entries
    assert big.float().mean().item() == pytest.approx(0.3, abs=0.01)
    again = ke.wels_masks(net, 0.3, generator(1))
    assert all(torch.equal(masks[key], again[key]) for key in masks)
    other = ke.wels_masks(net, 0.3, generator(2))
    assert not torch.equal(masks["stages.2.conv2.weight"], other["stages.2.conv2.weight"])
    assert torch.equal(ke.split_masks(net, "wels", 0.3, 1)["stem.0.weight"], masks["stem.0.weight"])


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, 0.0, 1.0])
def test_bad_split_rate_names_it_and_the_open_interval(bad):
    net = model("plain")
    for call in (lambda: ke.kels_masks(net, bad), lambda: ke.wels_masks(net, bad),
                 lambda: ke.slim_width(10, bad), lambda: ke.check_split_rate(bad)):
        with pytest.raises(ValueError, match=r"split_rate.*\(0, 1\)"):
            call()


def test_unknown_kind_and_distribution_list_the_valid_values():
    net = model("plain")
    with pytest.raises(ValueError, match="kind='kel'.*'kels', 'wels'"):
        ke.split_masks(net, "kel", 0.5)
    with pytest.raises(ValueError, match="distribution='uniform'.*'default', 'normal', 'zeros'"):
        ke.reinitialize_reset(net, ke.kels_masks(net, 0.5), "uniform")


def test_mask_on_a_batchnorm_parameter_is_refused():
    net = model("plain")
    with pytest.raises(ValueError, match="BatchNorm"):
        ke.reinitialize_reset(net, {"blocks.0.1.weight": torch.ones(32, dtype=torch.bool)})


def randomize_batchnorm(net, seed=0):
    """Non-trivial BN: random affine parameters and running statistics from a few train passes."""
    g = generator(seed)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 1, 16, 16, generator=g) * 2 + 0.5)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return net


def batchnorm_state(net):
    return {k: v.clone() for k, v in net.state_dict().items()
            if any(k.startswith(n + ".") for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d))}


@pytest.mark.parametrize("distribution", sorted(ke.RESET_DISTRIBUTIONS))
@pytest.mark.parametrize("kind", sorted(ke.MASK_KINDS))
def test_reinitialize_keeps_fit_and_batchnorm_and_changes_reset(distribution, kind):
    net = randomize_batchnorm(model("resnet"))
    masks = ke.split_masks(net, kind, 0.5, generator(3))
    before = {k: v.clone() for k, v in net.named_parameters()}
    bn_before = batchnorm_state(net)
    # 9 BNs (stem, 2 per block, 2 downsample) × weight, bias, running mean/var, num_batches_tracked
    assert len(bn_before) == 9 * 5
    ke.reinitialize_reset(net, masks, distribution, generator(4))
    params = dict(net.named_parameters())
    for key, mask in masks.items():
        assert torch.equal(params[key][mask], before[key][mask])  # fit: bit-identical
        reset = params[key][~mask]
        if distribution == "zeros":
            assert torch.equal(reset, torch.zeros_like(reset))
        elif reset.numel() > 1:
            assert (reset != before[key][~mask]).all()
    for key, value in batchnorm_state(net).items():
        assert torch.equal(value, bn_before[key])


def test_reinitialize_is_deterministic_from_the_generator():
    first, second = model("plain", seed=0), model("plain", seed=0)
    masks = ke.kels_masks(first, 0.5)
    ke.reinitialize_reset(first, masks, generator=generator(5))
    ke.reinitialize_reset(second, masks, generator=generator(5))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))


def test_default_distribution_matches_kaiming_uniform_sqrt5():
    layer = nn.Conv2d(128, 256, 3, bias=True)  # fan_in 1152
    net = nn.Sequential(nn.Conv2d(1, 128, 1), layer)
    nn.init.zeros_(layer.weight)
    masks = {"1.weight": torch.zeros_like(layer.weight, dtype=torch.bool),
             "1.bias": torch.zeros_like(layer.bias, dtype=torch.bool)}
    ke.reinitialize_reset(net, masks, "default", generator(6))
    bound = 1 / math.sqrt(128 * 9)
    assert layer.weight.abs().max().item() <= bound
    assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)  # uniform std
    assert layer.bias.abs().max().item() <= bound
    ke.reinitialize_reset(net, masks, "normal", generator(6))  # the generation-1 init is wider
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / 1152), rel=0.01)


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("split_rate", [0.5, 0.3])
def test_slim_logits_equal_dense_logits_when_reset_weights_are_zero(name, split_rate):
    dense = randomize_batchnorm(model(name, seed=1))
    ke.reinitialize_reset(dense, ke.kels_masks(dense, split_rate), "zeros")
    dense.eval()
    slim = ke.extract_slim(dense, model(name, split_rate, seed=2), split_rate).eval()
    x = torch.randn(5, 1, 16, 16, generator=generator(7))
    with torch.no_grad():
        dense_logits, slim_logits = dense(x), slim(x)
    assert dense_logits.abs().max() > 0.1  # a non-trivial comparison
    assert torch.allclose(slim_logits, dense_logits, atol=1e-5)


def test_slim_differs_when_reset_weights_are_not_zero():
    dense = randomize_batchnorm(model("resnet", seed=1)).eval()
    slim = ke.extract_slim(dense, model("resnet", 0.5), 0.5).eval()
    x = torch.randn(5, 1, 16, 16, generator=generator(7))
    assert not torch.allclose(slim(x), dense(x), atol=1e-3)


def test_extract_slim_copies_the_leading_slices():
    dense = randomize_batchnorm(model("resnet", seed=1))
    slim = ke.extract_slim(dense, model("resnet", 0.5), 0.5)
    assert torch.equal(slim.stem[0].weight, dense.stem[0].weight[:16])  # all input channels
    assert torch.equal(slim.stages[2].downsample[0].weight, dense.stages[2].downsample[0].weight[:64, :32])
    assert torch.equal(slim.stages[1].bn2.running_var, dense.stages[1].bn2.running_var[:32])
    assert torch.equal(slim.classifier.weight, dense.classifier.weight[:, :64])
    assert torch.equal(slim.classifier.bias, dense.classifier.bias)


def test_extract_slim_rejects_a_mismatched_slim_model():
    dense = model("resnet")
    with pytest.raises(ValueError, match="split_rate=0.5 implies"):
        ke.extract_slim(dense, model("resnet", 0.25), 0.5)
    with pytest.raises(ValueError, match="split_rate=0.5 implies"):
        ke.extract_slim(dense, ResNetSmall(10, in_channels=3, width_multiplier=0.5), 0.5)
    with pytest.raises(ValueError, match="PlainCNN"):
        ke.extract_slim(dense, model("plain", 0.5), 0.5)


def test_fit_and_reset_magnitudes_and_kernel_magnitude():
    weight = torch.ones(8, 6, 3, 3)
    weight[:4, :3] = 2.0
    assert ke.mean_abs_weight_blocks(weight, 0.5) == {"fit": 2.0, "reset": 1.0}
    weight = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2) - 5
    magnitude = ke.kernel_magnitude(weight)
    assert magnitude.shape == (2, 3)
    assert magnitude[1, 2].item() == pytest.approx(weight[1, 2].abs().mean().item())
    with pytest.raises(ValueError, match="C_o"):
        ke.kernel_magnitude(torch.ones(3))
