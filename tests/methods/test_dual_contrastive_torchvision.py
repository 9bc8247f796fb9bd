"""The dual contrastive loss on an unmodified torchvision discriminator (random weights, nothing
downloaded): resnet18(num_classes=1) judging 4 real and 4 fake 64×64 images. Issue 18."""
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from labkit.methods import dual_contrastive as dc

pytestmark = pytest.mark.usefixtures("one_thread")


def batches(seed=1):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(4, 3, 64, 64, generator=g)
    fake = torch.rand(4, 3, 64, 64, generator=g) * 0.5  # darker: something D can learn to tell apart
    return real, fake


@pytest.fixture
def D():
    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=1)  # train mode: BatchNorm on batch statistics


def test_losses_equal_the_logit_functions_on_ds_outputs(D):
    real, fake = batches()
    d_loss, g_loss = dc.dual_contrastive_losses(D, real, fake)
    real_logits, fake_logits = D(real)[:, 0], D(fake)[:, 0]  # the same separate passes
    assert d_loss.item() == pytest.approx(dc.dual_contrastive_d_loss(real_logits, fake_logits).item(), rel=1e-6)
    assert g_loss.item() == pytest.approx(dc.dual_contrastive_g_loss(real_logits, fake_logits).item(), rel=1e-6)
    assert torch.equal(dc.discriminator_logits(D, real), real_logits)
    d_t, _ = dc.dual_contrastive_losses(D, real, fake, temperature=2.0)
    assert d_t.item() == pytest.approx(dc.dual_contrastive_d_loss(real_logits, fake_logits, temperature=2.0).item(),
                                       rel=1e-6)


def test_gradients_reach_d_and_one_adam_step_lowers_the_d_loss(D):
    real, fake = batches()
    optimizer = torch.optim.Adam(D.parameters(), lr=1e-4)
    d_loss, _ = dc.dual_contrastive_losses(D, real, fake)
    optimizer.zero_grad()
    d_loss.backward()
    for name in ("conv1.weight", "layer4.1.conv2.weight", "fc.weight"):
        assert D.get_parameter(name).grad.abs().sum() > 0, name
    assert D.fc.bias.grad.abs().item() < 1e-6  # a common shift of all logits changes nothing
    optimizer.step()
    after, _ = dc.dual_contrastive_losses(D, real, fake)
    assert after.item() < d_loss.item() - 1e-3, (d_loss.item(), after.item())


def test_the_g_loss_reaches_the_generator_through_fake_only_when_not_detached(D):
    real, _ = batches()
    G = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Sigmoid())
    fake = G(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
    _, g_loss = dc.dual_contrastive_losses(D, real, fake)
    g_loss.backward()
    assert G[0].weight.grad.abs().sum() > 0
    G.zero_grad()
    d_loss, _ = dc.dual_contrastive_losses(D, real, fake.detach())
    d_loss.backward()
    assert G[0].weight.grad is None or G[0].weight.grad.abs().sum() == 0


def test_wrong_d_output_and_batches_are_refused(D):
    real, fake = batches()
    classifier = resnet18(weights=None, num_classes=10)
    with pytest.raises(ValueError, match=r"D must map real \(4, 3, 64, 64\) to logits of shape \(4,\) or \(4, 1\); "
                                         r"got \(4, 10\)"):
        dc.dual_contrastive_losses(classifier, real, fake)
    with pytest.raises(ValueError, match="got tuple"):
        dc.discriminator_logits(lambda x: (x, x), real)
    with pytest.raises(ValueError, match="real holds 4 images and fake 3"):
        dc.dual_contrastive_losses(D, real, fake[:3])
    with pytest.raises(ValueError, match=r"fake must be a non-empty float image batch \(N, c, H, W\)"):
        dc.dual_contrastive_losses(D, real, fake[0])
    with pytest.raises(TypeError, match="D must be an nn.Module"):
        dc.dual_contrastive_losses("resnet18", real, fake)
