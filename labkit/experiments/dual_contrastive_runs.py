"""Single runs of chapter 01 (dual contrastive loss and attention for GANs): one image GAN, one ring GAN.

Every function takes plain arguments, seeds itself and returns plain data, so
``labkit.cache.cached_runs`` can spread runs over processes and cache each one.

``train_gan`` trains a DCGAN-style pair (``labkit.models.toy_gan``) on digits (16², one channel)
or compositional scenes (32², RGB) with one of ``GAN_LOSSES``, optional SAGAN self-attention in
G, and self- or reference attention in D, with Adam at ``lr`` and ``betas`` (the spec's 2e-4 and
(0.5, 0.999) by default; the chapter passes StyleGAN2's 2e-3 and (0, 0.99)). One step: D on
``d_loss(real, fake)`` plus ``r1_gamma / 2 · R1`` on the primary reals every ``r1_every`` steps;
then G on fresh fakes with
``g_loss(real, fake)``: the same (real, fake) argument order as D, because the G loss swaps the
roles itself (``labkit.methods.dual_contrastive``; stylegan2-pytorch issue #289 is the bug of
swapping them a second time). In the G step D is frozen and the real logits are computed without
a graph: they are constants for G. References for reference attention are independent reals,
resampled every step, and the same reference batch serves the real and the fake primaries.

Every measurement uses an exponential moving average of G's weights, as StyleGAN2 evaluates its
generator (the spec keeps "the rest of the StyleGAN2 recipe"). The decay follows StyleGAN2-ADA's
``auto`` config: after n images, the average's half-life is min(batch · 10,000 / 32, 0.05 · n)
images (β ≈ 0.98 a step after 700 steps of 64, ≈ 0.993 after 2,000). G has BatchNorm, so before
each evaluation the average's running statistics are recomputed from 2,000 fixed latents (as SWA
does).

Metrics live in the feature space of ``labkit.metrics.gan_features.feature_classifier`` (trained
once per machine): classifier-FD of ``num_eval`` fakes against ``num_eval`` fixed reals, whose
floor is the FD between those reals and ``num_eval`` other reals; k-NN precision/recall; for
scenes, composition validity; with ``probe``, a linear probe on D's penultimate features of real
images, before and after training: the digit class for digits (the spec's), the object count for
scenes (ours); fit on 1,000 images, scored on the rest (the GAN saw them unlabelled).
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import torch

from labkit.config import check_choice, check_device
from labkit.data import (COMPOSITIONAL_COLOURS, COMPOSITIONAL_SHAPES, make_compositional, mixture_centres,
                          sample_mixture, upsampled_digits)
from labkit.methods.dual_contrastive import GAN_LOSSES, ReferenceDiscriminator, SelfAttention2d, r1_penalty
from labkit.metrics import (composition_validity, feature_classifier, frechet_distance, image_features,
                            knn_precision_recall, mode_quality)
from labkit.models import ImageDiscriminator, ImageGenerator, ring_gan_models
from labkit.train import fit

DATASETS = {"digits": (1, 16), "scenes": (3, 32)}  # channels, default image size
D_ATTENTIONS = ("none", "self", "reference")
SHAPE_HEADS, COLOUR_HEADS = COMPOSITIONAL_SHAPES, tuple(COMPOSITIONAL_COLOURS)  # how many of each, per scene
HEADS = {"digits": {"digit": 10},
         "scenes": {"count": 5, **{name: 5 for name in (*SHAPE_HEADS, *COLOUR_HEADS)}}}
NUM_SCENES = 4000
CLASSIFIER_STEPS = 400
LATENT_DIM = 64
NUM_SHOWN = 36  # sample grid
NUM_LOGITS = 256  # logits kept per checkpoint for the histograms
NUM_LOGIT_CHECKPOINTS = 4
PROBE_TRAIN = 1000
EMA_RAMPUP = 0.05  # StyleGAN2-ADA's auto config: half-life = min(ema_images, rampup · images seen)
NUM_BN_LATENTS = 2000  # latents that re-estimate the averaged G's BatchNorm statistics
PROBE_TARGETS = {"digits": "digit", "scenes": "count"}  # what the linear probe on D's features predicts


@functools.lru_cache(maxsize=2)
def real_data(dataset: str, image_size: int) -> tuple[torch.Tensor, dict]:
    """The real images ``(n, C, S, S)`` in [0, 1] and the classifier's targets ``{head: (n,)}``.

    Generated once per process (a worker trains several GANs; ~1 s for 4,000 scenes); read only."""
    check_choice("dataset", dataset, DATASETS)
    if dataset == "digits":
        images, y = upsampled_digits(image_size)
        return images, {"digit": y}
    scenes = make_compositional(NUM_SCENES, image_size, seed=0)
    targets = {"count": scenes.counts}
    targets.update({name: scenes.shapes[:, i] for i, name in enumerate(SHAPE_HEADS)})
    targets.update({name: scenes.colours[:, i] for i, name in enumerate(COLOUR_HEADS)})
    return scenes.images, targets


def metric_classifier(dataset: str, image_size: int, steps: int = CLASSIFIER_STEPS):
    """``(model, held-out accuracy per head)`` of the cached metric classifier for ``dataset``."""
    images, targets = real_data(dataset, image_size)
    return feature_classifier(f"dcl-{dataset}", images, targets, steps=steps, heads=HEADS[dataset])


def _eval_split(num_images: int, num_eval: int) -> tuple[torch.Tensor, torch.Tensor]:
    if 2 * num_eval > num_images:
        raise ValueError(f"num_eval={num_eval} is too large; the floor needs 2·num_eval <= {num_images} reals")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(0))
    return order[:num_eval], order[num_eval:2 * num_eval]


def real_floor_info(dataset: str, image_size: int, num_eval: int, classifier_steps: int = CLASSIFIER_STEPS) -> dict:
    """The real-vs-real floor at ``num_eval`` vs ``num_eval`` and the classifier's accuracy.

    Called once before the GAN runs, so it also trains (and caches) the metric classifier. Both stay
    on the CPU whatever ``device`` the GANs train on: the classifier's cache entry does not name a
    device, and every run measures its fakes with it on the CPU."""
    images, _ = real_data(dataset, image_size)
    model, accuracy = metric_classifier(dataset, image_size, classifier_steps)
    first, second = _eval_split(len(images), num_eval)
    features = image_features(model, images)
    return dict(floor=frechet_distance(features[first], features[second]), classifier_accuracy=accuracy)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def make_nets(channels: int, image_size: int, width: int, g_attention: bool, d_attention: str):
    """G, D and ``judge(x, ref) -> logits (n,)``; ``penultimate(x, ref) -> (n, 64·width)``."""
    check_choice("d_attention", d_attention, D_ATTENTIONS)
    G = ImageGenerator(LATENT_DIM, channels, image_size, width, attention=SelfAttention2d if g_attention else None)
    base = ImageDiscriminator(channels, image_size, width,
                              attention=SelfAttention2d if d_attention == "self" else None)
    # channels-last convolutions are 20-40 % faster on CPU at these sizes; same numbers up to round-off
    G, base = G.to(memory_format=torch.channels_last), base.to(memory_format=torch.channels_last)
    if d_attention != "reference":
        return G, base, (lambda x, ref: base(x)), (lambda x, ref: base.penultimate(x))
    D = ReferenceDiscriminator(base.trunk, base.head, base.trunk_channels)
    return G, D, D, (lambda x, ref: D.head.features(D.attention(D.trunk(x), D.trunk(ref))))


def ema_decay(step: int, batch_size: int) -> float:
    """β of G's weight average after ``step`` steps: a half-life of min(batch · 10,000 / 32,
    0.05 · images seen) images, as StyleGAN2-ADA's auto config."""
    half_life = min(batch_size * 10_000 / 32, EMA_RAMPUP * step * batch_size)
    return 0.5 ** (batch_size / half_life) if half_life > 0 else 0.0


