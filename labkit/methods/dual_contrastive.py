r"""Dual Contrastive Loss and Attention for GANs.

Ning Yu, Guilin Liu, Aysegul Dundar, Andrew Tao, Bryan Catanzaro, Larry S. Davis, Mario Fritz.
ICCV 2021, arXiv 2103.16748. The official repository (``ningyu1991/AttentionDualContrastGAN``)
holds no code; everything below the loss equations is our reconstruction.

**The idea.** The discriminator's per-image real/fake decision becomes two batch-level softmax
classifications: each real image against all fakes of the batch, and (the "dual" term, logits
negated) each fake against all reals. The generator gets a SAGAN-style self-attention block, and
the discriminator a *reference attention* block in which the image being judged attends to an
independent, always-real reference image encoded by the same (Siamese) trunk. Together they
improve StyleGAN2's FID by at least 17.5 % on several benchmarks (abstract).

**Equations** (numbered here in the spec's order; the paper's own numbers are unverified).
$D(\cdot)$ is D's scalar logit, $x_j$ reals, $G(z_j)$ fakes, $j = 1..N$ (equal counts).

- (1) $\mathcal L^D_{\rm real} = \mathbb E_x\big[\log\frac{e^{D(x)}}{e^{D(x)}+\sum_j e^{D(G(z_j))}}\big]$
- (2) $\mathcal L^D_{\rm fake} = \mathbb E_z\big[\log\frac{e^{-D(G(z))}}{e^{-D(G(z))}+\sum_j e^{-D(x_j)}}\big]$;
  D minimizes $-(\mathcal L^D_{\rm real}+\mathcal L^D_{\rm fake})$ (``dual_contrastive_d_loss``).
- (3), (4) $\mathcal L^G_{\rm real}$, $\mathcal L^G_{\rm fake}$: (1) and (2) with reals and fakes
  swapped; G minimizes $-(\mathcal L^G_{\rm real}+\mathcal L^G_{\rm fake})$ (``dual_contrastive_g_loss``).
- (5) self-attention: $\beta_{j,i} = \mathrm{softmax}_i(q_j^\top k_i)$, $y = h + \gamma W_o \sum_i \beta_{j,i} v_i$
  with $q = W_q h$, $k = W_k h$, $v = W_v h$ (``SelfAttention2d``).
- (6) reference attention: $y = \phi(x^p) + \gamma W_o\,\mathrm{softmax}(q^\top k)\,v$ with
  $q = W_q\phi(x^p)$, $k = W_k\phi(x^r)$, $v = W_v\phi(x^r)$ (``ReferenceAttention2d``).

Each of (1)-(4) is ``-contrastive_term(anchors, negatives)``: the mean over anchors of the
$(N{+}1)$-way cross-entropy whose row is [anchor, all negatives] with target 0. Hence
``dual_contrastive_g_loss(real, fake) == dual_contrastive_d_loss(fake, real)`` exactly: G's loss
*is* D's helper called in the swapped order (D calls it as (real, fake), G as (fake, real)). The
bug of stylegan2-pytorch issue #289 is calling it for G in D's order, which makes G minimize the
very loss D minimizes. Identities (tested): all logits equal gives $2\log(N+1)$ for both losses;
a common shift of all logits changes nothing; at $N = 1$ the D loss is
$2\,\mathrm{softplus}(D(G(z)) - D(x))$ and the G loss $2\,\mathrm{softplus}(D(x) - D(G(z)))$
(each term is the relativistic pairing loss $-\log\sigma(\cdot)$).

| symbol | variable |
|---|---|
| $D(x_j)$, $D(G(z_j))$ | ``real_logits``, ``fake_logits``, shape (N,) |
| $-\mathcal L$ of one term | ``contrastive_term(anchor_logits, negative_logits)`` |
| $h$, $\phi(x^p)$, $\phi(x^r)$ | ``h``, ``primary_features``, ``reference_features``, (n, C, H, W) |
| $W_q, W_k, W_v, W_o$ | ``query``, ``key``, ``value``, ``out`` (1×1 convs; q, k to C/8) |
| $\beta$ | ``attention_map(...)``, (n, HW_query, HW_key), rows sum to 1 |
| $\gamma$ | ``gamma`` (a 0-d parameter, initialised to 0) |
| $\phi$ | ``ReferenceDiscriminator.trunk`` (shared by both streams) |

**Deviations and readings.** Queries come from the primary image and keys *and* values from the
reference: our reading of the spec, *unverified* against the paper's Fig. 4 (the swapped variant, an
optional extra of the spec, is not run). No $1/\sqrt{d}$ scaling inside the softmax, as in SAGAN.
``temperature`` (default 1, the paper's form) divides the logits, for the spec's optional
temperature sweep (not run in this chapter). ``r1_penalty`` returns the unweighted mean
$\|\nabla_x D(x)\|^2$; its weight (StyleGAN2 uses $\gamma/2$) belongs to the experiment. At our
scale the nets are small CNNs on 16²–32² images.

**On your own discriminator.** ``dual_contrastive_losses(D, real, fake)`` takes any ``nn.Module``
that maps images (N, c, H, W) to logits (N,) or (N, 1) (a torchvision ``resnet18(num_classes=1)``,
say) and equal-sized real and fake batches, and returns (D loss, G loss) on D's logits; detach
``fake`` for the D step, as with any GAN loss. ``discriminator_logits(D, images)`` gives the (N,)
logits alone (for ``r1_penalty``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labkit.config import check_positive_float, check_positive_int

__all__ = [
    "contrastive_term", "dual_contrastive_d_loss", "dual_contrastive_g_loss",
    "nonsaturating_d_loss", "nonsaturating_g_loss", "hinge_d_loss", "hinge_g_loss", "GAN_LOSSES",
    "discriminator_logits", "dual_contrastive_losses",
    "r1_penalty", "SelfAttention2d", "ReferenceAttention2d", "ReferenceDiscriminator",
]


def _check_logits(name: str, logits: object) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 1 or not logits.is_floating_point():
        what = (f"a {logits.dtype} tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
                else type(logits).__name__)
        raise ValueError(f"{name} must be a 1-D float tensor of D's logits, shape (N,); got {what}")
    if logits.numel() == 0:
        raise ValueError(f"{name} is empty; it needs at least one logit")
    return logits


def _check_pair(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
    _check_logits("real_logits", real_logits)
    _check_logits("fake_logits", fake_logits)
    if real_logits.shape != fake_logits.shape:
        raise ValueError(f"real_logits has {real_logits.numel()} entries and fake_logits {fake_logits.numel()}; "
                         "the dual contrastive loss keeps real and fake counts equal")


def contrastive_term(anchor_logits: torch.Tensor, negative_logits: torch.Tensor, *,
                     temperature: float = 1.0) -> torch.Tensor:
    r"""$-\frac1N\sum_i\log\frac{e^{a_i}}{e^{a_i}+\sum_j e^{n_j}}$ for anchors (N,) and negatives (M,).

    Each anchor's row [a_i, n_1..n_M] goes through ``cross_entropy`` with target 0 (log-sum-exp
    inside, so logits of any size stay finite). Only the opposite class sits in the denominator.
    """
    _check_logits("anchor_logits", anchor_logits)
    _check_logits("negative_logits", negative_logits)
    temperature = check_positive_float("temperature", temperature)
    rows = torch.cat([anchor_logits[:, None], negative_logits[None, :].expand(len(anchor_logits), -1)], dim=1)
    target = torch.zeros(len(anchor_logits), dtype=torch.long, device=rows.device)
    return F.cross_entropy(rows / temperature, target)  # (N, M+1) -> mean over anchors


def dual_contrastive_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, *,
                            temperature: float = 1.0) -> torch.Tensor:
    r"""$-(\mathcal L^D_{\rm real} + \mathcal L^D_{\rm fake})$, Eqs. (1)-(2); logits (N,) each; 0-d."""
    _check_pair(real_logits, fake_logits)
    # Eq. (1): each real beats every fake. Eq. (2): negated, so "fake-ness" is the positive class.
    return (contrastive_term(real_logits, fake_logits, temperature=temperature)
            + contrastive_term(-fake_logits, -real_logits, temperature=temperature))


def dual_contrastive_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, *,
                            temperature: float = 1.0) -> torch.Tensor:
    r"""$-(\mathcal L^G_{\rm real} + \mathcal L^G_{\rm fake})$, Eqs. (3)-(4); logits (N,) each; 0-d.

    Arguments in the same (real, fake) order as the D loss; the swap happens here (issue #289).
    """
    _check_pair(real_logits, fake_logits)
    # Eq. (3): each fake must beat every real. Eq. (4): each real's negated logit beats all fakes'.
    return (contrastive_term(fake_logits, real_logits, temperature=temperature)
            + contrastive_term(-real_logits, -fake_logits, temperature=temperature))


def _check_image_batch(name: str, images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point() or not len(images):
        what = (f"a {images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                else type(images).__name__)
        raise ValueError(f"{name} must be a non-empty float image batch (N, c, H, W); got {what}")
    return images


def discriminator_logits(D: nn.Module, images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """D's logits (N,) for images (N, c, H, W); D may return (N,) or (N, 1), anything else is refused."""
    if not callable(D):
        raise TypeError(f"D must be an nn.Module (or callable) mapping images to logits; got {type(D).__name__}")
    _check_image_batch(name, images)
    logits = D(images)
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits.squeeze(1)  # (N, 1), e.g. a classifier built with one output
    if not isinstance(logits, torch.Tensor) or logits.shape != (len(images),):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"D must map {name} {tuple(images.shape)} to logits of shape ({len(images)},) or "
                         f"({len(images)}, 1); got {got}")
    return logits


