"""JPEG chapter methods: IJG tables vs Pillow, DCT identities, the torch simulator vs the real codec,
rate/distortion direction, zeroed coefficients, the TTAC loss's gradient flow, and bad input."""
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data, transform
from torch import nn

from labkit.methods import jpeg


def photo(name, size=128):
    """A centre square crop of a scikit-image photo, resized to (3, size, size) in [0, 1]."""
    a = getattr(data, name)()
    h, w = a.shape[:2]
    s = min(h, w)
    a = a[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    a = transform.resize(a, (size, size), anti_aliasing=True)
    return torch.from_numpy(a).permute(2, 0, 1).float().clamp(0, 1)


@pytest.fixture(scope="module")
def photos():
    return torch.stack([photo("astronaut"), photo("chelsea")])


# --- tables ----------------------------------------------------------------------------------

def test_quality_scale_at_known_values():
    assert [jpeg.quality_scale(q) for q in (1, 10, 25, 49, 50, 75, 90, 100)] == [5000, 500, 200, 102, 100, 50, 20, 0]


def test_quality_50_gives_base_tables_and_100_gives_ones():
    luma, chroma = jpeg.quantization_tables(50)
    assert torch.equal(luma, jpeg.LUMA_TABLE.float()) and torch.equal(chroma, jpeg.CHROMA_TABLE.float())
    assert all(torch.equal(t, torch.ones(8, 8)) for t in jpeg.quantization_tables(100))
    assert all(t.max() == 255 for t in jpeg.quantization_tables(1))  # baseline clipping
    assert jpeg.LUMA_TABLE[0, 0] == 16 and jpeg.LUMA_TABLE[7, 7] == 99 and jpeg.CHROMA_TABLE[0, 3] == 47


def test_tables_equal_pillows_written_tables_for_every_quality():
    image = Image.new("RGB", (16, 16), (30, 120, 220))
    for q in range(1, 101):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=q, subsampling=2, optimize=False)
        buffer.seek(0)
        written = Image.open(buffer).quantization
        luma, chroma = jpeg.quantization_tables(q)
        assert list(written[0]) == luma.flatten().int().tolist(), q  # natural row-major order on Pillow 13
        assert list(written[1]) == chroma.flatten().int().tolist(), q
    for q in (10, 50, 90):
        for sub in jpeg.SUBSAMPLINGS:
            assert all(torch.equal(a, b) for a, b in zip(jpeg.pillow_tables(q, sub), jpeg.quantization_tables(q)))


def test_table_features_are_log_tables():
    f = jpeg.table_features([10, 50, 100])
    assert f.shape == (3, 128)
    assert torch.allclose(f[1, :64].exp(), jpeg.LUMA_TABLE.flatten().float())
    assert torch.equal(f[2], torch.zeros(128))
    assert torch.equal(jpeg.table_features(50), f[1:2])


# --- transforms ------------------------------------------------------------------------------

def test_dct_matrix_is_orthonormal_and_matches_a_loop():
    C = jpeg.dct_matrix(8, torch.float64)
    assert torch.allclose(C @ C.T, torch.eye(8, dtype=torch.float64), atol=1e-12)
    for u in range(8):
        for i in range(8):
            a = math.sqrt(1 / 8) if u == 0 else math.sqrt(2 / 8)
            assert C[u, i].item() == pytest.approx(a * math.cos((2 * i + 1) * u * math.pi / 16), abs=1e-12)


