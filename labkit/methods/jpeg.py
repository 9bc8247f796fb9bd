r"""Analyzing and Mitigating JPEG Compression Defects in Deep Learning — the codec and TTAC.

Max Ehrlich, Larry Davis, Ser-Nam Lim, Abhinav Shrivastava. ICCV 2021 Workshops (MELEX),
arXiv 2011.08932. No official code; the authors' JPEG tooling is ``Queuecumber/torchjpeg``
(not used here: its torch pin conflicts with ours; everything below is written from the standard).

**The idea.** Vision models are trained on lightly compressed images and lose accuracy on heavily
compressed ones (quality 10–50). An artifact corrector trained for pixel fidelity helps some task
models and hurts others. Task-targeted artifact correction (TTAC) fine-tunes the corrector, without
labels, so that a *frozen* task model's outputs on corrected images match its outputs on originals.

**Equations** (the spec's numbering; IJG/libjpeg baseline JPEG).

- (1) quality scale: $S(q)=\lfloor 5000/q\rfloor$ for $q<50$, else $200-2q$.
- (2) tables: $Q_q=\mathrm{clip}(\lfloor (Q_0 S(q)+50)/100\rfloor, 1, 255)$, $Q_0$ the Annex-K tables.
- (3) block DCT: $D = C\,(B-128)\,C^\top$, $C$ the orthonormal 8×8 DCT-II matrix.
- (4) quantization: $\hat D=\mathrm{round}(D\oslash Q_q)$; decoding is $C^\top(\hat D\odot Q_q)C+128$.
- (5) TTAC: $\mathcal L_{TTAC}(\phi)=\big\|f_\theta(x)-f_\theta\big(C_\phi(J_q(x),Q_q)\big)\big\|_1$,
  the target under no_grad, gradients flowing *through* the frozen $f_\theta$ into $\phi$;
  optionally $+\lambda\,\mathcal L_{pix}$ with $\mathcal L_{pix}=\|C_\phi(J_q(x),Q_q)-x\|_1$.
- (6) PSNR-B (Yim & Bovik 2011): $\mathrm{MSE\text{-}B}=\mathrm{MSE}+\mathrm{BEF}(y)$ with
  $\mathrm{BEF}=\eta\,(D_B/N_B-D_{B^c}/N_{B^c})$, $\eta=\log_2 8/\log_2\min(H,W)$ if positive else 0.

| symbol | variable |
|---|---|
| $q$, $S(q)$ | `quality`, `quality_scale(quality)` |
| $Q_0$ (luma, chroma) | `LUMA_TABLE`, `CHROMA_TABLE` |
| $Q_q$ | `quantization_tables(quality)`; as conditioning `table_features` (log, 128 values) |
| $C$ | `dct_matrix(8)` |
| $D$, $\hat D$ | `block_dct(...)`, `dct_coefficients(...)` |
| $J_q(x)$ | `jpeg_roundtrip` (real codec, every evaluation), `simulate_jpeg` (torch, teaching) |
| $f_\theta$, $C_\phi$, $\lambda$ | `task_model`, `corrector(images, tables)`, `pixel_weight` |

**Conventions.** Images are float RGB in [0, 1], (3, H, W) or (n, 3, H, W); grayscale (1, H, W)
is one luma plane. `rgb_to_ycbcr`/`ycbcr_to_rgb` work on [0, 1] (Cb, Cr centred on 128/255); the
simulator works on 0..255 and mirrors libjpeg-turbo: 8-bit input, 2×2-mean 4:2:0 chroma, planes
padded to whole blocks by edge replication and cropped back, samples rounded wherever libjpeg
stores 8 bits, and chroma upsampled by libjpeg-turbo's default "fancy" triangle filter, which is
bilinear with half-pixel centres and clamped edges ("nearest" as in torchjpeg is the option).
Against Pillow 13 on 128×128 astronaut/chelsea/coffee crops at q ∈ {10, 50, 90}, PSNR(simulated,
real) is 40.6–47.6 dB for 4:2:0 (36.9 dB worst with "nearest") and 42.5–50.4 dB for 4:4:4; tests
assert ≥ 39 dB. PSNR to the original agrees with the real codec's to 0.03 dB; the rest is libjpeg's
integer DCT and coefficients rounding the other way at boundaries (a few pixels off by 10–40).

**Deviations at this scale.** No DCT-domain corrector (QGAC): the corrector is any module called as
``corrector(images, tables)``, ``tables`` the (n, 128) log-table features. ``blockiness`` is our
readable score (mean |luma step| across block boundaries minus inside blocks, grey levels), not BEF.
"""
from __future__ import annotations