def dual_contrastive_losses(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, *,
                            temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(D loss, G loss), Eqs. (1)-(4), 0-d each, for any discriminator ``D`` on images.

    ``real`` and ``fake``: (N, c, H, W) batches of the same size N, in whatever range and
    normalisation D expects. D runs once on each batch (separately, so a BatchNorm in D sees reals
    and fakes apart); the losses are ``dual_contrastive_d_loss`` and ``dual_contrastive_g_loss`` on
    those logits. Both carry gradients into D and, through ``fake``, into G: pass ``fake.detach()``
    for the D step and step only G's optimizer with the G loss.
    """
    _check_image_batch("real", real)
    _check_image_batch("fake", fake)
    if len(real) != len(fake):
        raise ValueError(f"real holds {len(real)} images and fake {len(fake)}; the dual contrastive loss "
                         "keeps real and fake counts equal")
    real_logits, fake_logits = discriminator_logits(D, real, "real"), discriminator_logits(D, fake, "fake")
    return (dual_contrastive_d_loss(real_logits, fake_logits, temperature=temperature),
            dual_contrastive_g_loss(real_logits, fake_logits, temperature=temperature))


def _check_baseline(real_logits: torch.Tensor | None, fake_logits: torch.Tensor, need_real: bool) -> None:
    if need_real or real_logits is not None:
        _check_logits("real_logits", real_logits)
    _check_logits("fake_logits", fake_logits)


def nonsaturating_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""StyleGAN2's D loss $\mathbb E[\mathrm{softplus}(-D(x))] + \mathbb E[\mathrm{softplus}(D(G(z)))]$."""
    _check_baseline(real_logits, fake_logits, True)
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def nonsaturating_g_loss(real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""$\mathbb E[\mathrm{softplus}(-D(G(z)))]$; ``real_logits`` is unused (may be None)."""
    _check_baseline(real_logits, fake_logits, False)
    return F.softplus(-fake_logits).mean()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""$\mathbb E[\max(0, 1 - D(x))] + \mathbb E[\max(0, 1 + D(G(z)))]$."""
    _check_baseline(real_logits, fake_logits, True)
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""$-\mathbb E[D(G(z))]$; ``real_logits`` is unused (may be None)."""
    _check_baseline(real_logits, fake_logits, False)
    return -fake_logits.mean()


GAN_LOSSES = {
    "ns": (nonsaturating_d_loss, nonsaturating_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
    "dcl": (dual_contrastive_d_loss, dual_contrastive_g_loss),
}


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    r"""$\frac1n\sum_i\|\nabla_{x_i} D(x_i)\|^2$ for images (n, ...) and their logits (n,); 0-d.

    ``real_images`` must have ``requires_grad=True`` before D sees them. The graph is kept
    (``create_graph=True``) so the penalty trains D. Zero when the logits ignore the images.
    """
    if not isinstance(real_images, torch.Tensor) or real_images.ndim < 2 or not real_images.requires_grad:
        raise ValueError("real_images must be a batch tensor (n, ...) with requires_grad=True, set before "
                         "D is applied to it (real_images.requires_grad_(True))")
    _check_logits("real_logits", real_logits)
    if len(real_logits) != len(real_images):
        raise ValueError(f"real_logits has {len(real_logits)} entries but real_images holds {len(real_images)} images")
    zero = real_images.new_zeros(())
    if not real_logits.requires_grad:
        return zero
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True, allow_unused=True)
    if grad is None:
        return zero
    return grad.pow(2).flatten(1).sum(1).mean()  # each logit depends only on its own image


def _check_features(name: str, features: object, channels: int) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.ndim != 4 or features.shape[1] != channels:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a feature map of shape (n, {channels}, H, W); got {shape}")
    return features


class _DotProductAttention2d(nn.Module):
    """Queries from one map, keys and values from another; Eqs. (5)-(6) share this body."""

    def __init__(self, channels: int, key_channels: int | None = None):
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        key_channels = max(1, channels // 8) if key_channels is None else key_channels
        self.key_channels = check_positive_int("key_channels", key_channels)
        self.query = nn.Conv2d(channels, self.key_channels, 1)
        self.key = nn.Conv2d(channels, self.key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))  # 0 at init: the block starts as the identity

    def _map(self, query_features: torch.Tensor, key_features: torch.Tensor) -> torch.Tensor:
        q = self.query(query_features).flatten(2)  # (n, d, HW_q)
        k = self.key(key_features).flatten(2)  # (n, d, HW_k)
        return torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (n, HW_q, HW_k): beta_{j,i}, softmax over i

    def _attend(self, query_features: torch.Tensor, key_features: torch.Tensor) -> torch.Tensor:
        beta = self._map(query_features, key_features)  # (n, HW_q, HW_k)
        v = self.value(key_features).flatten(2)  # (n, C, HW_k)
        mixed = (v @ beta.transpose(1, 2)).view_as(query_features)  # sum_i beta_{j,i} v_i: (n, C, H_q, W_q)
        return query_features + self.gamma * self.out(mixed)


class SelfAttention2d(_DotProductAttention2d):
    r"""SAGAN self-attention, Eq. (5): ``forward(h)`` maps (n, C, H, W) to the same shape."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        _check_features("h", h, self.channels)
        return self._attend(h, h)

    def attention_map(self, h: torch.Tensor) -> torch.Tensor:
        """(n, HW, HW): row j holds query position j's weights over all key positions (row-major)."""
        _check_features("h", h, self.channels)
        return self._map(h, h)


class ReferenceAttention2d(_DotProductAttention2d):
    r"""Reference attention, Eq. (6): the primary map (n, C, Hp, Wp) attends to the reference
    map (n, C, Hr, Wr). Queries from the primary, keys and values from the reference only: our
    reading, unverified against the paper's Fig. 4. Returns (n, C, Hp, Wp)."""

    def _check(self, primary_features, reference_features) -> None:
        _check_features("primary_features", primary_features, self.channels)
        _check_features("reference_features", reference_features, self.channels)
        if len(primary_features) != len(reference_features):
            raise ValueError(f"primary_features holds {len(primary_features)} maps and reference_features "
                             f"{len(reference_features)}; each primary image needs its own reference")

    def forward(self, primary_features: torch.Tensor, reference_features: torch.Tensor) -> torch.Tensor:
        self._check(primary_features, reference_features)
        return self._attend(primary_features, reference_features)

    def attention_map(self, primary_features: torch.Tensor, reference_features: torch.Tensor) -> torch.Tensor:
        """(n, HW_p, HW_r): row j holds primary position j's weights over reference positions."""
        self._check(primary_features, reference_features)
        return self._map(primary_features, reference_features)


class ReferenceDiscriminator(nn.Module):
    r"""$D(x^p, x^r)$ = head(ReferenceAttention2d($\phi(x^p)$, $\phi(x^r)$)) with one shared trunk $\phi$.

    ``trunk`` maps images (n, c, H, W) to features (n, ``channels``, h, w); ``head`` maps those to
    logits (n,) or (n, 1). The reference must be a real image drawn independently of the primary;
    R1 applies to the primary only.
    """

    def __init__(self, trunk: nn.Module, head: nn.Module, channels: int, key_channels: int | None = None):
        super().__init__()
        for name, module in (("trunk", trunk), ("head", head)):
            if not isinstance(module, nn.Module):
                raise ValueError(f"{name} must be an nn.Module; got {type(module).__name__}")
        self.trunk, self.head = trunk, head
        self.attention = ReferenceAttention2d(channels, key_channels)

    def forward(self, primary: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Logits (n,) for the primary images (n, c, H, W), each judged against its reference."""
        # The same module on both streams: the Siamese trunk shares every weight.
        logits = self.head(self.attention(self.trunk(primary), self.trunk(reference)))
        if logits.ndim == 2 and logits.shape[1] == 1:
            logits = logits.squeeze(1)
        if logits.shape != (len(primary),):
            raise ValueError(f"head must return logits of shape (n,) or (n, 1); got {tuple(logits.shape)}")
        return logits

    def attention_map(self, primary: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(n, HW_p, HW_r) reference-attention weights at the trunk's output resolution."""
        return self.attention.attention_map(self.trunk(primary), self.trunk(reference))
