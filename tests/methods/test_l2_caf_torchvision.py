"""L2-CAF and Grad-CAM on unmodified torchvision networks (random weights, nothing downloaded): a
resnet50 classifier split at ``layer4`` and a resnet18 embedding net. Issue 18's first method on a
real architecture; ``labkit.methods.l2_caf`` needed no change for it."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50

from labkit.methods import l2_caf

pytestmark = pytest.mark.usefixtures("one_thread")


def _head(net: nn.Module, embedding: bool = False):
    """Fast mode's h after ``layer4`` on a torchvision ResNet: avgpool → flatten → fc (→ L2 norm)."""
    def head(A: torch.Tensor) -> torch.Tensor:
        out = net.fc(torch.flatten(net.avgpool(A), 1))
        return F.normalize(out, dim=1) if embedding else out
    return head


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return resnet50(weights=None, num_classes=10).eval()


def test_resnet50_fast_mode_replays_the_slow_mode_and_the_filter_learns(classifier):
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    with l2_caf.frozen(classifier):
        A = l2_caf.capture(classifier, "layer4", x)
        assert A.shape == (2, 2048, 4, 4)
        f_hat = l2_caf.constrain(torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(2)))
        fast = _head(classifier)(A * f_hat[:, None])
        slow = l2_caf.filtered_forward(classifier, "layer4", x)(f_hat)
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
        target = classifier(x).argmax(1)
        out = l2_caf.optimise_filters(lambda f: _head(classifier)(A * f[:, None]), (2, 4, 4), "specific",
                                      target=target, max_iters=100, check_every=10)
    assert all(last < first for first, last in zip(out["losses"][0], out["losses"][-1]))
    assert l2_caf.heatmap(out["filters"], (128, 128)).shape == (2, 128, 128)
    for name, value in classifier.state_dict().items():  # the network is untouched, BN statistics included
        assert torch.equal(value, before[name]), name


def test_resnet50_grad_cam_at_layer4(classifier):
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    maps = l2_caf.grad_cam(classifier, "layer4", x, torch.tensor([1, 7]))
    assert maps.shape == (2, 4, 4) and (maps >= 0).all()
    assert all(p.grad is None for p in classifier.parameters())  # no gradient left in the weights


def test_a_resnet18_embedding_net_is_explained_class_obliviously():
    torch.manual_seed(0)
    net = resnet18(weights=None, num_classes=32).eval()  # fc is the 32-d embedding layer
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    with l2_caf.frozen(net):
        A = l2_caf.capture(net, "layer4", x)  # (2, 512, 3, 3)
        reference = _head(net, embedding=True)(A)
        out = l2_caf.optimise_filters(lambda f: _head(net, embedding=True)(A * f[:, None]), (2, *A.shape[2:]),
                                      "oblivious", reference=reference, max_iters=100, check_every=10)
    assert all(last < first for first, last in zip(out["losses"][0], out["losses"][-1]))
    maps = l2_caf.grad_cam(net, "layer4", x)  # no target: y = ⟨e, sg[e]⟩, the embedding's self-similarity
    assert maps.shape == (2, 3, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_filters_follow_the_activations_onto_cuda(classifier):
    """The filters live next to the activations; the CPU-drawn start makes both devices agree."""
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    results = {}
    for device in ("cpu", "cuda"):
        net = classifier.to(device)
        with l2_caf.frozen(net):
            A = l2_caf.capture(net, "layer4", x.to(device))
            target = net(x.to(device)).argmax(1)
            out = l2_caf.optimise_filters(lambda f: _head(net)(A * f[:, None]), (2, 4, 4), "specific",
                                          target=target, max_iters=20, check_every=5,
                                          generator=torch.Generator().manual_seed(0))
        assert out["filters"].device.type == device
        results[device] = out["filters"].cpu()
    classifier.to("cpu")
    torch.testing.assert_close(results["cuda"], results["cpu"], rtol=1e-2, atol=1e-3)