import io
import math
import numbers
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit.config import check_choice, check_range

__all__ = [
    "LUMA_TABLE", "CHROMA_TABLE", "SUBSAMPLINGS", "UPSAMPLINGS", "TTAC_TARGETS",
    "quality_scale", "quantization_tables", "table_features", "rgb_to_ycbcr", "ycbcr_to_rgb",
    "dct_matrix", "blockify", "deblockify", "block_dct", "block_idct", "dct_coefficients",
    "zeroed_fraction", "simulate_jpeg", "jpeg_roundtrip", "bits_per_pixel", "pillow_tables",
    "psnr", "blocking_effect_factor", "psnr_b", "blockiness", "blockiness_map",
    "task_targeted_loss", "pixel_loss",
]

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), natural row-major order.
LUMA_TABLE = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.int64)
CHROMA_TABLE = torch.tensor([[17, 18, 24, 47] + [99] * 4, [18, 21, 26, 66] + [99] * 4,
                             [24, 26, 56] + [99] * 5, [47, 66] + [99] * 6] + [[99] * 8] * 4,
                            dtype=torch.int64)
SUBSAMPLINGS = ("4:2:0", "4:4:4")
UPSAMPLINGS = ("bilinear", "nearest")
TTAC_TARGETS = ("logits", "features", "probabilities")
# JFIF RGB -> YCbCr on the 0..255 scale; Cb and Cr are offset by 128.
_RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                            [0.5, -0.418688, -0.081312]], dtype=torch.float64)
_YCC_TO_RGB = torch.linalg.inv(_RGB_TO_YCC)


def _check_quality(quality: object) -> int:
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= 100:
        raise ValueError(f"quality={quality!r} is not valid; it must be an int in 1..100")
    return int(quality)


def _check_images(x: object, name: str = "x") -> torch.Tensor:
    """Accept (c, H, W) or (n, c, H, W) float images in [0, 1] with c in {1, 3}."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of images; got {type(x).__name__}")
    if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"{name} must have shape (3, H, W), (n, 3, H, W), (1, H, W) or (n, 1, H, W); "
                         f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor with values in [0, 1]; got dtype {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() > 1 or not torch.isfinite(x).all()):
        raise ValueError(f"{name} values must lie in [0, 1]; got [{x.min().item():.4g}, {x.max().item():.4g}]")
    return x


def _single(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Drop the batch dim of a per-image result when the input was one (c, H, W) image."""
    return t if x.ndim == 4 else t[0]


def quality_scale(quality: int) -> int:
    """Eq. (1): the IJG percentage scale S(q) for a quality in 1..100."""
    q = _check_quality(quality)
    return 5000 // q if q < 50 else 200 - 2 * q


def quantization_tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (2): (luma (8, 8), chroma (8, 8)) float tables at ``quality``, baseline-clipped to 1..255."""
    s = quality_scale(quality)
    return tuple(((Q0 * s + 50) // 100).clamp(1, 255).float() for Q0 in (LUMA_TABLE, CHROMA_TABLE))


def table_features(qualities: int | Sequence[int]) -> torch.Tensor:
    """log of the concatenated luma + chroma tables, flattened: (n, 128) corrector conditioning."""
    qualities = list(qualities) if isinstance(qualities, (list, tuple, range)) else [qualities]
    rows = [torch.cat([t.flatten() for t in quantization_tables(q)]) for q in qualities]
    return torch.stack(rows).log() if rows else torch.zeros(0, 128)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """JFIF YCbCr on the [0, 1] scale (Cb, Cr centred on 128/255); channels at dim -3, (…, 3, H, W)."""
    y = torch.einsum("ij,...jhw->...ihw", _RGB_TO_YCC.to(x), x)
    return y + torch.tensor([0.0, 128 / 255, 128 / 255]).to(x)[:, None, None]


def ycbcr_to_rgb(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_ycbcr`` (no clamping); (…, 3, H, W)."""
    y = y - torch.tensor([0.0, 128 / 255, 128 / 255]).to(y)[:, None, None]
    return torch.einsum("ij,...jhw->...ihw", _YCC_TO_RGB.to(y), y)


