"""Single runs of chapter 04 (scalable GAN fingerprinting): one training run and its analyses.

Every function takes plain arguments, seeds itself and returns plain data, so
``labkit.cache.cached_runs`` can spread runs over processes and cache each one.

``train_run`` trains G (``labkit.methods.fingerprints.FingerprintedGenerator``), the decoder F and
D on scikit-learn digits upsampled to 16², scaled to [-1, 1]. One step: D on Eq. (6) with R1
(γ = ``r1_gamma``, every ``r1_every`` steps, as chapter 01), then G and F together on Eq. (5)
with one Adam (β = (0, 0.99), lr 2e-3, the code's settings); every image gets a fresh
fingerprint. Every ``eval_every`` steps it measures, on fresh latents and fingerprints fixed by the
seed: bit accuracy (``num_bits`` images), the same-z difference mean |G(z, c) − G(z, c′)| in G's
units (images in [-1, 1]) and classifier-FD (``num_eval`` fakes against as many fixed reals, in the
feature space of chapter 01's metric classifier, shared through the cache). There is no averaged
generator: F trains against the live G, and the live G is what is measured.

``device`` ("cpu" or "cuda") is where the nets train and the curve's images are generated and
decoded; the analyses of a trained model run on the CPU. Random draws come from CPU generators
and are moved to the device, so a CPU run draws what it always drew; what a run returns (state
dicts, curves, analyses) is on the CPU whatever the device.

``analyse=True`` (the main rows) adds what the chapter shows of a trained model: the baking error,
100 baked models and attribution among them, detection TPR and FPR, real digits decoded against
random fingerprints, and bit accuracy under noise, blur, JPEG (Pillow) and shift.
"""
from __future__ import annotations

import functools
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from labkit.data import upsampled_digits
from labkit.methods import fingerprints as fp
from labkit.methods.dual_contrastive import r1_penalty
from labkit.metrics.gan import frechet_distance
from labkit.metrics.gan_features import feature_classifier, image_features
from labkit.models.toy_gan import ImageDiscriminator
from labkit.train import fit

LATENT_DIM = 32
CLASSIFIER_STEPS = 400  # chapter 01's metric classifier: the same cache entry
NUM_MODELS = 100  # registered (baked) models for attribution
IMAGES_PER_MODEL = 20
REGISTRY_SEED = 12_345  # the registered fingerprints: the same for every training seed
ALPHA = 0.01
#: perturbation → strengths, the first of each being the clean image
PERTURBATIONS = {
    "noise": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5),  # σ of Gaussian noise, in [-1, 1] image units
    "blur": (0.0, 0.5, 0.75, 1.0, 1.5, 2.0),  # σ of a Gaussian blur, pixels
    "jpeg": (100, 90, 70, 50, 30, 10),  # Pillow quality
    "shift": (0, 1, 2, 3, 4, 5),  # pixels right and down, background filled in
}
NUM_ROBUST = 1000


@functools.lru_cache(maxsize=1)
def real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits at 16², in [-1, 1] ``(n, 1, 16, 16)``, and their labels; read only."""
    images, y = upsampled_digits(16)
    return images * 2 - 1, y


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """G's units ([-1, 1], unbounded) → images in [0, 1] for the metric classifier and display."""
    return (x.detach().clamp(-1, 1) + 1) / 2


def metric_classifier(steps: int = CLASSIFIER_STEPS):
    """Chapter 01's digit classifier (the same cache entry): ``(model, accuracy)``."""
    images, y = upsampled_digits(16)
    return feature_classifier("dcl-digits", images, {"digit": y}, steps=steps, heads={"digit": 10})