def _refresh_batchnorm(G: torch.nn.Module, latents: torch.Tensor) -> None:
    """Recompute G's BatchNorm running statistics from ``latents`` (cumulative averages)."""
    norms = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    G.train()
    with torch.no_grad():
        for chunk in latents.split(500):
            G(chunk)
    G.eval()


def _probe(penultimate, images: torch.Tensor, labels: torch.Tensor, refs: torch.Tensor | None) -> np.ndarray:
    """Per held-out image, whether a logistic regression on D's standardized penultimate features
    (fit on 1,000 images) predicts its label: uint8 ``(n − 1,000,)``, the same images for every run."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    with torch.no_grad():
        X = torch.cat([penultimate(images[i:i + 500], None if refs is None else refs[i:i + 500])
                       for i in range(0, len(images), 500)]).cpu().double().numpy()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).numpy()
    train, test = order[:PROBE_TRAIN], order[PROBE_TRAIN:]
    scaler = StandardScaler().fit(X[train])
    clf = LogisticRegression(max_iter=500, C=0.1).fit(scaler.transform(X[train]), labels.numpy()[train])
    return (clf.predict(scaler.transform(X[test])) == labels.numpy()[test]).astype(np.uint8)


def train_gan(dataset: str, image_size: int, loss: str, g_attention: bool, d_attention: str, steps: int,
              seed: int, batch_size: int = 64, width: int = 32, lr: float = 2e-4, betas: tuple = (0.5, 0.999),
              r1_gamma: float = 1.0, r1_every: int = 4, eval_every: int = 100, num_eval: int = 800, probe: bool = True,
              classifier_steps: int = CLASSIFIER_STEPS, device: str = "cpu") -> dict:
    """One image GAN (see the module docstring), trained on ``device`` ("cpu" or "cuda"; the
    metric classifier and every metric stay on the CPU). Returns plain data: final ``fd``, ``precision``,
    ``recall``, ``validity`` (scenes, else None), ``probe``, ``probe_correct`` (uint8 per held-out
    image, for a bootstrap over test items) and ``probe_init`` (the probe on D at initialisation;
    None without ``probe``),
    ``curve`` {step, fd}, ``logits`` {step, real (k, 256), fake (k, 256)}, ``samples`` uint8
    ``(36, C, S, S)``, ``generator`` {spec, state} (samples and state: the averaged G), ``d_maps`` (None without D attention) and
    ``history`` (losses, R1, the mean logit, which DCL leaves free to drift)."""
    check_choice("loss", loss, GAN_LOSSES)
    d_fn, g_fn = GAN_LOSSES[loss]
    channels = DATASETS[check_choice("dataset", dataset, DATASETS)][0]
    images, targets = real_data(dataset, image_size)
    classifier, _ = metric_classifier(dataset, image_size, classifier_steps)
    first, _ = _eval_split(len(images), num_eval)
    real_features = image_features(classifier, images[first])
    dev = torch.device(check_device(device))
    images = images.contiguous(memory_format=torch.channels_last).to(dev)
    torch.manual_seed(seed)
    G, D, judge, penultimate = make_nets(channels, image_size, width, g_attention, d_attention)
    G, D = G.to(dev), D.to(dev)  # in place: judge and penultimate hold the same modules
    G_avg = copy.deepcopy(G).requires_grad_(False)  # the averaged G that every measurement uses
    bn_latents = torch.randn(NUM_BN_LATENTS, LATENT_DIM,
                             generator=torch.Generator().manual_seed(seed + 10_000)).to(dev)
    averaged_changed = [True]  # its BatchNorm statistics need recomputing before the next sample
    uses_refs = d_attention == "reference"
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=tuple(betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=tuple(betas))
    rng = torch.Generator().manual_seed(seed)
    z_eval = torch.randn(num_eval, LATENT_DIM, generator=rng).to(dev)
    z_logits = torch.randn(NUM_LOGITS, LATENT_DIM, generator=rng).to(dev)
    fixed_real, fixed_refs = (images[torch.randint(len(images), (NUM_LOGITS,), generator=rng).to(dev)]
                              for _ in range(2))
    logit_steps = sorted({int(round(s)) for s in np.linspace(0, steps, NUM_LOGIT_CHECKPOINTS)})
    curve, logits = {"step": [], "fd": []}, {"step": [], "real": [], "fake": []}

    def reals() -> torch.Tensor:
        return images[torch.randint(len(images), (batch_size,), generator=rng).to(dev)]

    def latents(n: int) -> torch.Tensor:
        return torch.randn(n, LATENT_DIM, generator=rng).to(dev)  # drawn on the CPU: the same on any device

    def sample(z: torch.Tensor) -> torch.Tensor:
        """The averaged G in eval mode: samples that do not depend on the batch."""
        if averaged_changed[0]:
            _refresh_batchnorm(G_avg, bn_latents)
            averaged_changed[0] = False
        with torch.no_grad():
            return torch.cat([G_avg(z[i:i + 500]) for i in range(0, len(z), 500)])  # on dev

    def evaluate(step: int) -> None:
        curve["step"].append(step)
        curve["fd"].append(frechet_distance(real_features, image_features(classifier, sample(z_eval).cpu())))

    def record_logits(step: int) -> None:
        with torch.no_grad():
            logits["step"].append(step)
            logits["real"].append(judge(fixed_real, fixed_refs).cpu().numpy())
            logits["fake"].append(judge(sample(z_logits), fixed_refs).cpu().numpy())

    def step_fn(_, step: int) -> dict:
        x, refs = reals(), (reals() if uses_refs else None)
        with torch.no_grad():
            fake = G(latents(batch_size))
        do_r1 = r1_gamma > 0 and step % r1_every == 0
        if do_r1:
            x.requires_grad_(True)  # R1 on the primary reals only, never on the references
        real_logits, fake_logits = judge(x, refs), judge(fake, refs)
        d_loss = d_fn(real_logits, fake_logits)
        r1 = r1_penalty(x, real_logits) if do_r1 else torch.zeros((), device=dev)
        opt_d.zero_grad(set_to_none=True)
        (d_loss + r1_gamma / 2 * r1).backward()
        opt_d.step()
        # G step: fresh fakes, D frozen; the reals' logits are constants for G
        D.requires_grad_(False)
        with torch.no_grad():
            g_real = judge(x.detach(), refs)
        g_fake = judge(G(latents(batch_size)), refs)
        g_loss = g_fn(g_real, g_fake)  # (real, fake), D's order: the G loss swaps roles itself
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        with torch.no_grad():
            beta = ema_decay(step + 1, batch_size)
            for averaged, current in zip(G_avg.parameters(), G.parameters()):
                averaged.lerp_(current, 1 - beta)
        averaged_changed[0] = True
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evaluate(step + 1)
        if step + 1 in logit_steps:
            record_logits(step + 1)
        out = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "mean_logit": real_logits.detach().mean(),
               "logit_gap": (real_logits - fake_logits).detach().mean()}
        return out | ({"r1": r1.detach()} if do_r1 else {})

    probing, probe_labels = bool(probe), targets[PROBE_TARGETS[dataset]]
    probe_refs = (images[torch.randperm(len(images), generator=torch.Generator().manual_seed(1)).to(dev)]
                  if uses_refs else None)  # fixed real references, independent of the probed image
    probe_init = float(_probe(penultimate, images, probe_labels, probe_refs).mean()) if probing else None
    if 0 in logit_steps:
        record_logits(0)
    history = fit(G, [None], step_fn, (), steps, log_every=10, progress=False)
    fakes = sample(z_eval).cpu()
    fake_features = image_features(classifier, fakes)
    pr = knn_precision_recall(real_features, fake_features, k=3)
    validity = None
    if dataset == "scenes":
        validity = composition_validity(classifier, fakes, 2, 4, shape_heads=SHAPE_HEADS)
    probe_correct = _probe(penultimate, images, probe_labels, probe_refs) if probing else None
    return dict(dataset=dataset, image_size=image_size, loss=loss, g_attention=bool(g_attention),
                d_attention=d_attention, seed=seed, steps=steps, fd=frechet_distance(real_features, fake_features),
                precision=pr["precision"], recall=pr["recall"], validity=validity,
                probe=None if probe_correct is None else float(probe_correct.mean()), probe_correct=probe_correct,
                probe_init=probe_init,
                curve=curve, logits={k: np.stack(v) if k != "step" else v for k, v in logits.items()},
                samples=_to_uint8(fakes[:NUM_SHOWN]),
                generator=dict(spec=dict(latent_dim=LATENT_DIM, channels=channels, image_size=image_size, width=width,
                                         attention=bool(g_attention)),
                               state={k: v.detach().cpu().clone() for k, v in G_avg.state_dict().items()}),
                d_maps=_d_maps(D, d_attention, images, sample(z_eval[:1])), history=history.to_dict())


def _d_maps(D, d_attention: str, images: torch.Tensor, fake: torch.Tensor) -> dict | None:
    """D's attention for a fixed real and one fake primary (against a fixed real reference)."""
    if d_attention == "none":
        return None
    primary = torch.cat([images[:1], fake])  # (2, C, S, S): real, fake
    reference = images[1:2].expand_as(primary)
    with torch.no_grad():
        if d_attention == "reference":
            maps = D.attention_map(primary, reference)
        else:
            maps = D.attention.attention_map(D.trunk(primary))
    return dict(kind=d_attention, primary=_to_uint8(primary), reference=_to_uint8(images[1]),
                maps=maps.cpu().numpy(), gamma=float(D.attention.gamma.detach()))