def dct_matrix(n: int = 8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix C (n, n): C[u, i] = a(u) cos((2i+1)uπ/2n), so D = C B Cᵀ."""
    i = torch.arange(n, dtype=torch.float64)
    C = torch.cos((2 * i[None, :] + 1) * i[:, None] * math.pi / (2 * n)) * math.sqrt(2 / n)
    C[0] /= math.sqrt(2)
    return C.to(dtype)


def blockify(x: torch.Tensor) -> torch.Tensor:
    """(n, H, W) -> (n, H/8, W/8, 8, 8) non-overlapping 8×8 blocks, raster order."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] % 8 or x.shape[-2] % 8:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"channel must have shape (n, H, W) with H and W multiples of 8; got {shape}")
    n, h, w = x.shape
    return x.reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def deblockify(blocks: torch.Tensor) -> torch.Tensor:
    """(n, H/8, W/8, 8, 8) -> (n, H, W); the inverse of ``blockify``."""
    if blocks.ndim != 5 or blocks.shape[-2:] != (8, 8):
        raise ValueError(f"blocks must have shape (n, H/8, W/8, 8, 8); got {tuple(blocks.shape)}")
    n, bh, bw = blocks.shape[:3]
    return blocks.permute(0, 1, 3, 2, 4).reshape(n, bh * 8, bw * 8)


def block_dct(channel: torch.Tensor) -> torch.Tensor:
    """Eq. (3) without the level shift: (n, H, W) -> (n, H/8, W/8, 8, 8) coefficients C B Cᵀ."""
    C = dct_matrix(8, channel.dtype).to(channel.device)
    return C @ blockify(channel) @ C.T


def block_idct(coefficients: torch.Tensor) -> torch.Tensor:
    """(n, H/8, W/8, 8, 8) -> (n, H, W): Cᵀ D C per block, the inverse of ``block_dct``."""
    C = dct_matrix(8, coefficients.dtype).to(coefficients.device)
    return deblockify(C.T @ coefficients @ C)


def _pad_to_blocks(plane: torch.Tensor) -> torch.Tensor:
    """(n, h, w) -> (n, 8⌈h/8⌉, 8⌈w/8⌉) by edge replication (libjpeg's expand_right/bottom_edge)."""
    h, w = plane.shape[-2:]
    return F.pad(plane[:, None], (0, -w % 8, 0, -h % 8), mode="replicate")[:, 0]


def _encode(x: torch.Tensor, quality: int, subsampling: str):
    """Planes (n, h, w) on 0..255 and their quantized coefficients (n, ⌈h/8⌉, ⌈w/8⌉, 8, 8), per component."""
    x = _check_images(x)
    q = _check_quality(quality)
    check_choice("subsampling", subsampling, SUBSAMPLINGS)
    x = torch.round((x if x.ndim == 4 else x[None]).double() * 255)  # the codec sees 8-bit samples
    if x.shape[1] == 1:
        planes = [x[:, 0]]
    else:
        ycc = torch.round(rgb_to_ycbcr(x / 255) * 255).clamp(0, 255)
        planes = [ycc[:, 0], ycc[:, 1], ycc[:, 2]]
        if subsampling == "4:2:0":  # 2×2 mean over an edge-replicated even-sized plane
            h, w = x.shape[-2:]
            chroma = F.pad(ycc[:, 1:], (0, w % 2, 0, h % 2), mode="replicate")
            chroma = torch.round(F.avg_pool2d(chroma, 2))
            planes[1:] = [chroma[:, 0], chroma[:, 1]]
    tables = [t.double() for t in quantization_tables(q)]
    coefficients = [torch.round(block_dct(_pad_to_blocks(p) - 128) / tables[min(i, 1)])  # Eq. (3)-(4)
                    for i, p in enumerate(planes)]
    return x, [p.shape[-2:] for p in planes], coefficients, tables


def dct_coefficients(x: torch.Tensor, quality: int, subsampling: str = "4:2:0") -> tuple[torch.Tensor, ...]:
    """Quantized integer coefficients round(D / Q), one int64 tensor per component (Y[, Cb, Cr]),
    each (n, ⌈h/8⌉, ⌈w/8⌉, 8, 8) (no n for a single image); 4:2:0 chroma grids are half-size."""
    return tuple(_single(c.long(), x) for c in _encode(x, quality, subsampling)[2])


def zeroed_fraction(x: torch.Tensor, quality: int, subsampling: str = "4:2:0") -> torch.Tensor:
    """(8, 8) fraction of luma blocks (over all images) whose quantized coefficient (u, v) is 0."""
    luma = dct_coefficients(x, quality, subsampling)[0]
    return (luma == 0).reshape(-1, 8, 8).float().mean(0)


def simulate_jpeg(x: torch.Tensor, quality: int, subsampling: str = "4:2:0",
                  upsampling: str = "bilinear") -> torch.Tensor:
    """Torch JPEG encode + decode of (3|1, H, W) or (n, 3|1, H, W) images in [0, 1]; same shape out.

    For teaching and fast augmentation only (not differentiable: samples are rounded); every
    evaluation uses ``jpeg_roundtrip``. ``upsampling`` of 4:2:0 chroma: "bilinear" (= libjpeg-turbo's
    fancy triangle filter, the default) or "nearest".
    """
    check_choice("upsampling", upsampling, UPSAMPLINGS)
    x64, sizes, coefficients, tables = _encode(x, quality, subsampling)
    h, w = x64.shape[-2:]
    planes = []
    for i, (c, (ph, pw)) in enumerate(zip(coefficients, sizes)):
        plane = torch.round(block_idct(c * tables[min(i, 1)]) + 128).clamp(0, 255)[:, :ph, :pw]
        if (ph, pw) != (h, w):  # 4:2:0 chroma back to full size, edges clamped, then cropped
            plane = F.interpolate(plane[:, None], scale_factor=2, mode=upsampling,
                                  **({"align_corners": False} if upsampling == "bilinear" else {}))
            plane = torch.round(plane[:, 0, :h, :w])
        planes.append(plane)
    out = torch.stack(planes, 1) / 255
    if len(planes) == 3:
        out = torch.round(ycbcr_to_rgb(out) * 255) / 255
    return _single(out.clamp(0, 1).to(x.dtype), x)


def _pillow_jpeg(array: np.ndarray, quality: int, subsampling: str) -> io.BytesIO:
    """Encode one (H, W[, 3]) uint8 array with Pillow, baseline, no Huffman optimization; rewound."""
    from PIL import Image
    q, sub = _check_quality(quality), check_choice("subsampling", subsampling, SUBSAMPLINGS)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=q, subsampling=0 if sub == "4:4:4" else 2,
                                optimize=False)
    buffer.seek(0)
    return buffer


