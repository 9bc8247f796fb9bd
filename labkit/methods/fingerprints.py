r"""Responsible Disclosure of Generative Models Using Scalable Fingerprinting.

Ning Yu\*, Vladislav Skripniuk\*, Dingfan Chen, Larry S. Davis, Mario Fritz. ICLR 2022 (spotlight),
arXiv 2012.08726. Official code: ``ningyu1991/ScalableGANFingerprints`` (TF 1, StyleGAN2; it calls
the fingerprint a "watermark").

**Idea.** One generator takes a second input, a $d_c$-bit fingerprint $c$, that modulates every
convolution's weights; a decoder $F$ trained with it recovers the bits from any generated image.
Fixing $c$ and folding its modulation into the weights gives a stand-alone model without
retraining, so one training run yields $2^{d_c}$ distinct, attributable models. Detection is a
binomial test on the matching bits; attribution picks the registered fingerprint nearest in
Hamming distance.

**Equations** (the official code's form; the paper body was not available to us).

- Content and style swap roles against StyleGAN2: $z\sim\mathcal N(0, I_{d_z})$ goes through one
  dense layer to the 4×4 input; $c\in\{0,1\}^{d_c}$ goes through the mapping MLP $E_c$ (no input
  normalization) to $w_c$, broadcast to every layer.
- (1) styles per layer: $s^l = A_l(w_c) + 1$, one scale per input channel.
- (2) modulation: $\tilde W_{o,i,k} = s_i W_{o,i,k}$.
- (3) demodulation: $\hat W_{o,i,k} = \tilde W_{o,i,k} / \sqrt{\sum_{i,k}\tilde W_{o,i,k}^2 + 10^{-8}}$;
  toRGB is modulated but not demodulated.
- (4) $F(x) = (\hat z, \ell)$: latent reconstruction and fingerprint logits, a network separate from D.
- (5) $\min_{G,F}\ \mathbb E\,\mathrm{softplus}(-D(G(z,c))) + \lambda_z\tfrac1{d_z}\|z-\hat z\|^2
  + \lambda_c\tfrac1{d_c}\sum_k \mathrm{BCE}(\ell_k, c_k) + \lambda_{\text{const}}\tfrac1{|x|}\|G(z,c)-G(z,c')\|^2$,
  $\lambda = 1, 1, 2, 2$, with the *same* $z$ and an independent $c'$ in the last term.
- (6) D: $\mathrm{softplus}(D(G(z,c))) + \mathrm{softplus}(-D(x)) + \tfrac\gamma2\|\nabla_x D(x)\|^2$ (R1).
- (7) decoding $\hat c_k = \mathbb 1[\ell_k > 0]$; detection rejects "not from this model" when the
  matches $m = \sum_k \mathbb 1[\hat c_k = c_k]$ reach $m^*$, the least $m$ with
  $P(\mathrm{Bin}(d_c, \tfrac12) \ge m) \le \alpha$ (Bonferroni $\alpha/K$ against $K$ models).

| symbol | variable |
|---|---|
| $z$, $d_z$ | `z` `(n, latent_dim)` |
| $c$, $c'$, $d_c$ | `c`, `c_prime` `(n, fingerprint_dim)`, values in {0, 1} |
| $w_c$ | `FingerprintedGenerator.mapping(c)` `(n, style_dim)` |
| $A_l$, $s^l$ | `ModulatedConv2d.affine`, `ModulatedConv2d.styles(w)` `(n, in)` |
| $W$, $\hat W$ | `ModulatedConv2d.weight`, `ModulatedConv2d.folded_weight(w)` |
| $\hat z$, $\ell$ | `FingerprintDecoder(x)` → `(z_hat, logits)` |
| $\lambda_1, \lambda_z, \lambda_c, \lambda_{\text{const}}$ | `LOSS_WEIGHTS` |
| $m^*$ | `detection_threshold(d_c, alpha)` |

**Non-fused modulation.** Eq. (2)–(3) per sample would need a grouped conv with one weight per
image. Instead we scale the input channels by $s$, run one shared conv, and multiply each output
channel by $d_o = (\sum_i s_i^2\sum_k W_{o,i,k}^2 + 10^{-8})^{-1/2}$: the same function, much
faster on CPU. ``bake`` folds it back into plain weights for one fixed $c$.

**Our deviations at this scale.** 16² digits instead of 128² faces; $d_z = 32$, a 2-layer mapping
MLP of width 64 at the full learning rate (the code: 8 layers of 512 at lr × 0.01); three 3×3
convs at 4², 8², 16² with nearest upsampling and a 1×1 toRGB, 32 channels; no per-pixel noise
inputs (so $G$ is a function of $(z, c)$ and baking stays exact), no path-length regularizer. D
and F are ``labkit.models.toy_gan``'s discriminator (F with a wider last layer).

**As a drop-in layer in your own network.** ``fingerprint_convs(net, ["layer1.0.conv1"], d_c)``
swaps named ``nn.Conv2d``s of any network (a torchvision resnet, your generator) in place for
``FingerprintedConv2d``s: the same weights, stride, padding and dilation, modulated by Eq. (1)–(3).
``set_fingerprint(net, c)`` gives every swapped layer the bits ``c (n, d_c)`` (or ``(1, d_c)`` for
the whole batch), after which the unmodified ``net(x)`` runs; ``bake_fingerprint(net, c)`` returns
a copy with plain ``nn.Conv2d``s in their place. Each drop-in's affine maps the bits straight to its
styles (no shared mapping MLP $E_c$), and, Eq. (3) normalising every filter, a swapped layer is not
the original conv's function: train or fine-tune the network with it, as the paper trains G.
"""
from __future__ import annotations