def train_ring(loss: str, seed: int, steps: int, batch_size: int = 256, lr: float = 1e-3, latent_dim: int = 16,
               num_checkpoints: int = 5, num_samples: int = 2500, std: float = 0.02, bins: int = 40,
               extent: float = 3.0, device: str = "cpu") -> dict:
    """The 8-Gaussian ring (radius 2, σ = 0.02) with MLPs and ``loss``; no R1. Trains on ``device``
    (data and latents drawn on the CPU, then moved); scores on the CPU. Returns ``mode_quality`` of
    ``num_samples`` samples at each checkpoint (``modes_covered``, ``high_quality``, 2-D ``heatmaps``
    (k, bins, bins)) and ``final`` (the last one's dict)."""
    check_choice("loss", loss, GAN_LOSSES)
    d_fn, g_fn = GAN_LOSSES[loss]
    dev = torch.device(check_device(device))
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    G, D = (net.to(dev) for net in ring_gan_models(latent_dim))
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    centres = mixture_centres("ring")
    z_eval = torch.randn(num_samples, latent_dim, generator=rng).to(dev)
    checkpoints = sorted({int(round(s)) for s in np.linspace(0, steps, num_checkpoints + 1)})
    edges = np.linspace(-extent, extent, bins + 1)
    found = {"step": [], "modes_covered": [], "high_quality": [], "heatmaps": [], "final": None}

    def snapshot(step: int) -> None:
        with torch.no_grad():
            samples = G(z_eval).cpu()  # (num_samples, 2)
        scores = mode_quality(samples, centres, std)
        counts, _, _ = np.histogram2d(samples[:, 0].numpy(), samples[:, 1].numpy(), bins=[edges, edges])
        found["step"].append(step)
        found["modes_covered"].append(scores["modes_covered"])
        found["high_quality"].append(scores["high_quality_fraction"])
        found["heatmaps"].append(counts.T.astype(np.float32))
        found["final"] = scores

    def step_fn(_, step: int) -> dict:
        x = sample_mixture(batch_size, "ring", std, generator=rng).to(dev)  # (batch, 2)
        with torch.no_grad():
            fake = G(torch.randn(batch_size, latent_dim, generator=rng).to(dev))
        d_loss = d_fn(D(x).squeeze(1), D(fake).squeeze(1))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        with torch.no_grad():
            real_logits = D(x).squeeze(1)
        g_loss = g_fn(real_logits, D(G(torch.randn(batch_size, latent_dim, generator=rng).to(dev))).squeeze(1))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        if step + 1 in checkpoints:
            snapshot(step + 1)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    if 0 in checkpoints:
        snapshot(0)
    history = fit(G, [None], step_fn, (), steps, log_every=25, progress=False)
    return dict(loss=loss, seed=seed, steps=steps, checkpoint_steps=found["step"],
                modes_covered=found["modes_covered"], high_quality=found["high_quality"],
                heatmaps=np.stack(found["heatmaps"]), extent=extent, final=found["final"],
                history=history.to_dict())
