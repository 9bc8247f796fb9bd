import math

import pytest
import torch
from torch import nn

from labkit.models.corrector import Corrector


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _tables(n, generator):
    # log quantization steps in 1..255, as the chapter passes them
    return torch.randint(1, 256, (n, 128), generator=generator).float().log()


def _randomize_tail(model, generator):
    with torch.no_grad():
        model.tail.weight.normal_(0.0, 0.05, generator=generator)
        model.tail.bias.normal_(0.0, 0.01, generator=generator)


@pytest.mark.parametrize("conditioned", [True, False])
def test_identity_at_init_for_any_size(conditioned):
    g = torch.Generator().manual_seed(0)
    model = Corrector(conditioned=conditioned)
    for h, w in [(8, 8), (17, 31), (64, 48)]:
        images = torch.rand(3, 3, h, w, generator=g)
        images[0, 0, 0, 0], images[0, 0, 0, 1] = 0.0, 1.0
        tables = _tables(3, g) if conditioned else None
        assert torch.equal(model(images, tables), images)


def test_parameter_count():
    assert 30_000 <= sum(p.numel() for p in Corrector().parameters()) <= 80_000
    assert 30_000 <= sum(p.numel() for p in Corrector(conditioned=False).parameters()) <= 80_000


def test_output_stays_in_unit_range():
    g = torch.Generator().manual_seed(1)
    model = Corrector()
    with torch.no_grad():
        model.tail.weight.normal_(0.0, 1.0, generator=g)  # a residual far too large
    out = model(torch.rand(2, 3, 16, 16, generator=g), _tables(2, g))
    assert out.shape == (2, 3, 16, 16)
    assert out.min() >= 0.0 and out.max() <= 1.0 and (out == 0).any() and (out == 1).any()


def test_conditioning_changes_the_output_and_the_ablation_ignores_tables():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 16, 16, generator=g)
    low, high = _tables(2, g), torch.zeros(2, 128)
    model = Corrector()
    _randomize_tail(model, g)
    assert not torch.allclose(model(images, low), model(images, high))
    ablation = Corrector(conditioned=False)
    _randomize_tail(ablation, g)
    assert ablation.film is None
    reference = ablation(images)
    assert not torch.equal(reference, images)
    assert torch.equal(ablation(images, low), reference)
    assert torch.equal(ablation(images, high), reference)


def test_gradients_reach_every_parameter():
    g = torch.Generator().manual_seed(3)
    model = Corrector()
    _randomize_tail(model, g)
    images = 0.25 + 0.5 * torch.rand(4, 3, 16, 16, generator=g)  # away from the clamp
    model(images, _tables(4, g)).square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_a_few_adam_steps_lower_the_l1_loss_on_blocky_noise():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    clean = 0.2 + 0.6 * torch.rand(8, 3, 1, 1, generator=g).expand(8, 3, 16, 16)  # flat patches
    # 8x8 blocky noise, the JPEG-like artifact
    blocks = torch.randn(8, 3, 2, 2, generator=g) * 0.1
    noisy = (clean + blocks.repeat_interleave(8, 2).repeat_interleave(8, 3)).clamp(0, 1)
    tables = torch.full((8, 128), math.log(50.0))
    model = Corrector()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = nn.functional.l1_loss(model(noisy, tables), clean).item()
    for _ in range(30):
        loss = nn.functional.l1_loss(model(noisy, tables), clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = nn.functional.l1_loss(model(noisy, tables), clean).item()
    assert last < 0.8 * first


def test_bad_inputs_raise_clear_errors():
    model = Corrector()
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="tables is None.*conditioned=False"):
        model(images)
    with pytest.raises(ValueError, match=r"tables must be a float tensor \(2, 128\).*\(2, 64\)"):
        model(images, torch.zeros(2, 64))
    with pytest.raises(ValueError, match=r"tables must be"):
        model(images, torch.zeros(3, 128))
    with pytest.raises(ValueError, match=r"float tensor \(n, 3, H, W\); got \(2, 1, 8, 8\)"):
        model(torch.rand(2, 1, 8, 8), torch.zeros(2, 128))
    with pytest.raises(ValueError, match="images must be.*uint8"):
        model((images * 255).to(torch.uint8), torch.zeros(2, 128))
    with pytest.raises(ValueError, match="images must be"):
        model(torch.rand(3, 8, 8), torch.zeros(1, 128))
    with pytest.raises(ValueError, match="channels"):
        Corrector(channels=0)
    with pytest.raises(ValueError, match="num_blocks"):
        Corrector(num_blocks=-1)
    with pytest.raises(ValueError, match="conditioned"):
        Corrector(conditioned="yes")
