"""Knowledge evolution (KELS) on unmodified torchvision ResNets (random weights, nothing
downloaded): resnet18 (BasicBlock) and resnet50 (Bottleneck, strided 1×1 downsample paths).
Issue 18. Masks and resets needed no change; ``slim_copy`` builds the slim net of any model."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50, resnext50_32x4d

from labkit.methods import knowledge_evolution as ke
from labkit.models import make_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

RESNETS = {"resnet18": resnet18, "resnet50": resnet50}


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def resnet(name, seed=0):
    torch.manual_seed(seed)
    return RESNETS[name](weights=None, num_classes=10)


def images(seed=7, batch=2):
    return torch.randn(batch, 3, 64, 64, generator=generator(seed))


@torch.no_grad()
def randomize_batchnorm(net, seed=0):
    """Every BN non-trivial: running statistics of one train pass, random affine parameters."""
    g = generator(seed)
    momenta = {m: m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)}
    for m in momenta:
        m.momentum = 1.0  # the running statistics become this batch's statistics
    net.train()(torch.randn(4, 3, 64, 64, generator=g) * 2 + 0.5)
    for m, momentum in momenta.items():
        m.momentum = momentum
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return net


def state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def blocks(net):
    """(name, block) of every BasicBlock / Bottleneck, in forward order."""
    stages = [f"layer{stage}" for stage in range(1, 5)]
    return [(f"{stage}.{i}", block) for stage in stages for i, block in enumerate(getattr(net, stage))]


def fit_rows(mask):
    return mask.flatten(1).any(1)  # (C_o,) True where an output channel has any fit entry


def fit_columns(mask):
    return mask.transpose(0, 1).flatten(1).any(1)  # (C_i,)


@pytest.mark.parametrize("name", sorted(RESNETS))
@pytest.mark.parametrize("split_rate", [0.5, 0.3])
def test_kels_masks_are_the_top_left_blocks_with_the_two_exceptions(name, split_rate):
    net = resnet(name)
    masks = ke.kels_masks(net, split_rate)
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(masks) == {f"{n}.weight" for n in convs} | {"fc.weight", "fc.bias"}  # never a BN
    assert len(convs) == {"resnet18": 20, "resnet50": 53}[name]
    params = dict(net.named_parameters())
    for key, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[key].shape
        if key == "fc.bias":
            continue
        out_channels, in_channels = mask.shape[:2]
        keep_out = out_channels if key == "fc.weight" else math.ceil(split_rate * out_channels)
        keep_in = in_channels if key == "conv1.weight" else math.ceil(split_rate * in_channels)
        expected = torch.zeros_like(mask)
        expected[:keep_out, :keep_in] = True
        assert torch.equal(mask, expected), key
    assert masks["conv1.weight"][: math.ceil(split_rate * 64)].all()  # every RGB channel of the first filters
    assert masks["fc.bias"].all() and fit_rows(masks["fc.weight"]).all()  # every class is kept
    final_width = {"resnet18": 512, "resnet50": 2048}[name]
    assert masks["fc.weight"].float().mean().item() == pytest.approx(
        math.ceil(split_rate * final_width) / final_width)


def test_kels_block_of_a_strided_bottleneck_downsample_by_hand():
    mask = ke.kels_masks(resnet("resnet50"), 0.3)["layer2.0.downsample.0.weight"]  # (512, 256, 1, 1)
    assert mask.shape == (512, 256, 1, 1)
    assert mask.sum().item() == 154 * 77  # ceil(0.3 * 512) = 154 filters × ceil(0.3 * 256) = 77 kernels
    assert mask[153, 76].all() and not mask[154, 0].any() and not mask[0, 77].any()


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_residual_sums_add_the_same_fit_channels(name):
    # out = main(x) + shortcut(x): the main path's last conv, the downsample conv (or the identity,
    # whose fit channels are the block input's) and the next block's input must share the prefix
    net = resnet(name)
    masks = ke.kels_masks(net, 0.3)
    last_conv = "conv2" if name == "resnet18" else "conv3"
    widths = set()
    for block_name, block in blocks(net):
        main = fit_rows(masks[f"{block_name}.{last_conv}.weight"])
        if block.downsample is not None:
            shortcut = fit_rows(masks[f"{block_name}.downsample.0.weight"])
        else:
            shortcut = fit_columns(masks[f"{block_name}.conv1.weight"])  # the identity carries the input
        assert torch.equal(main, shortcut), block_name
        assert main.sum().item() == math.ceil(0.3 * len(main))
        widths.add(len(main))
    assert widths == ({64, 128, 256, 512} if name == "resnet18" else {256, 512, 1024, 2048})
    names = [block_name for block_name, _ in blocks(net)]
    for before, after in zip(names, names[1:]):  # a block's output is the next block's input
        assert torch.equal(fit_rows(masks[f"{before}.{last_conv}.weight"]),
                           fit_columns(masks[f"{after}.conv1.weight"]))
    assert torch.equal(fit_rows(masks[f"layer4.{len(net.layer4) - 1}.{last_conv}.weight"]),
                       fit_columns(masks["fc.weight"]))


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_reset_redraws_exactly_the_reset_entries(name):
    net = randomize_batchnorm(resnet(name))
    masks = ke.kels_masks(net, 0.5)
    before = state(net)
    ke.reinitialize_reset(net, masks, generator=generator(3))
    after, layers = state(net), dict(net.named_modules())
    for key, value in after.items():
        if key not in masks:  # every BN weight, bias and running statistic: bit-identical
            assert torch.equal(value, before[key]), key
            continue
        mask, changed = masks[key], value != before[key]  # where, not mask indexing: 10× faster
        assert not (changed & mask).any(), key  # fit: bit-identical
        assert (changed | mask).all(), key  # reset: every entry redrawn
        bound = 1 / math.sqrt(layers[key.rpartition(".")[0]].weight[0].numel())
        reset = torch.where(mask, 0.0, value)
        assert reset.abs().max().item() <= bound * (1 + 1e-6)  # PyTorch's default init (float32 bound)
    assert masks["fc.bias"].all()  # the classifier keeps its full bias: nothing to redraw
    again = ke.reinitialize_reset(resnet(name), masks, generator=generator(3))
    redrawn = dict(again.named_parameters())
    assert all(torch.equal(redrawn[key], after[key]) for key in masks)  # the same seed, the same draw


@pytest.mark.parametrize("name, split_rate", [("resnet18", 0.5), ("resnet18", 0.3), ("resnet50", 0.5)])
def test_slim_logits_equal_dense_logits_when_reset_weights_are_zero(name, split_rate):
    dense = randomize_batchnorm(resnet(name, seed=1))
    x = images()
    with torch.no_grad():
        untouched = ke.slim_copy(dense.eval(), split_rate)(x)
        reference = dense(x)
    assert not torch.allclose(untouched, reference, atol=1e-3)  # nonzero reset weights: they differ
    ke.reinitialize_reset(dense, ke.kels_masks(dense, split_rate), "zeros")
    # BN is left as the method leaves it: the non-fit channels keep nonzero γ, β and statistics, so
    # after BN they are not zero. They need not be: with the reset block zero, every fit output reads
    # fit inputs only, residual adds and pooling act per channel, and fc reads the fit channels only.
    assert dense.layer1[0].bn1.bias[math.ceil(split_rate * 64):].abs().min() > 0
    slim = ke.slim_copy(dense, split_rate)
    assert not slim.training
    captured = {}
    dense.layer2.register_forward_hook(lambda module, inputs, output: captured.setdefault("layer2", output))
    with torch.no_grad():
        dense_logits, slim_logits = dense(x), slim(x)
    stream = captured["layer2"]  # (b, C, h, w): the residual stream after layer2
    non_fit = stream[:, math.ceil(split_rate * stream.shape[1]):]
    assert (non_fit != 0).float().mean() > 0.3  # the non-fit channels are alive, not zeroed
    assert dense_logits.shape == slim_logits.shape == (2, 10)
    assert dense_logits.abs().max() > 0.1  # a non-trivial comparison
    assert torch.allclose(slim_logits, dense_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_slim_copy_is_about_s_squared_the_size_and_trains(name):
    dense = resnet(name)
    before = state(dense)
    slim = ke.slim_copy(dense, 0.5)
    count = lambda net: sum(p.numel() for p in net.parameters())
    assert count(slim) / count(dense) == pytest.approx(0.25, abs=0.002)  # s², a bit more: ceil, BN, fc
    final_width = {"resnet18": 512, "resnet50": 2048}[name]
    assert slim.conv1.weight.shape == (32, 3, 7, 7) and slim.fc.weight.shape == (10, final_width // 2)
    downsample = slim.layer4[0].downsample[0]  # strided 1×1: (C_o/2, C_i/2, 1, 1)
    assert downsample.weight.shape == (final_width // 2, final_width // 4, 1, 1) and downsample.stride == (2, 2)
    assert (downsample.out_channels, downsample.in_channels) == downsample.weight.shape[:2]  # a truthful repr
    bn = slim.layer4[0].bn1
    assert bn.num_features == bn.running_mean.numel() == bn.weight.numel() == dense.layer4[0].bn1.num_features // 2
    conv = slim.layer3[0].conv2
    assert torch.equal(conv.weight, dense.layer3[0].conv2.weight[:conv.out_channels, :conv.in_channels])
    logits = slim.train()(images(batch=4))
    F.cross_entropy(logits, torch.arange(4)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in slim.parameters())
    torch.optim.SGD(slim.parameters(), lr=0.1).step()
    assert all(p.grad is None for p in dense.parameters())  # nothing is shared with the dense net
    assert all(torch.equal(value, before[key]) for key, value in state(dense).items())


def test_slim_copy_agrees_with_the_chapter_backbone_at_width_multiplier():
    torch.manual_seed(0)
    dense = randomize_batchnorm(make_backbone("resnet", num_classes=10, in_channels=3))
    narrow = make_backbone("resnet", num_classes=10, in_channels=3, width_multiplier=0.3)
    expected = ke.extract_slim(dense, narrow, 0.3).state_dict()
    by_copy = ke.slim_copy(dense, 0.3).state_dict()
    assert by_copy.keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in by_copy.items())


@pytest.mark.parametrize("bad", [0, 1, 0.0, 1.0, -0.1, 1.5, True, "0.5", None])
def test_bad_split_rate_names_it(bad):
    net = resnet("resnet18")
    with pytest.raises(ValueError, match=r"split_rate.*\(0, 1\)"):
        ke.slim_copy(net, bad)


def test_grouped_convs_are_refused_by_name():
    net = resnext50_32x4d(weights=None, num_classes=10)
    with pytest.raises(ValueError, match=r"'layer1.0.conv2' is a grouped conv \(groups=32\)"):
        ke.slim_copy(net, 0.5)
    with pytest.raises(ValueError, match="groups=32"):
        ke.kels_masks(net, 0.5)
