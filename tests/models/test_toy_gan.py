import pytest
import torch
from torch import nn
from torch.nn import functional as F

from labkit.models.toy_gan import ImageDiscriminator, ImageGenerator, dcgan_init

SIZES = [(16, 1), (16, 3), (32, 1), (32, 3)]
# width=32, latent_dim=64, no attention
PARAMETERS = {
    "G": {(16, 1): 226_017, (16, 3): 226_595, (32, 1): 230_513, (32, 3): 230_803},
    "D": {(16, 1): 166_401, (16, 3): 166_977, (32, 1): 174_465, (32, 3): 174_753},
}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Recorder(nn.Module):
    """Identity plus a learnable scale; records the shape of what it sees and checks its size."""

    def __init__(self, channels: int, expected_size: int):
        super().__init__()
        self.channels, self.expected_size = channels, expected_size
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        assert h.shape[1:] == (self.channels, self.expected_size, self.expected_size)
        self.seen.append(h.detach())
        return h * self.scale


def recorder_factory(expected_size: int):
    return lambda channels: Recorder(channels, expected_size)


@pytest.mark.parametrize("image_size, channels", SIZES)
def test_generator_shapes_and_range(image_size, channels):
    torch.manual_seed(0)
    generator = ImageGenerator(latent_dim=64, channels=channels, image_size=image_size)
    images = generator(torch.randn(5, 64) * 3)
    assert images.shape == (5, channels, image_size, image_size)
    assert images.min() >= 0 and images.max() <= 1
    assert generator.attention is None
    assert _count(generator) == PARAMETERS["G"][image_size, channels]


@pytest.mark.parametrize("image_size, channels", SIZES)
def test_discriminator_shapes(image_size, channels):
    discriminator = ImageDiscriminator(channels, image_size, width=32)
    x = torch.rand(6, channels, image_size, image_size)
    assert discriminator(x).shape == (6,)
    trunk = discriminator.trunk(x)
    assert trunk.shape == (6, discriminator.trunk_channels, 8, 8) and discriminator.trunk_channels == 64
    assert discriminator.penultimate(x).shape == (6, 64 * 32) == (6, discriminator.head.num_features)
    # the pieces compose into forward, as a reference-attention wrapper will use them
    assert torch.allclose(discriminator.head(trunk), discriminator(x))
    assert torch.allclose(discriminator.head.linear(discriminator.penultimate(x)).squeeze(1), discriminator(x))
    assert _count(discriminator) == PARAMETERS["D"][image_size, channels]


@pytest.mark.parametrize("width", [8, 16, 64])
def test_widths_scale_the_nets(width):
    generator = ImageGenerator(latent_dim=16, channels=3, image_size=32, width=width)
    discriminator = ImageDiscriminator(3, 32, width=width)
    assert generator(torch.randn(2, 16)).shape == (2, 3, 32, 32)
    assert generator.blocks[-1][1].out_channels == width // 2
    assert discriminator.trunk_channels == 2 * width
    assert discriminator.penultimate(torch.rand(2, 3, 32, 32)).shape == (2, 64 * width)


@pytest.mark.parametrize("image_size, attention_size, channels", [(16, 8, 64), (32, 16, 32)])
def test_generator_attention_at_half_resolution(image_size, attention_size, channels):
    torch.manual_seed(1)
    generator = ImageGenerator(channels=3, image_size=image_size, attention=recorder_factory(attention_size))
    assert isinstance(generator.attention, Recorder) and generator.attention.channels == channels
    assert generator.attention_resolution == attention_size and generator.attention_channels == channels
    assert generator.attention_index == {16: 0, 32: 1}[image_size]
    generator.eval()
    z = torch.randn(3, 64)
    images = generator(z)
    assert images.shape == (3, 3, image_size, image_size) and len(generator.attention.seen) == 1
    # features_before_attention returns exactly what the attention saw
    assert torch.equal(generator.features_before_attention(z), generator.attention.seen[0])
    # the attention output feeds the rest of the generator, and gradients reach it
    generator.attention.scale.data.fill_(0.5)
    assert not torch.allclose(generator(z), images)
    generator(z).sum().backward()
    assert generator.attention.scale.grad is not None and generator.attention.scale.grad.abs() > 0


