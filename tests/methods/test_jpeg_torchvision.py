"""Task-targeted artifact correction (Eq. 5) with an unmodified torchvision classifier as the frozen
task model (resnet18(num_classes=10), random weights, nothing downloaded) and two correctors: labkit's
table-conditioned ``Corrector`` and a plain 2-layer conv. Images: two 64×64 photographs through
Pillow's JPEG at quality 10. Issue 18."""
import pytest
import torch
from skimage import data, transform
from torch import nn
from torchvision.models import resnet18

from labkit.methods import jpeg
from labkit.models.corrector import Corrector

pytestmark = pytest.mark.usefixtures("one_thread")


def photo(name, size):
    """A centre square crop of a scikit-image photo, resized to (3, size, size) in [0, 1]."""
    a = getattr(data, name)()
    h, w = a.shape[:2]
    s = min(h, w)
    a = transform.resize(a[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s], (size, size),
                         anti_aliasing=True)
    return torch.from_numpy(a).permute(2, 0, 1).float().clamp(0, 1)


@pytest.fixture(scope="module")
def batch():
    clean = torch.stack([photo("astronaut", 64), photo("chelsea", 64)])  # (2, 3, 64, 64)
    compressed, _ = jpeg.jpeg_roundtrip(clean, 10)
    return clean, compressed, jpeg.table_features([10, 10])


@pytest.fixture(scope="module")
def task_model():
    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=10).eval().requires_grad_(False)


class TwoLayerCorrector(nn.Module):
    """An image-only residual corrector: images (n, 3, H, W) → (n, 3, H, W)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, images):
        return images + self.body(images)


def correctors():
    torch.manual_seed(1)
    labkit_corrector = Corrector(channels=8, num_blocks=1)
    plain = TwoLayerCorrector()
    # (the module to train, the callable the loss gets, whether the quality tables are passed)
    return {"labkit": (labkit_corrector, labkit_corrector, True),
            "two-layer": (plain, lambda images, tables: plain(images), False)}


@pytest.mark.parametrize("kind", ["labkit", "two-layer"])
def test_ttac_trains_the_corrector_through_a_frozen_resnet18(task_model, batch, kind):
    clean, compressed, tables = batch
    module, corrector, conditioned = correctors()[kind]
    tables = tables if conditioned else None
    before = {k: v.clone() for k, v in task_model.state_dict().items()}
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    losses = []
    for step in range(6):
        loss = jpeg.task_targeted_loss(task_model, corrector, clean, compressed, tables)
        assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            # labkit's Corrector starts as the identity (zero tail conv): only the tail gets a gradient at first
            grads = {n: p.grad for n, p in module.named_parameters()}
            assert all(g is not None for g in grads.values())
            assert sum(g.abs().sum() > 0 for g in grads.values()) >= (2 if kind == "labkit" else 4)
            assert all(p.grad is None for p in task_model.parameters())
        optimizer.step()
        losses.append(loss.item())
    final = jpeg.task_targeted_loss(task_model, corrector, clean, compressed, tables).item()
    assert final < 0.95 * losses[0], (losses, final)  # the logits on corrected images move towards f(clean)
    after = task_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics untouched
    assert not any(m.training for m in task_model.modules())


def test_the_starting_loss_is_the_compressed_images_logit_gap(task_model, batch):
    clean, compressed, tables = batch
    identity = Corrector(channels=8, num_blocks=1)  # zero tail: corrects nothing yet
    gap = (task_model(compressed) - task_model(clean)).abs().mean()
    loss = jpeg.task_targeted_loss(task_model, identity, clean, compressed, tables)
    assert loss.item() == pytest.approx(gap.item(), rel=1e-5) and gap.item() > 0
    assert jpeg.task_targeted_loss(task_model, identity, clean, clean, tables).item() == 0.0


def test_unfrozen_torchvision_models_and_mismatched_images_are_refused(batch):
    clean, compressed, tables = batch
    corrector = Corrector(channels=8, num_blocks=1)
    with pytest.raises(ValueError, match="task_model must be frozen"):
        jpeg.task_targeted_loss(resnet18(weights=None, num_classes=10).eval(), corrector, clean, compressed, tables)
    frozen = resnet18(weights=None, num_classes=10).eval().requires_grad_(False)
    with pytest.raises(ValueError, match="features"):  # torchvision's resnet has no .features
        jpeg.task_targeted_loss(frozen, corrector, clean, compressed, tables, target="features")
    with pytest.raises(ValueError, match=r"of one shape; compressed is \(2, 3, 32, 32\)"):
        jpeg.task_targeted_loss(frozen, corrector, clean, compressed[..., :32, :32], tables)
    with pytest.raises(ValueError, match=r"clean is \(3, 64, 64\)"):
        jpeg.task_targeted_loss(frozen, corrector, clean[0], compressed, tables)