def jpeg_roundtrip(x: torch.Tensor, quality: int, subsampling: str = "4:2:0") -> tuple[torch.Tensor, torch.Tensor]:
    """Real codec: Pillow/libjpeg encode (optimize=False) and decode each image.

    Returns (x_hat, num_bytes): x_hat like ``x`` (values k/255), num_bytes int64 (n,) (0-d for a
    single image), the whole file size including headers and tables.
    """
    from PIL import Image
    x = _check_images(x)
    arrays = torch.round((x if x.ndim == 4 else x[None]).detach().double().cpu() * 255)
    outs, sizes = [], []
    for array in arrays.to(torch.uint8).permute(0, 2, 3, 1).numpy():  # (H, W, c); c = 1 saved as "L"
        buffer = _pillow_jpeg(array[..., 0] if array.shape[-1] == 1 else array, quality, subsampling)
        sizes.append(len(buffer.getvalue()))
        outs.append(torch.from_numpy(np.asarray(Image.open(buffer)).reshape(array.shape).copy()))
    out = (torch.stack(outs).permute(0, 3, 1, 2).to(x.dtype) / 255).to(x.device)
    return _single(out, x), _single(torch.tensor(sizes, dtype=torch.int64), x)


def bits_per_pixel(num_bytes, height: int, width: int) -> torch.Tensor:
    """8 · bytes / (H · W), elementwise over an int, a list or a tensor of byte counts."""
    return torch.as_tensor(num_bytes, dtype=torch.float64) * 8 / (height * width)


