"""SVMax on the embedding of an unmodified torchvision network (random weights, nothing
downloaded): a resnet18 whose fc is a 32-d embedding head. Issue 18; ``labkit.methods.svmax``
needed no change for it."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from labkit.methods import svmax

pytestmark = pytest.mark.usefixtures("one_thread")


def test_svmax_on_a_resnet18_embedding_spreads_the_batch():
    torch.manual_seed(0)
    net = resnet18(weights=None, num_classes=32)  # fc: 512 → 32, the embedding head
    x = torch.rand(32, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # b >= d, as SVMax needs
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    spreads = []
    for _ in range(5):
        E = F.normalize(net(x), dim=1)  # (32, 32): the bounds need unit rows
        penalty = svmax.svmax_penalty(E, lam=1.0, check_normalized=True)
        spreads.append(float(svmax.normalized_spread(E.detach())))
        optimizer.zero_grad()
        penalty.backward()
        assert net.conv1.weight.grad.abs().sum() > 0  # the gradient reaches the stem
        optimizer.step()
    assert spreads[-1] > spreads[0] + 0.2, spreads  # the penalty alone spreads the batch (0.48 → 0.99 here)
    assert 0.0 <= min(spreads) and max(spreads) <= 1.0