def eval_split(num_eval: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed reals FD compares against and the other reals of the floor."""
    order = torch.randperm(len(real_digits()[0]), generator=torch.Generator().manual_seed(0))
    return order[:num_eval], order[num_eval:2 * num_eval]


def real_floor(num_eval: int, classifier_steps: int = CLASSIFIER_STEPS, device: str = "cpu") -> dict:
    """FD between ``num_eval`` fixed reals and ``num_eval`` others, and the classifier's accuracy."""
    model, accuracy = metric_classifier(classifier_steps)
    model.to(device)  # trained on the CPU (one cache entry for every device), run on ``device``
    first, second = eval_split(num_eval)
    features = image_features(model, to_unit(real_digits()[0]))
    return dict(floor=frechet_distance(features[first], features[second]), classifier_accuracy=accuracy["digit"])


def make_nets(embedding: str, fingerprint_dim: int, modulated_resolutions=fp.RESOLUTIONS, width: int = 32,
              device: str = "cpu"):
    """G, F (None without a fingerprint) and D on ``device``, initialised on the CPU from the global
    torch RNG (the same weights on every device)."""
    G = fp.FingerprintedGenerator(fingerprint_dim, LATENT_DIM, width, embedding=embedding,
                                  modulated_resolutions=modulated_resolutions)
    F_net = None if embedding == "none" else fp.FingerprintDecoder(fingerprint_dim, LATENT_DIM, width=16)
    D = ImageDiscriminator(1, 16, 16)
    return G.to(device), None if F_net is None else F_net.to(device), D.to(device)


def load_nets(spec: dict, state: dict):
    """Rebuild ``(G, F)`` in eval mode from a run's ``spec`` and ``state``."""
    G, F_net, _ = make_nets(spec["embedding"], spec["fingerprint_dim"], tuple(spec["modulated_resolutions"]))
    G.load_state_dict(state["G"])
    if F_net is not None:
        F_net.load_state_dict(state["F"])
        F_net.eval().requires_grad_(False)
    return G.eval().requires_grad_(False), F_net


@torch.no_grad()
def generate(G, z: torch.Tensor, c: torch.Tensor | None, chunk: int = 1000) -> torch.Tensor:
    """Images ``(n, 1, 16, 16)`` of ``G`` for ``z (n, latent_dim)`` and ``c (n, d_c)`` (on G's device)."""
    return torch.cat([G(z[i:i + chunk], None if c is None else c[i:i + chunk]) for i in range(0, len(z), chunk)])


@torch.no_grad()
def decode(F_net, x: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """Fingerprint logits ``(n, d_c)`` of images ``x`` in G's units."""
    return torch.cat([F_net(x[i:i + chunk])[1] for i in range(0, len(x), chunk)])


def train_run(embedding: str, fingerprint_dim: int, seed: int, steps: int, lambda_const: float = 2.0,
              lambda_z: float = 1.0, r1_gamma: float = 1.0, r1_every: int = 4,
              modulated_resolutions: tuple = fp.RESOLUTIONS, batch_size: int = 32, lr: float = 2e-3,
              eval_every: int = 300, num_bits: int = 2000, num_eval: int = 800, analyse: bool = False,
              classifier_steps: int = CLASSIFIER_STEPS, device: str = "cpu") -> dict:
    """One training run on ``device`` (see the module docstring). Returns ``curve`` {step,
    bit_accuracy, same_z, fd} (bit accuracy and same-z NaN without a fingerprint), the last point as
    ``bit_accuracy``, ``same_z`` and ``fd``, ``spec`` and ``state`` {G, F} (CPU tensors) to rebuild
    the nets, the losses' ``history``, and with ``analyse`` an ``analysis`` dict (``analyse_model``)."""
    fingerprinted = embedding != "none"
    reals = real_digits()[0].to(device)  # (1797, 1, 16, 16)
    classifier, _ = metric_classifier(classifier_steps)
    classifier.to(device)  # trained on the CPU (one cache entry for every device), run on ``device``
    real_features = image_features(classifier, to_unit(reals[eval_split(num_eval)[0].to(device)]))
    torch.manual_seed(seed)
    G, F_net, D = make_nets(embedding, fingerprint_dim, modulated_resolutions, device=device)
    opt_g = torch.optim.Adam([*G.parameters(), *(F_net.parameters() if fingerprinted else ())], lr=lr,
                             betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.0, 0.99))
    weights = {"latent": lambda_z, "consistency": lambda_const}
    rng = torch.Generator().manual_seed(seed)
    eval_rng = torch.Generator().manual_seed(seed + 10_000)
    # drawn on the CPU in a fixed order, then moved: the same latents on every device
    z_bits = torch.randn(num_bits, LATENT_DIM, generator=eval_rng).to(device)
    c_bits, c_other = (fp.sample_fingerprints(num_bits, fingerprint_dim, eval_rng).to(device) for _ in range(2))
    z_fd = torch.randn(num_eval, LATENT_DIM, generator=eval_rng).to(device)
    c_fd = fp.sample_fingerprints(num_eval, fingerprint_dim, eval_rng).to(device)
    curve = {"step": [], "bit_accuracy": [], "same_z": [], "fd": []}

    def fingerprints(n: int) -> torch.Tensor | None:
        return fp.sample_fingerprints(n, fingerprint_dim, rng).to(device) if fingerprinted else None

    def evaluate(step: int) -> None:
        G.eval()
        fakes = generate(G, z_fd, c_fd if fingerprinted else None)
        curve["step"].append(step)
        curve["fd"].append(frechet_distance(real_features, image_features(classifier, to_unit(fakes))))
        if fingerprinted:
            x = generate(G, z_bits, c_bits)
            curve["bit_accuracy"].append(float(fp.bit_accuracy(decode(F_net, x), c_bits).mean()))
            curve["same_z"].append(float((x - generate(G, z_bits, c_other)).abs().mean()))
        else:
            curve["bit_accuracy"].append(float("nan"))
            curve["same_z"].append(float("nan"))
        G.train()

    def step_fn(_, step: int) -> dict:
        x = reals[torch.randint(len(reals), (batch_size,), generator=rng).to(device)]
        with torch.no_grad():
            fake = G(torch.randn(batch_size, LATENT_DIM, generator=rng).to(device), fingerprints(batch_size))
        do_r1 = r1_gamma > 0 and step % r1_every == 0
        if do_r1:
            x.requires_grad_(True)
        real_logits = D(x)
        d_loss = fp.discriminator_loss(real_logits, D(fake))
        r1 = r1_penalty(x, real_logits) if do_r1 else torch.zeros((), device=device)
        opt_d.zero_grad(set_to_none=True)
        (d_loss + r1_gamma / 2 * r1).backward()
        opt_d.step()
        D.requires_grad_(False)  # G's step: D is frozen
        z = torch.randn(batch_size, LATENT_DIM, generator=rng).to(device)
        terms = fp.generator_losses(G, D, F_net, z, fingerprints(batch_size), fingerprints(batch_size), weights)
        opt_g.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt_g.step()
        D.requires_grad_(True)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evaluate(step + 1)
        return {"d_loss": d_loss.detach(), **{k: v.detach() for k, v in terms.items() if k != "total"}}

    history = fit(G, [None], step_fn, (), steps, log_every=10, progress=False)
    G.eval()
    spec = dict(embedding=embedding, fingerprint_dim=fingerprint_dim, modulated_resolutions=list(modulated_resolutions))
    state = {"G": cpu_state(G), "F": cpu_state(F_net) if fingerprinted else {}}
    out = dict(embedding=embedding, fingerprint_dim=fingerprint_dim, seed=seed, steps=steps, lambda_const=lambda_const,
               lambda_z=lambda_z, r1_gamma=r1_gamma, modulated_resolutions=list(modulated_resolutions), curve=curve,
               bit_accuracy=curve["bit_accuracy"][-1], same_z=curve["same_z"][-1], fd=curve["fd"][-1],
               spec=spec, state=state, history=history.to_dict())
    if analyse and fingerprinted:
        F_net.eval()
        # on the CPU whatever the device: the baking identity is checked to 1e-5, finer than a GPU's
        # TF32 convolutions keep, and the analyses are cheap next to training
        out["analysis"] = analyse_model(G.cpu(), F_net.cpu(), seed)
    return out


def cpu_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``net``'s state dict on the CPU (what a cache holds, whatever the device)."""
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


# --- analyses of one trained model --------------------------------------------------------------

def registry(fingerprint_dim: int, num_models: int = NUM_MODELS) -> torch.Tensor:
    """The registered fingerprints ``(num_models, d_c)``: distinct, fixed by ``REGISTRY_SEED``."""
    rng = torch.Generator().manual_seed(REGISTRY_SEED)
    codes = fp.sample_fingerprints(4 * num_models, fingerprint_dim, rng)
    unique = []
    seen = set()
    for row in codes:
        key = tuple(int(b) for b in row)
        if key not in seen:
            seen.add(key)
            unique.append(row)
        if len(unique) == num_models:
            break
    if len(unique) < num_models:
        raise ValueError(f"fingerprint_dim={fingerprint_dim} gives fewer than num_models={num_models} distinct "
                         "fingerprints; register fewer models or use more bits")
    return torch.stack(unique)


@torch.no_grad()
def analyse_model(G, F_net, seed: int) -> dict:
    """Baking error, attribution among ``NUM_MODELS`` baked models, detection and robustness. The
    nets run on their device; the bits are compared on the CPU."""
    d_c = G.fingerprint_dim
    device = G.stem.weight.device
    rng = torch.Generator().manual_seed(seed + 20_000)
    codebook = registry(d_c)
    z = torch.randn(len(codebook), IMAGES_PER_MODEL, LATENT_DIM, generator=rng).to(device)
    baked_images, bake_error = [], 0.0
    for code, z_k in zip(codebook.to(device), z):
        baked = fp.bake(G, code)
        x = baked(z_k)
        bake_error = max(bake_error, float((x - G(z_k, code.expand(len(z_k), -1))).abs().max()))
        baked_images.append(x)
    logits = decode(F_net, torch.cat(baked_images)).cpu()  # (K · n, d_c), model-major
    owner = torch.arange(len(codebook)).repeat_interleave(IMAGES_PER_MODEL)
    distances = fp.hamming_distances(fp.decode_bits(logits), codebook)  # (K · n, K)
    predicted = distances.argmin(1)
    own = distances[torch.arange(len(owner)), owner]
    others = distances.masked_fill(torch.nn.functional.one_hot(owner, len(codebook)).bool(), d_c + 1).min(1).values
    confusion = torch.zeros(len(codebook), len(codebook), dtype=torch.int16)
    confusion.index_put_((owner, predicted), torch.ones(len(owner), dtype=torch.int16), accumulate=True)
    reals, _ = real_digits()
    real_logits = decode(F_net, reals.to(device)).cpu()
    random_codes = codebook[torch.randint(len(codebook), (len(reals),), generator=rng)]
    threshold = fp.detection_threshold(d_c, ALPHA)
    real_distances = fp.hamming_distances(fp.decode_bits(real_logits), codebook)
    return dict(
        bake_max_error=bake_error, num_models=len(codebook), threshold=threshold, alpha=ALPHA,
        attribution_correct=(predicted == owner).numpy().astype(np.uint8),
        detected=fp.detect(logits, codebook[owner], ALPHA).numpy().astype(np.uint8),
        real_detected=fp.detect(real_logits, random_codes, ALPHA).numpy().astype(np.uint8),
        real_bit_accuracy=fp.bit_accuracy(real_logits, random_codes).numpy(),
        hamming_own=own.numpy().astype(np.int16), hamming_other=others.numpy().astype(np.int16),
        hamming_real=real_distances.min(1).values.numpy().astype(np.int16), confusion=confusion.numpy(),
        robustness=robustness(G, F_net, seed))


def perturb(x: torch.Tensor, kind: str, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images ``x`` (n, 1, 16, 16) in G's units after one post-processing step of ``PERTURBATIONS``,
    on ``x``'s device (the noise is drawn on the CPU ``generator`` and moved there)."""
    if kind == "noise":
        return x + (strength * torch.randn(x.shape, generator=generator)).to(x.device) if strength else x
    if kind == "blur":
        if not strength:
            return x
        from torchvision.transforms.functional import gaussian_blur
        return gaussian_blur(x, kernel_size=2 * int(np.ceil(3 * strength)) + 1, sigma=float(strength))
    if kind == "jpeg":
        return jpeg(x, int(strength))
    if kind == "shift":
        s = int(strength)
        return F.pad(x, (s, 0, s, 0), value=-1.0)[..., :x.shape[-2], :x.shape[-1]] if s else x
    raise ValueError(f"kind={kind!r} is not valid; choose one of: {', '.join(PERTURBATIONS)}")


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A JPEG round trip through Pillow at ``quality`` (grayscale, 8 bits), back in G's units, on
    ``x``'s device."""
    pixels = (to_unit(x) * 255).round().to(torch.uint8).cpu().numpy()
    out = np.empty_like(pixels)
    for i, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image[0]).save(buffer, format="JPEG", quality=quality)
        out[i, 0] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    return torch.from_numpy(out).float().to(x.device) / 255 * 2 - 1


@torch.no_grad()
def robustness(G, F_net, seed: int, num_images: int = NUM_ROBUST) -> dict:
    """Per perturbation: bit accuracy ``(strengths,)`` of ``num_images`` fresh (z, c) and one example
    image per strength (uint8 ``(strengths, 16, 16)``). G and F run on their device; the bits are
    compared on the CPU."""
    device = G.stem.weight.device
    rng = torch.Generator().manual_seed(seed + 30_000)
    z = torch.randn(num_images, LATENT_DIM, generator=rng)
    c = fp.sample_fingerprints(num_images, G.fingerprint_dim, rng)
    x = generate(G, z.to(device), c.to(device))
    out = {}
    for kind, strengths in PERTURBATIONS.items():
        accuracy, examples = [], []
        for strength in strengths:
            y = perturb(x, kind, strength, rng)
            accuracy.append(float(fp.bit_accuracy(decode(F_net, y).cpu(), c).mean()))
            examples.append((to_unit(y[0, 0]) * 255).round().to(torch.uint8).cpu().numpy())
        out[kind] = dict(strength=list(strengths), bit_accuracy=accuracy, examples=np.stack(examples))
    return out