def pillow_tables(quality: int, subsampling: str = "4:2:0") -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's written tables ``Image.open(buf).quantization`` as (luma, chroma) (8, 8) float tensors,
    read in list order (natural row-major on Pillow 13; the tests check it)."""
    from PIL import Image
    tables = Image.open(_pillow_jpeg(np.full((16, 16, 3), 128, np.uint8), quality, subsampling)).quantization
    return tuple(torch.tensor(list(tables[k]), dtype=torch.float32).reshape(8, 8) for k in (0, 1))


def psnr(x: torch.Tensor, y: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image: (n,) for (n, c, H, W), 0-d for (c, H, W); inf where x == y."""
    if _check_images(x, "x").shape != _check_images(y, "y").shape:
        raise ValueError(f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = ((x.double() - y.double()) ** 2).flatten(-3).mean(-1)
    return (10 * torch.log10(max_value ** 2 / mse)).float()


def _luma_steps(x: torch.Tensor):
    """Luma (n, H, W) on [0, 1]; its |horizontal| and |vertical| neighbour steps; and masks of the
    steps that cross an 8-pixel block boundary (the JPEG grid starts at the top-left pixel)."""
    x = (_check_images(x) if x.ndim == 4 else _check_images(x)[None]).double()
    luma = x[:, 0] if x.shape[1] == 1 else rgb_to_ycbcr(x)[:, 0]
    dh, dv = (luma[..., 1:] - luma[..., :-1]).abs(), (luma[:, 1:] - luma[:, :-1]).abs()
    on_h, on_v = (torch.arange(s - 1, device=x.device) % 8 == 7 for s in (luma.shape[2], luma.shape[1]))
    return luma, dh, dv, on_h, on_v


def blocking_effect_factor(x: torch.Tensor) -> torch.Tensor:
    """BEF of Yim & Bovik (2011), Eq. (6), on each image's luma ([0, 1] scale); (n,) or 0-d."""
    luma, dh, dv, on_h, on_v = _luma_steps(x)
    h, w = luma.shape[1:]
    d_b = (dh[..., on_h] ** 2).flatten(1).sum(1) + (dv[:, on_v] ** 2).flatten(1).sum(1)
    d_c = (dh[..., ~on_h] ** 2).flatten(1).sum(1) + (dv[:, ~on_v] ** 2).flatten(1).sum(1)
    n_b = h * int(on_h.sum()) + w * int(on_v.sum())
    n_c = h * (w - 1) + w * (h - 1) - n_b
    diff = d_b / max(n_b, 1) - d_c / max(n_c, 1)
    return _single((math.log2(8) / math.log2(min(h, w)) * diff.clamp(min=0)).float(), x)


def psnr_b(x: torch.Tensor, y: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Eq. (6): PSNR-B of the distorted ``y`` against the reference ``x``, on luma, dB; (n,) or 0-d."""
    if _check_images(x, "x").shape != _check_images(y, "y").shape:
        raise ValueError(f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = ((_luma_steps(x)[0] - _luma_steps(y)[0]) ** 2).flatten(1).mean(1).float()
    bef = blocking_effect_factor(y if y.ndim == 4 else y[None])
    return _single(10 * torch.log10(max_value ** 2 / (mse + bef)), y)


def blockiness(x: torch.Tensor) -> torch.Tensor:
    """Mean |luma step| across 8×8 block boundaries minus the mean inside blocks, in grey levels
    (0..255): about 0 for natural images, positive for a visible grid. (n,) or 0-d."""
    _, dh, dv, on_h, on_v = _luma_steps(x)
    on = torch.cat([dh[..., on_h].flatten(1), dv[:, on_v].flatten(1)], 1)
    off = torch.cat([dh[..., ~on_h].flatten(1), dv[:, ~on_v].flatten(1)], 1)
    if on.shape[1] == 0:
        raise ValueError(f"x must be at least 9 pixels high or wide to have a block boundary; got {tuple(x.shape)}")
    return _single((on.mean(1) - off.mean(1)).float() * 255, x)


def blockiness_map(x: torch.Tensor) -> torch.Tensor:
    """Per-block map (n, ⌊H/8⌋, ⌊W/8⌋), no n for one image: the block's mean |luma step| across its
    edges shared with other blocks minus its mean interior step, grey levels. For an overlay,
    ``m.repeat_interleave(8, -1).repeat_interleave(8, -2)``."""
    luma = _luma_steps(x)[0] * 255
    bh, bw = luma.shape[1] // 8, luma.shape[2] // 8
    if bh * bw < 2:
        raise ValueError(f"x must hold at least two whole 8×8 blocks; got {tuple(x.shape)}")
    blocks = blockify(luma[:, :bh * 8, :bw * 8])  # (n, bh, bw, 8, 8)
    inside = torch.cat([(blocks[..., 1:] - blocks[..., :-1]).abs().flatten(-2),
                        (blocks[..., 1:, :] - blocks[..., :-1, :]).abs().flatten(-2)], -1).mean(-1)
    across_v = (blocks[:, :, 1:, :, 0] - blocks[:, :, :-1, :, 7]).abs().mean(-1)  # (n, bh, bw-1)
    across_h = (blocks[:, 1:, :, 0, :] - blocks[:, :-1, :, 7, :]).abs().mean(-1)  # (n, bh-1, bw)
    sides = [(across_v, (1, 0)), (across_v, (0, 1)), (across_h, (0, 0, 1, 0)), (across_h, (0, 0, 0, 1))]
    total = sum(F.pad(t, pad) for t, pad in sides)
    count = sum(F.pad(torch.ones_like(t), pad) for t, pad in sides)
    return _single((total / count - inside).float(), x)


def _task_output(task_model: nn.Module, images: torch.Tensor, target: str) -> torch.Tensor:
    return task_model.features(images) if target == "features" else task_model(images)


def task_targeted_loss(task_model: nn.Module, corrector: nn.Module, clean: torch.Tensor,
                       compressed: torch.Tensor, quality_tables: torch.Tensor | None = None,
                       pixel_weight: float = 0.0, target: str = "logits") -> torch.Tensor:
    """Eq. (5), a 0-d loss: mean L1 between f(clean) (no_grad) and f(clamp(C(compressed, tables), 0, 1)).

    ``clean``, ``compressed``: float (n, 3, H, W) in [0, 1], the same shape (``compressed`` from
    ``jpeg_roundtrip``, say); any H, W: the codec pads to whole 8×8 blocks itself, so only the two
    networks must accept the size. ``quality_tables``: (n, 128) from ``table_features`` or None.
    ``corrector(compressed, quality_tables)`` returns (n, 3, H, W); an image-only module ``net`` fits
    as ``lambda images, tables: net(images)``. ``task_model`` is any classifier or other network
    (an unmodified torchvision ``resnet18`` works) fed [0, 1] images: put its input normalisation
    inside it (``nn.Sequential(Normalize(mean, std), net)``). ``target``: "logits" (f = task_model),
    "features" (f = task_model.features, a method the task model must expose) or "probabilities"
    (KL(softmax target ‖ softmax prediction), batch mean, instead of L1). ``pixel_weight`` λ adds
    λ · L1(corrected, clean). The task model must be frozen (``.eval().requires_grad_(False)``);
    gradients still flow through it into the corrector.
    """
    check_choice("target", target, TTAC_TARGETS)
    check_range("pixel_weight", float(pixel_weight), 0.0)
    if any(m.training for m in task_model.modules()) or any(p.requires_grad for p in task_model.parameters()):
        raise ValueError("task_model must be frozen: call .eval() and requires_grad_(False)")
    if target == "features" and not callable(getattr(task_model, "features", None)):
        raise ValueError("target='features' needs task_model.features(x); this task model has no such method")
    for name, x in (("clean", clean), ("compressed", compressed)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape != clean.shape or not x.is_floating_point():
            raise ValueError(f"clean and compressed must be float images (n, c, H, W) of one shape; {name} is "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    with torch.no_grad():
        wanted = _task_output(task_model, clean, target)
    corrected = corrector(compressed, quality_tables).clamp(0, 1)
    got = _task_output(task_model, corrected, target)  # no no_grad: gradients reach the corrector
    if target == "probabilities":
        loss = F.kl_div(F.log_softmax(got, -1), F.log_softmax(wanted, -1), log_target=True, reduction="batchmean")
    else:
        loss = (got - wanted).abs().mean()
    if pixel_weight > 0:
        loss = loss + pixel_weight * (corrected - clean).abs().mean()
    return loss


def pixel_loss(corrector: nn.Module, clean: torch.Tensor, compressed: torch.Tensor,
               tables: torch.Tensor | None = None) -> torch.Tensor:
    """L_pix: mean L1 between corrector(compressed, tables) and clean; adds no clamp of its own (unlike
    ``task_targeted_loss``), so a corrector whose output is unbounded gets gradients everywhere."""
    return (corrector(compressed, tables) - clean).abs().mean()