import copy
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from labkit.config import check_choice, check_positive_int, check_range
from labkit.models.toy_gan import ImageDiscriminator

__all__ = ["EMBEDDINGS", "LOSS_WEIGHTS", "RESOLUTIONS", "ModulatedConv2d", "FingerprintedGenerator",
           "BakedGenerator", "bake", "FingerprintedConv2d", "fingerprint_convs", "set_fingerprint", "bake_fingerprint", "FingerprintDecoder", "sample_fingerprints", "check_fingerprints",
           "null_match_probability",
           "generator_losses", "discriminator_loss", "decode_bits", "bit_accuracy", "detection_threshold",
           "detect", "attribute", "hamming_distances"]

#: how the fingerprint enters G: the paper's weight modulation, the spec's ablation (concatenated to
#: z), or not at all (the un-fingerprinted baseline)
EMBEDDINGS = ("modulation", "concat", "none")
#: Eq. (5)'s weights as in the code's ``EG_logistic_ns_pathreg``
LOSS_WEIGHTS = {"adversarial": 1.0, "latent": 1.0, "fingerprint": 2.0, "consistency": 2.0}
RESOLUTIONS = (4, 8, 16)  # where G's 3×3 convs act; toRGB acts at the last
DEMOD_EPS = 1e-8
LEAK = 0.2


def check_fingerprints(c: object, fingerprint_dim: int, name: str = "c") -> torch.Tensor:
    """``c`` as a float tensor ``(n, fingerprint_dim)`` with values in {0, 1}; a clear error otherwise."""
    if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.shape[1] != fingerprint_dim or len(c) == 0:
        shape = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
        raise ValueError(f"{name} must have shape (n, {fingerprint_dim}) with n >= 1; got {shape}")
    if c.is_complex() or not ((c == 0) | (c == 1)).all():
        raise ValueError(f"{name} must hold bits: every value 0 or 1 (got values outside {{0, 1}})")
    return c.float()


