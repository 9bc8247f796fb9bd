"""The fingerprinted generator's modulated conv as a drop-in layer in an unmodified torchvision
network (resnet18, random weights, nothing downloaded): swap, per-image fingerprints, baking back to
plain convs, gradients into the modulation, and messages on bad input. Issue 18."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from labkit.methods import fingerprints as fp

pytestmark = pytest.mark.usefixtures("one_thread")

D_C = 8
SWAPPED = ["conv1", "layer1.0.conv1", "layer2.0.conv1"]  # 7×7 stride 2 pad 3; 3×3 stride 1; 3×3 stride 2


def bits(n, seed):
    return torch.randint(0, 2, (n, D_C), generator=torch.Generator().manual_seed(seed)).float()


def images(n=4, seed=1):
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def net():
    torch.manual_seed(0)
    net = resnet18(weights=None, num_classes=10).eval()  # eval: BatchNorm is per image, so rows compare
    fp.fingerprint_convs(net, SWAPPED, D_C)
    return net


def test_the_drop_in_keeps_the_convs_weights_and_geometry():
    torch.manual_seed(0)
    net = resnet18(weights=None)
    original = net.layer2[0].conv1
    (layer,) = fp.fingerprint_convs(net, "layer2.0.conv1", D_C)
    assert net.layer2[0].conv1 is layer and isinstance(layer, fp.FingerprintedConv2d)
    assert torch.equal(layer.conv.weight, original.weight) and layer.conv.weight is not original.weight
    assert layer.conv.bias is None and (layer.conv.stride, layer.conv.padding) == ((2, 2), (1, 1))
    assert layer.conv.affine.in_features == D_C and layer.conv.affine.out_features == 64
    # Eq. (1)-(3) by hand: one image, styles scale the input channels, each filter renormalised
    x, c = torch.rand(1, 64, 16, 16), bits(1, 2)
    layer.set_fingerprint(c)
    s = layer.conv.affine(c)[0] + 1
    w = original.weight * s[None, :, None, None]
    w = w / (w.square().sum((1, 2, 3), keepdim=True) + 1e-8).sqrt()
    torch.testing.assert_close(layer(x), F.conv2d(x, w, None, stride=2, padding=1), rtol=1e-5, atol=1e-5)


def test_a_batch_of_fingerprints_runs_and_each_row_is_its_own_baked_network(net):
    x, c = images(), bits(4, 2)
    fp.set_fingerprint(net, c)
    out = net(x)  # the unmodified forward(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    for i in range(4):
        baked = fp.bake_fingerprint(net, c[i])
        assert not any(isinstance(m, fp.FingerprintedConv2d) for m in baked.modules())
        assert isinstance(baked.layer1[0].conv1, nn.Conv2d) and baked.conv1.stride == (2, 2)
        torch.testing.assert_close(baked(x[i:i + 1]), out[i:i + 1], rtol=1e-5, atol=1e-5)
    assert isinstance(net.layer1[0].conv1, fp.FingerprintedConv2d)  # baking copied, the net is unchanged


def test_different_fingerprints_give_different_outputs(net):
    x = images(1).expand(2, -1, -1, -1)  # one image twice
    c = torch.stack([torch.zeros(D_C), torch.ones(D_C)])
    fp.set_fingerprint(net, c)
    out = net(x)
    assert (out[0] - out[1]).abs().max() > 1e-3
    fp.set_fingerprint(net, c[:1])  # one row: the same fingerprint for the whole batch
    same = net(x)
    torch.testing.assert_close(same[0], same[1])
    torch.testing.assert_close(same[0], out[0], rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_modulation(net):
    net.train()
    fp.set_fingerprint(net, bits(4, 3))
    net(images()).square().mean().backward()
    for name in SWAPPED:
        layer = net.get_submodule(name)
        assert layer.conv.affine.weight.grad.abs().sum() > 0, name
        assert layer.conv.affine.bias.grad.abs().sum() > 0, name
        assert layer.conv.weight.grad.abs().sum() > 0, name


def test_bad_input_is_refused(net):
    with pytest.raises(RuntimeError, match="no fingerprint is set"):
        net(images())
    with pytest.raises(ValueError, match="has 3 rows but x holds 4 images"):
        fp.set_fingerprint(net, bits(3, 0))
        net(images())
    with pytest.raises(ValueError, match=r"c must have shape \(n, 8\)"):
        fp.set_fingerprint(net, torch.zeros(4, 5))
    with pytest.raises(ValueError, match="must hold bits"):
        fp.set_fingerprint(net, torch.full((4, D_C), 0.5))
    with pytest.raises(ValueError, match="'layer1.0.bn1' is not an nn.Conv2d of net"):
        fp.fingerprint_convs(net, ["layer1.0.bn1"], D_C)
    with pytest.raises(ValueError, match="no FingerprintedConv2d"):
        fp.set_fingerprint(resnet18(weights=None), bits(1, 0))
    with pytest.raises(ValueError, match="groups=1"):
        fp.FingerprintedConv2d(nn.Conv2d(4, 4, 3, groups=2), D_C)
    with pytest.raises(TypeError, match="conv must be an nn.Conv2d"):
        fp.FingerprintedConv2d(nn.Linear(4, 4), D_C)