@pytest.mark.parametrize("image_size", [16, 32])
def test_discriminator_attention_at_8x8(image_size):
    discriminator = ImageDiscriminator(1, image_size, width=16, attention=recorder_factory(8))
    x = torch.rand(4, 1, image_size, image_size)
    logits = discriminator(x)
    assert logits.shape == (4,) and discriminator.attention.channels == 32
    assert torch.equal(discriminator.attention.seen[0], discriminator.trunk(x))
    discriminator.attention.scale.data.fill_(2.0)
    assert not torch.allclose(discriminator(x), logits)
    assert discriminator.penultimate(x).shape == (4, 16 * 64)


def test_attention_module_keeps_its_own_init():
    class Gate(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 1)
            nn.init.constant_(self.conv.weight, 0.5)

        def forward(self, h):
            return h + self.conv(h)

    generator = ImageGenerator(attention=Gate)
    assert torch.all(generator.attention.conv.weight == 0.5)


def test_dcgan_init():
    torch.manual_seed(0)
    generator = ImageGenerator(channels=3, image_size=32, width=64)
    discriminator = ImageDiscriminator(3, 32, width=64)
    for model in (generator, discriminator):
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                assert module.weight.std().item() == pytest.approx(0.02, rel=0.2)
                assert module.bias is None or torch.all(module.bias == 0)
            if isinstance(module, nn.BatchNorm2d):
                assert torch.all(module.bias == 0) and (module.weight - 1).abs().max() < 0.1
    assert dcgan_init(nn.Linear(2, 2)).bias.abs().sum() == 0


def test_determinism_with_manual_seed():
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        generator, discriminator = ImageGenerator(image_size=16), ImageDiscriminator(1, 16)
        z = torch.randn(4, 64)
        outputs.append((generator(z), discriminator(generator(z))))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    torch.manual_seed(4)
    assert not torch.equal(ImageGenerator(image_size=16)(z), outputs[0][0])


def test_discriminator_learns_real_from_noise():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    # "real": smooth blobs; "fake": uniform noise
    grid = torch.linspace(-1, 1, 16)
    centres = torch.rand(64, 2, generator=generator) - 0.5
    real = torch.exp(-((grid[None, None, :] - centres[:, 0, None, None]) ** 2
                       + (grid[None, :, None] - centres[:, 1, None, None]) ** 2) / 0.1)[:, None]
    fake = torch.rand(64, 1, 16, 16, generator=generator)
    discriminator = ImageDiscriminator(1, 16, width=8)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(25):
        loss = F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(fake)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        assert discriminator(real).min() > discriminator(fake).max()


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 24}, "image_size=24 is not valid; choose one of: 16, 32"),
    ({"channels": 2}, "channels=2 is not valid; choose one of: 1, 3"),
    ({"width": 3}, "width=3 is not valid; it must be an even int >= 2"),
    ({"width": 0}, "width=0 is not valid"),
    ({"width": True}, "width=True is not valid"),
    ({"width": 8.0}, "width=8.0 is not valid"),
    ({"attention": "sagan"}, "attention='sagan' is not valid; pass None or a factory"),
    ({"attention": lambda channels: torch.zeros(1)}, "the attention factory returned Tensor"),
])
def test_bad_constructor_arguments(kwargs, message):
    for cls in (ImageGenerator, ImageDiscriminator):
        with pytest.raises(ValueError, match=message):
            cls(**kwargs)


def test_bad_latent_dim():
    with pytest.raises(ValueError, match="latent_dim=0 is not valid"):
        ImageGenerator(latent_dim=0)


def test_wrong_input_shapes():
    generator = ImageGenerator(latent_dim=8, channels=3, image_size=16)
    discriminator = ImageDiscriminator(3, 16)
    with pytest.raises(ValueError, match=r"z must have shape \(n, 8\); got \(4, 9\)"):
        generator(torch.randn(4, 9))
    with pytest.raises(ValueError, match=r"z must have shape \(n, 8\); got \(8,\)"):
        generator.features_before_attention(torch.randn(8))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3, 16, 16\); got \(2, 1, 16, 16\)"):
        discriminator(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3, 16, 16\); got \(2, 3, 32, 32\)"):
        discriminator.penultimate(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3, 16, 16\); got \(3, 16, 16\)"):
        discriminator(torch.rand(3, 16, 16))