def sample_fingerprints(n: int, fingerprint_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, fingerprint_dim)`` i.i.d. Bernoulli(½) bits as floats: a fresh code for every image, as
    the code samples ``(sign(U(-1, 1)) + 1) / 2`` in every step."""
    return torch.randint(0, 2, (check_positive_int("n", n), check_positive_int("fingerprint_dim", fingerprint_dim)),
                         generator=generator).float()


class ModulatedConv2d(nn.Module):
    """A conv whose input channels are scaled by a style, Eq. (1)–(3), in the non-fused form.

    ``forward(x (n, in, h, w), w (n, style_dim))`` → ``(n, out, h, w)``. With ``modulated=False``
    it is a plain conv (``w`` ignored): the layers outside the modulated resolutions. Stride 1 and
    "same" padding unless built by ``from_conv``; ``bias`` is None only then, for a conv without one.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, modulated: bool = True):
        super().__init__()
        self.padding, self.stride, self.dilation = kernel_size // 2, 1, 1
        self.demodulate, self.modulated = bool(demodulate), bool(modulated)
        fan_in = in_channels * kernel_size ** 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(fan_in))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        # normal (not zero) init, as the spec says: with zero weights c has no effect early on
        self.affine = nn.Linear(style_dim, in_channels) if modulated else None
        if self.affine is not None:
            nn.init.normal_(self.affine.weight, 0.0, 1.0 / math.sqrt(style_dim))
            nn.init.zeros_(self.affine.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, style_dim: int, demodulate: bool = True) -> "ModulatedConv2d":
        """A modulated copy of ``conv``: its weight, bias (or none), stride, padding and dilation; a
        fresh ``affine`` from ``style_dim``. Only ``groups=1`` and zero padding are supported."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d; got {type(conv).__name__}")
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"conv must have groups=1 and padding_mode='zeros' to be modulated; got "
                             f"groups={conv.groups}, padding_mode={conv.padding_mode!r}")
        out_channels, in_channels, kh, kw = conv.weight.shape
        layer = cls(in_channels, out_channels, kh, check_positive_int("style_dim", style_dim), demodulate)
        layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        layer.weight = nn.Parameter(conv.weight.detach().clone())  # (out, in, kh, kw): any kernel shape
        layer.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        layer.stride, layer.padding, layer.dilation = conv.stride, conv.padding, conv.dilation
        return layer

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """Eq. (1): ``s = A(w) + 1``, ``(n, in)``."""
        return self.affine(w) + 1.0

    def _demodulation(self, s: torch.Tensor) -> torch.Tensor:
        """Eq. (3)'s per-sample divisor as a factor ``(n, out)``: ``(Σ_i s_i² Σ_k W_oik² + ε)^(-1/2)``."""
        return torch.rsqrt(s.square() @ self.weight.square().sum((2, 3)).t() + DEMOD_EPS)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        if not self.modulated:
            return self._conv(x, self.weight, self.bias)
        s = self.styles(w)  # (n, in)
        y = self._conv(x * s[:, :, None, None], self.weight, None)  # one shared conv
        if self.demodulate:
            y = y * self._demodulation(s)[:, :, None, None]
        return y if self.bias is None else y + self.bias[None, :, None, None]

    def folded_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Eq. (2)–(3) for one style ``w (1, style_dim)``: the plain conv weight ``(out, in, k, k)``."""
        if not self.modulated:
            return self.weight.detach().clone()
        s = self.styles(w)  # (1, in)
        weight = self.weight * s[0][None, :, None, None]
        if self.demodulate:
            weight = weight * self._demodulation(s)[0][:, None, None, None]
        return weight


def _check_resolutions(modulated_resolutions: object) -> tuple[int, ...]:
    try:
        values = tuple(sorted(set(modulated_resolutions)))
    except TypeError:
        raise ValueError(f"modulated_resolutions={modulated_resolutions!r} is not valid; pass a subset of "
                         f"{RESOLUTIONS}") from None
    for value in values:
        check_choice("modulated_resolutions entry", value, RESOLUTIONS)
    if not values:
        raise ValueError(f"modulated_resolutions is empty; choose a non-empty subset of {RESOLUTIONS}")
    return values


class FingerprintedGenerator(nn.Module):
    """``G(z (n, latent_dim), c (n, fingerprint_dim))`` → images ``(n, channels, 16, 16)`` in about [-1, 1].

    ``embedding`` is one of ``EMBEDDINGS``; ``modulated_resolutions`` (a subset of ``RESOLUTIONS``)
    picks the convs that are modulated (the code's ``res_modulated_min/max``); toRGB is modulated
    when 16 is among them. With ``embedding="none"`` the fingerprint is ignored (pass ``c=None``).
    """

    def __init__(self, fingerprint_dim: int = 16, latent_dim: int = 32, width: int = 32, style_dim: int = 64,
                 channels: int = 1, embedding: str = "modulation", modulated_resolutions=RESOLUTIONS):
        super().__init__()
        self.embedding = check_choice("embedding", embedding, EMBEDDINGS)
        self.fingerprint_dim = check_positive_int("fingerprint_dim", fingerprint_dim)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.width = check_positive_int("width", width)
        self.channels = check_positive_int("channels", channels)
        self.modulated_resolutions = _check_resolutions(modulated_resolutions)
        modulate = self.embedding == "modulation"
        stem_in = self.latent_dim + (self.fingerprint_dim if self.embedding == "concat" else 0)
        self.stem = nn.Linear(stem_in, self.width * 16)  # z (and c, when concatenated) → the 4×4 input
        self.mapping = nn.Sequential(  # E_c: no input normalization, as the code
            nn.Linear(self.fingerprint_dim, style_dim), nn.LeakyReLU(LEAK),
            nn.Linear(style_dim, style_dim), nn.LeakyReLU(LEAK)) if modulate else None
        self.convs = nn.ModuleList(
            ModulatedConv2d(self.width, self.width, 3, style_dim,
                            modulated=modulate and resolution in self.modulated_resolutions)
            for resolution in RESOLUTIONS)
        self.to_rgb = ModulatedConv2d(self.width, self.channels, 1, style_dim, demodulate=False,
                                      modulated=modulate and RESOLUTIONS[-1] in self.modulated_resolutions)

    def _check_inputs(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor | None:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (n, {self.latent_dim}); got {shape}")
        if self.embedding == "none":
            return None
        c = check_fingerprints(c, self.fingerprint_dim)
        if len(c) != len(z):
            raise ValueError(f"c has {len(c)} rows but z has {len(z)}; pass one fingerprint per latent")
        return c

    def style(self, c: torch.Tensor | None) -> torch.Tensor | None:
        """``w_c = E_c(c)``, ``(n, style_dim)``; None when c does not modulate."""
        return None if self.mapping is None else self.mapping(c)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        c = self._check_inputs(z, c)
        stem_in = torch.cat([z, c], 1) if self.embedding == "concat" else z
        h = self.stem(stem_in).view(len(z), self.width, 4, 4)
        w = self.style(c)
        for i, conv in enumerate(self.convs):
            if i:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = F.leaky_relu(conv(h, w), LEAK)
        return self.to_rgb(h, w)


class BakedGenerator(nn.Module):
    """``G(·, c)`` for one fixed ``c``: plain conv weights, ``z (n, latent_dim)`` → images, no
    fingerprint input. The weights are buffers (a baked model is shipped, not trained); building one
    allocates no layers, so baking costs only the folding."""

    def __init__(self, stem: tuple[torch.Tensor, torch.Tensor], convs: list[tuple[torch.Tensor, torch.Tensor]],
                 to_rgb: tuple[torch.Tensor, torch.Tensor], width: int):
        super().__init__()
        self.width, self.latent_dim, self.num_convs = width, stem[0].shape[1], len(convs)
        for name, (weight, bias) in [("stem", stem), *((f"conv{i}", conv) for i, conv in enumerate(convs)),
                                     ("to_rgb", to_rgb)]:
            self.register_buffer(f"{name}_weight", weight)
            self.register_buffer(f"{name}_bias", bias)

    def _conv(self, name: str, h: torch.Tensor) -> torch.Tensor:
        weight = getattr(self, f"{name}_weight")
        return F.conv2d(h, weight, getattr(self, f"{name}_bias"), padding=weight.shape[-1] // 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (n, {self.latent_dim}); got {shape}")
        h = F.linear(z, self.stem_weight, self.stem_bias).view(len(z), self.width, 4, 4)
        for i in range(self.num_convs):
            if i:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = F.leaky_relu(self._conv(f"conv{i}", h), LEAK)
        return self._conv("to_rgb", h)


@torch.no_grad()
def bake(G: FingerprintedGenerator, c: torch.Tensor) -> BakedGenerator:
    """Fold one fingerprint ``c`` (``(fingerprint_dim,)`` or ``(1, fingerprint_dim)``) into plain
    weights: an ordinary ``nn.Module`` ``z → G(z, c)``. Modulation folds into the conv weights
    (Eq. 2–3); a concatenated fingerprint folds into the stem's bias."""
    if G.embedding == "none":
        raise ValueError("G has embedding='none': it has no fingerprint to bake; bake a fingerprinted G")
    c = check_fingerprints(c.reshape(1, -1) if isinstance(c, torch.Tensor) else c, G.fingerprint_dim)
    c = c.to(G.stem.weight.device)
    stem_bias = G.stem.bias + (G.stem.weight[:, G.latent_dim:] @ c[0] if G.embedding == "concat" else 0.0)
    stem = (G.stem.weight[:, :G.latent_dim].clone(), stem_bias.clone())
    w = G.style(c)
    convs = [(conv.folded_weight(w).clone(), conv.bias.clone()) for conv in G.convs]
    to_rgb = (G.to_rgb.folded_weight(w).clone(), G.to_rgb.bias.clone())
    return BakedGenerator(stem, convs, to_rgb, G.width).eval()


class FingerprintedConv2d(nn.Module):
    """A drop-in for ``conv``: ``forward(x (n, in, h, w))`` → ``(n, out, h', w')`` as the conv gives,
    modulated (Eq. 1–3, ``w = c``) by the bits set with ``set_fingerprint(c)``. ``self.conv`` is the
    ``ModulatedConv2d`` (``affine``: ``fingerprint_dim`` → ``in`` styles)."""

    def __init__(self, conv: nn.Conv2d, fingerprint_dim: int, demodulate: bool = True):
        super().__init__()
        self.fingerprint_dim = check_positive_int("fingerprint_dim", fingerprint_dim)
        self.conv = ModulatedConv2d.from_conv(conv, self.fingerprint_dim, demodulate)
        self.fingerprint: torch.Tensor | None = None  # an input, not state: kept out of the state_dict

    def set_fingerprint(self, c: torch.Tensor) -> None:
        """Bits ``c (n, fingerprint_dim)``, one row per image of the next batches, or ``(1, d_c)`` for all."""
        self.fingerprint = check_fingerprints(c, self.fingerprint_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fingerprint is None:
            raise RuntimeError("no fingerprint is set: call set_fingerprint(net, c) before net(x)")
        if len(self.fingerprint) not in (1, len(x)):
            raise ValueError(f"the fingerprint set has {len(self.fingerprint)} rows but x holds {len(x)} images; "
                             "set one row per image or a single row for the whole batch")
        return self.conv(x, self.fingerprint.to(self.conv.weight))

    @torch.no_grad()
    def to_conv(self, c: torch.Tensor) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` this layer is for one fingerprint ``c`` ``(d_c,)`` or ``(1, d_c)``."""
        c = check_fingerprints(c.reshape(1, -1) if isinstance(c, torch.Tensor) else c, self.fingerprint_dim)
        m = self.conv
        weight = m.folded_weight(c.to(m.weight))  # Eq. (2)-(3): (out, in, kh, kw)
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=m.stride,
                         padding=m.padding, dilation=m.dilation, bias=m.bias is not None,
                         device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        if m.bias is not None:
            conv.bias.copy_(m.bias)
        return conv


def fingerprint_convs(net: nn.Module, names, fingerprint_dim: int,
                      demodulate: bool = True) -> list[FingerprintedConv2d]:
    """Swap the ``nn.Conv2d``s at ``names`` (as in ``net.named_modules()``) for ``FingerprintedConv2d``s,
    in place; returns the new layers (their ``conv.affine`` is what a fingerprint trains)."""
    names = [names] if isinstance(names, str) else list(names)
    convs = {name for name, module in net.named_modules() if isinstance(module, nn.Conv2d)}
    for name in names:
        if name not in convs:
            raise ValueError(f"names entry {name!r} is not an nn.Conv2d of net; choose from {sorted(convs)[:8]}"
                             f"{' ...' if len(convs) > 8 else ''}")
    layers = []
    for name in names:
        parent, _, child = name.rpartition(".")
        layer = FingerprintedConv2d(net.get_submodule(name), fingerprint_dim, demodulate)
        setattr(net.get_submodule(parent) if parent else net, child, layer)
        layers.append(layer)
    return layers


def _fingerprinted_layers(net: nn.Module) -> list[tuple[str, FingerprintedConv2d]]:
    layers = [(n, m) for n, m in net.named_modules() if isinstance(m, FingerprintedConv2d)]
    if not layers:
        raise ValueError("net has no FingerprintedConv2d; swap some convs in with fingerprint_convs first")
    return layers


def set_fingerprint(net: nn.Module, c: torch.Tensor) -> None:
    """Give every ``FingerprintedConv2d`` in ``net`` the bits ``c`` (n or 1, d_c) for the next ``net(x)``."""
    for _, layer in _fingerprinted_layers(net):
        layer.set_fingerprint(c)


@torch.no_grad()
def bake_fingerprint(net: nn.Module, c: torch.Tensor) -> nn.Module:
    """A copy of ``net`` with every ``FingerprintedConv2d`` folded, for one ``c`` (d_c,) or (1, d_c),
    into a plain ``nn.Conv2d``: an ordinary network whose ``forward(x)`` equals ``net``'s under ``c``."""
    baked = copy.deepcopy(net)
    for name, layer in _fingerprinted_layers(baked):
        parent, _, child = name.rpartition(".")
        setattr(baked.get_submodule(parent) if parent else baked, child, layer.to_conv(c))
    return baked


class FingerprintDecoder(nn.Module):
    """F of Eq. (4): images ``(n, channels, 16, 16)`` → ``(z_hat (n, latent_dim), logits (n, fingerprint_dim))``.

    ``labkit.models.toy_gan``'s discriminator body with a last Linear to ``latent_dim + fingerprint_dim``."""

    def __init__(self, fingerprint_dim: int, latent_dim: int, width: int = 16, channels: int = 1):
        super().__init__()
        self.fingerprint_dim = check_positive_int("fingerprint_dim", fingerprint_dim)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        body = ImageDiscriminator(channels, 16, width)
        self.trunk, self.body = body.trunk, body.head.body
        self.linear = nn.Linear(body.head.num_features, self.latent_dim + self.fingerprint_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.linear(self.body(self.trunk(x)))
        return out[:, :self.latent_dim], out[:, self.latent_dim:]


def generator_losses(G: nn.Module, D: nn.Module, F_net: FingerprintDecoder | None, z: torch.Tensor,
                     c: torch.Tensor | None, c_prime: torch.Tensor | None,
                     weights: dict[str, float] = LOSS_WEIGHTS) -> dict[str, torch.Tensor]:
    """The terms of Eq. (5) and their weighted ``total`` (0-d each). ``c_prime`` goes through G with
    the *same* ``z``: both passes carry gradient (the spec's pitfall is a fresh z there, which turns
    the term into a diversity penalty). Without ``F_net`` (the un-fingerprinted G) only the
    adversarial term is used; a zero weight drops its term's pass entirely."""
    unknown = set(weights) - set(LOSS_WEIGHTS)
    if unknown:
        raise ValueError(f"weights has unknown terms {sorted(unknown)}; choose from {list(LOSS_WEIGHTS)}")
    weights = {**LOSS_WEIGHTS, **weights}
    x = G(z, c)
    terms = {"adversarial": F.softplus(-D(x)).mean()}
    if F_net is not None:
        z_hat, logits = F_net(x)
        terms["latent"] = (z - z_hat).square().mean()  # 1/d_z ||z − ẑ||², averaged over the batch
        terms["fingerprint"] = F.binary_cross_entropy_with_logits(logits, c)  # logits, {0, 1} targets
        if weights["consistency"]:
            terms["consistency"] = (x - G(z, c_prime)).square().mean()  # 1/|x| ||G(z,c) − G(z,c')||²
    terms["total"] = sum(weights[name] * value for name, value in terms.items())
    return terms


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. (6) without R1: ``softplus(D(fake)) + softplus(−D(real))``, batch means, 0-d."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def decode_bits(logits: torch.Tensor) -> torch.Tensor:
    """Eq. (7): bits ``(n, d_c)`` as floats, 1 where the logit is > 0 (a logit, not a probability)."""
    return (logits > 0).float()


def bit_accuracy(logits: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per image, the share of bits decoded right: ``(n,)``."""
    c = check_fingerprints(c, logits.shape[1])
    return (decode_bits(logits) == c).float().mean(1)


def null_match_probability(fingerprint_dim: int, matches: int) -> float:
    """P(Bin(d_c, ½) ≥ ``matches``): the chance that an image *not* from the model matches its
    fingerprint in at least that many bits. Exact (integer arithmetic)."""
    d = check_positive_int("fingerprint_dim", fingerprint_dim)
    return sum(math.comb(d, k) for k in range(max(int(matches), 0), d + 1)) / 2 ** d


def detection_threshold(fingerprint_dim: int, alpha: float = 0.01, num_models: int = 1) -> int:
    """``m*``: the least number of matching bits with P(Bin(d_c, ½) ≥ m*) ≤ α / ``num_models``.

    Under the null (the image is not from the model) each decoded bit matches with probability ½,
    independently; Bonferroni over ``num_models`` registered fingerprints keeps the family-wise
    false-positive rate ≤ α. Raises when even all d_c bits matching is not significant."""
    d = check_positive_int("fingerprint_dim", fingerprint_dim)
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool):
        raise ValueError(f"alpha={alpha!r} is not valid; it must be a number in (0, 1)")
    check_range("alpha", alpha, 0.0, 1.0, low_open=True, high_open=True)
    level = alpha / check_positive_int("num_models", num_models)
    for m in range(d + 1):
        if null_match_probability(d, m) <= level:
            return m
    raise ValueError(f"fingerprint_dim={d} is too short for alpha={alpha} over {num_models} model(s): even "
                     f"all {d} bits matching has probability {2.0 ** -d:.3g} > {level:.3g}")


def detect(logits: torch.Tensor, c: torch.Tensor, alpha: float = 0.01, num_models: int = 1) -> torch.Tensor:
    """Per image, whether it carries fingerprint ``c`` ``(n, d_c)``: matches ≥ ``detection_threshold``."""
    c = check_fingerprints(c, logits.shape[1])
    matches = (decode_bits(logits) == c).sum(1)
    return matches >= detection_threshold(c.shape[1], alpha, num_models)


def hamming_distances(bits: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``(n, K)`` Hamming distances between decoded ``bits (n, d)`` and registered ``codebook (K, d)``."""
    codebook = check_fingerprints(codebook, bits.shape[1], name="codebook")
    bits = check_fingerprints(bits, codebook.shape[1], name="bits")
    return (bits[:, None, :] != codebook[None, :, :]).sum(2)


def attribute(logits: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index ``(n,)`` of the registered fingerprint nearest in Hamming distance (ties: the lowest index)."""
    return hamming_distances(decode_bits(logits), codebook).argmin(1)