def test_block_dct_inverse_and_constant_block():
    x = torch.rand(2, 24, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    D = jpeg.block_dct(x)
    assert D.shape == (2, 3, 4, 8, 8)
    assert torch.allclose(jpeg.block_idct(D), x, atol=1e-12)
    assert torch.equal(jpeg.deblockify(jpeg.blockify(x)), x)
    assert torch.equal(jpeg.blockify(x)[1, 2, 3], x[1, 16:24, 24:32])
    const = jpeg.block_dct(torch.full((1, 8, 8), 5.0, dtype=torch.float64))[0, 0, 0]
    assert const[0, 0].item() == pytest.approx(40.0)
    const[0, 0] = 0
    assert const.abs().max() < 1e-12


def test_rgb_ycbcr_round_trip_and_known_values():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert (jpeg.ycbcr_to_rgb(jpeg.rgb_to_ycbcr(x)) - x).abs().max() < 1e-4
    grey = jpeg.rgb_to_ycbcr(torch.full((3, 1, 1), 0.4))[:, 0, 0]
    assert torch.allclose(grey, torch.tensor([0.4, 128 / 255, 128 / 255]), atol=1e-6)
    red = jpeg.rgb_to_ycbcr(torch.tensor([1.0, 0.0, 0.0])[:, None, None])[:, 0, 0] * 255
    assert torch.allclose(red, torch.tensor([76.245, 84.972, 255.5]), atol=1e-3)


# --- simulator vs real codec -----------------------------------------------------------------

@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_simulator_matches_pillow(photos, subsampling):
    for q in (10, 50, 90):
        real, _ = jpeg.jpeg_roundtrip(photos, q, subsampling)
        simulated = jpeg.simulate_jpeg(photos, q, subsampling)
        assert simulated.shape == photos.shape
        assert (jpeg.psnr(simulated, real) >= 39.0).all(), (q, jpeg.psnr(simulated, real))
        # the two agree on the distortion they cause to 0.1 dB
        assert (jpeg.psnr(simulated, photos) - jpeg.psnr(real, photos)).abs().max() < 0.1


def test_fancy_upsampling_matters_for_420(photos):
    real, _ = jpeg.jpeg_roundtrip(photos, 50, "4:2:0")
    bilinear = jpeg.psnr(jpeg.simulate_jpeg(photos, 50, "4:2:0", "bilinear"), real)
    nearest = jpeg.psnr(jpeg.simulate_jpeg(photos, 50, "4:2:0", "nearest"), real)
    assert (bilinear > nearest + 1.0).all()


def test_simulator_odd_sizes_grayscale_and_single_images(photos):
    odd = photos[:1, :, :37, :53]
    for sub in jpeg.SUBSAMPLINGS:
        assert jpeg.psnr(jpeg.simulate_jpeg(odd, 50, sub), jpeg.jpeg_roundtrip(odd, 50, sub)[0]).min() > 39
    gray = photos[:, :1]
    real, nbytes = jpeg.jpeg_roundtrip(gray, 30)
    assert real.shape == gray.shape and nbytes.shape == (2,)
    assert (jpeg.psnr(jpeg.simulate_jpeg(gray, 30), real) > 42).all()
    single, size = jpeg.jpeg_roundtrip(photos[0], 50)
    assert single.shape == photos[0].shape and size.ndim == 0
    assert torch.equal(single, jpeg.jpeg_roundtrip(photos, 50)[0][0])
    assert jpeg.simulate_jpeg(photos[0], 50).shape == photos[0].shape


def test_real_codec_quality_raises_psnr_and_bpp(photos):
    scores, rates = [], []
    for q in (10, 50, 90):
        out, nbytes = jpeg.jpeg_roundtrip(photos, q)
        assert torch.equal(torch.round(out * 255), out * 255)  # decoded 8-bit values
        bpp = jpeg.bits_per_pixel(nbytes, 128, 128)
        assert torch.allclose(bpp, nbytes.double() * 8 / (128 * 128))
        scores.append(jpeg.psnr(out, photos))
        rates.append(bpp)
    assert (scores[0] < scores[1]).all() and (scores[1] < scores[2]).all()
    assert (rates[0] < rates[1]).all() and (rates[1] < rates[2]).all()
    assert jpeg.bits_per_pixel(1000, 100, 80) == pytest.approx(1.0)
    assert (jpeg.jpeg_roundtrip(photos, 50, "4:4:4")[1] > jpeg.jpeg_roundtrip(photos, 50, "4:2:0")[1]).all()


def test_coefficients_and_zeroed_fraction(photos):
    y, cb, cr = jpeg.dct_coefficients(photos, 50, "4:2:0")
    assert y.shape == (2, 16, 16, 8, 8) and cb.shape == cr.shape == (2, 8, 8, 8, 8) and y.dtype == torch.int64
    assert jpeg.dct_coefficients(photos, 50, "4:4:4")[1].shape == (2, 16, 16, 8, 8)
    assert jpeg.dct_coefficients(photos[0], 50)[0].shape == (16, 16, 8, 8)
    low, high = jpeg.zeroed_fraction(photos, 10), jpeg.zeroed_fraction(photos, 90)
    assert low.shape == (8, 8)
    assert low[0, 0] < 0.3 and low[7, 7] > 0.9 and low[4:, 4:].mean() > low[:2, :2].mean() + 0.5
    assert (low >= high).float().mean() >= 0.95 and low.sum() > high.sum()


# --- metrics ---------------------------------------------------------------------------------

def test_psnr_closed_form_and_psnr_b(photos):
    noisy = (photos + 0.1).clamp(0, 1)
    x = torch.full((2, 3, 4, 4), 0.5)
    assert torch.allclose(jpeg.psnr(x, x + 0.1), torch.full((2,), 20.0), atol=1e-4)
    assert jpeg.psnr(x[0], x[0] + 0.01).ndim == 0
    real, _ = jpeg.jpeg_roundtrip(photos, 10)
    assert (jpeg.blocking_effect_factor(real) > jpeg.blocking_effect_factor(photos)).all()
    # PSNR-B of a blocky image sits below its luma PSNR; for a smooth shift they coincide
    luma_mse = ((jpeg.rgb_to_ycbcr(photos)[:, 0] - jpeg.rgb_to_ycbcr(real)[:, 0]) ** 2).flatten(1).mean(1)
    assert (jpeg.psnr_b(photos, real) < 10 * torch.log10(1 / luma_mse)).all()
    assert torch.allclose(jpeg.psnr_b(x, x + 0.1), torch.full((2,), 20.0), atol=1e-3)
    assert jpeg.psnr(photos, noisy).shape == (2,)


def test_blockiness_rises_with_compression_and_map_locates_a_grid(photos):
    scores = [jpeg.blockiness(jpeg.jpeg_roundtrip(photos, q)[0]) for q in (10, 90)]
    assert (scores[0] > scores[1]).all() and (scores[0] > jpeg.blockiness(photos) + 1).all()
    assert jpeg.blockiness(photos).abs().max() < 2
    # a synthetic grid: each 8×8 block a constant grey -> no interior steps, all steps on boundaries
    levels = torch.rand(1, 1, 4, 5, generator=torch.Generator().manual_seed(2))
    tiles = levels.repeat_interleave(8, -2).repeat_interleave(8, -1)
    m = jpeg.blockiness_map(tiles)
    assert m.shape == (1, 4, 5) and (m > 0).all()
    expected = (levels[0, 0, 0, 0] - levels[0, 0, 0, 1]).abs() + (levels[0, 0, 0, 0] - levels[0, 0, 1, 0]).abs()
    assert m[0, 0, 0].item() == pytest.approx(expected.item() * 255 / 2, rel=1e-5)
    assert jpeg.blockiness_map(photos[0]).shape == (16, 16)


# --- TTAC ------------------------------------------------------------------------------------

class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16, 5)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


class TinyCorrector(nn.Module):
    """Residual conv corrector, FiLM-like shift from the (n, 128) table features."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.film = nn.Linear(128, 3)

    def forward(self, images, tables):
        shift = 0 if tables is None else self.film(tables)[:, :, None, None]
        return images + 0.1 * self.conv(images) + 0.01 * shift


def frozen_classifier():
    torch.manual_seed(0)
    return TinyClassifier().eval().requires_grad_(False)


def ttac_inputs(photos):
    small = torch.nn.functional.avg_pool2d(photos, 8)  # (2, 3, 16, 16)
    return small, jpeg.simulate_jpeg(small, 10), jpeg.table_features([10, 10])


@pytest.mark.parametrize("target", jpeg.TTAC_TARGETS)
def test_ttac_gradients_reach_only_the_corrector(photos, target):
    model, corrector = frozen_classifier(), TinyCorrector()
    clean, compressed, tables = ttac_inputs(photos)
    grad_modes = []  # the target pass runs under no_grad; the corrected pass records a graph
    model.body.register_forward_hook(lambda m, i, o: grad_modes.append((torch.is_grad_enabled(), o.requires_grad)))
    loss = jpeg.task_targeted_loss(model, corrector, clean, compressed, tables, target=target)
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    for name, p in corrector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.parameters())
    assert grad_modes == [(False, False), (True, True)]


def test_ttac_rejects_unfrozen_models_and_bad_targets(photos):
    clean, compressed, tables = ttac_inputs(photos)
    with pytest.raises(ValueError, match="task_model must be frozen"):
        jpeg.task_targeted_loss(TinyClassifier().eval(), TinyCorrector(), clean, compressed, tables)
    with pytest.raises(ValueError, match="task_model must be frozen"):
        jpeg.task_targeted_loss(TinyClassifier().requires_grad_(False), TinyCorrector(), clean, compressed, tables)
    with pytest.raises(ValueError, match="target='pixels' is not valid"):
        jpeg.task_targeted_loss(frozen_classifier(), TinyCorrector(), clean, compressed, tables, target="pixels")
    plain = nn.Sequential(nn.Flatten(), nn.Linear(768, 2)).eval().requires_grad_(False)
    with pytest.raises(ValueError, match="features"):
        jpeg.task_targeted_loss(plain, TinyCorrector(), clean, compressed, tables, target="features")


def test_pixel_weight_adds_the_l1_term(photos):
    model, corrector = frozen_classifier(), TinyCorrector()
    clean, compressed, tables = ttac_inputs(photos)
    base = jpeg.task_targeted_loss(model, corrector, clean, compressed, tables)
    weighted = jpeg.task_targeted_loss(model, corrector, clean, compressed, tables, pixel_weight=2.0)
    l1 = (corrector(compressed, tables).clamp(0, 1) - clean).abs().mean()
    assert weighted.item() == pytest.approx(base.item() + 2.0 * l1.item(), rel=1e-5)
    assert weighted > base
    pix = jpeg.pixel_loss(corrector, clean, compressed, tables)
    assert pix.item() == pytest.approx((corrector(compressed, tables) - clean).abs().mean().item())
    identity = lambda images, tables: images
    assert jpeg.pixel_loss(identity, clean, clean) == 0
    with pytest.raises(ValueError, match="pixel_weight"):
        jpeg.task_targeted_loss(model, corrector, clean, compressed, tables, pixel_weight=-1.0)


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, 101, 50.5, True, "50", None])
def test_bad_quality_is_refused(bad):
    image = torch.rand(3, 16, 16)
    for call in (lambda: jpeg.quality_scale(bad), lambda: jpeg.quantization_tables(bad),
                 lambda: jpeg.simulate_jpeg(image, bad), lambda: jpeg.jpeg_roundtrip(image, bad),
                 lambda: jpeg.table_features([50, bad])):
        with pytest.raises(ValueError, match=r"quality=.* is not valid; it must be an int in 1\.\.100"):
            call()


@pytest.mark.parametrize("bad, message", [
    (torch.rand(16, 16), "shape"), (torch.rand(2, 2, 16, 16), "shape"), (torch.rand(1, 1, 1, 16, 16), "shape"),
    ((torch.rand(3, 16, 16) * 255).to(torch.uint8), "float"), (torch.rand(3, 16, 16) * 2, r"\[0, 1\]"),
    (np.zeros((3, 16, 16)), "torch.Tensor")])
def test_non_images_are_refused(bad, message):
    for call in (jpeg.simulate_jpeg, jpeg.jpeg_roundtrip, jpeg.dct_coefficients):
        with pytest.raises(ValueError, match=message):
            call(bad, 50)
    with pytest.raises(ValueError, match=message):
        jpeg.blockiness(bad)


def test_bad_choices_and_planes_are_refused():
    image = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match="subsampling='4:2:2' is not valid"):
        jpeg.simulate_jpeg(image, 50, "4:2:2")
    with pytest.raises(ValueError, match="subsampling"):
        jpeg.jpeg_roundtrip(image, 50, "420")
    with pytest.raises(ValueError, match="upsampling='bicubic' is not valid"):
        jpeg.simulate_jpeg(image, 50, upsampling="bicubic")
    with pytest.raises(ValueError, match="multiples of 8"):
        jpeg.block_dct(torch.rand(1, 12, 16))
    with pytest.raises(ValueError, match="same shape"):
        jpeg.psnr(image, image[:, :8])
