"""Single training runs for chapter 03 (SVMax): one retrieval model, one unit-circle model, one
ring GAN. Each takes plain arguments, seeds itself and returns plain data, so that
``labkit.parallel.map_runs`` can spread them over processes and ``labkit.cache`` can store them.
Each trains on ``device``: every random draw (weights, batches, latents) comes from a CPU generator
and is moved there, so a seed means the same run on any device; what a run returns is on the CPU.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from labkit.config import check_choice, check_device
from labkit.data import all_digits, class_balanced_batches, load_digits_split, mixture_centres, sample_mixture
from labkit.losses import ranking_loss, spread_out_regularizer
from labkit.methods import svmax
from labkit.metrics import mode_quality, nmi, recall_at_k
from labkit.models import MLP, ring_gan_models
from labkit.train import fit

# What is added to the ranking loss. The last three are the spec's ablation rows.
VARIANTS = ("vanilla", "svmax", "svmax_plain", "spread_out", "svmax_unnormalized")
RECALL_KS = (1, 2, 4, 8)


def _regularizer(variant: str, raw: torch.Tensor, E: torch.Tensor, labels: torch.Tensor, lam: float,
                 allow_fewer_rows: bool) -> torch.Tensor:
    if variant == "svmax":  # Eq. (4) on the normalized embeddings the ranking loss sees
        return svmax.svmax_bounded(E, lam, allow_fewer_rows=allow_fewer_rows)
    if variant == "svmax_plain":  # Eq. (1) with the slope of Eq. (4) at isotropy: lam / (U - L)  [design]
        b, d = E.shape
        return svmax.svmax_plain(E, lam / (svmax.upper_bound(b, d) - svmax.lower_bound(b, d)),
                                 allow_fewer_rows=allow_fewer_rows)
    if variant == "spread_out":
        return lam * spread_out_regularizer(E, labels)
    if variant == "svmax_unnormalized":  # Eq. (4) on the raw embeddings: the bounds no longer hold
        return svmax.svmax_bounded(raw, lam, allow_fewer_rows=allow_fewer_rows)
    return E.new_zeros(())


def _embed(model, X: torch.Tensor) -> torch.Tensor:
    """Unit-norm embeddings without gradients (``model`` outputs raw, unnormalized rows)."""
    with torch.no_grad():
        return F.normalize(model(X), dim=1)


def _test_batches(num_test: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    order = torch.randperm(num_test, generator=torch.Generator().manual_seed(seed))
    return [order[i:i + batch_size] for i in range(0, num_test - batch_size + 1, batch_size)]


def train_retrieval(loss: str, lr: float, seed: int, variant: str = "vanilla", lam: float = 1.0, *,
                    embedding_dim: int = 16, classes_per_batch: int = 5, samples_per_class: int = 30,
                    num_steps: int = 600, momentum: float = 0.9, eval_batch_size: int = 150,
                    num_checkpoints: int = 6, device: str = "cpu") -> dict:
    """Train the digits embedding net on classes 0–4 with ``loss`` (+ ``variant``); test on 5–9."""
    check_choice("variant", variant, VARIANTS)
    check_device(device)
    loss_fn = ranking_loss(loss)
    split = load_digits_split()
    X_train, y_train = split.X_train.to(device), split.y_train.to(device)
    X_test, y_test = split.X_test.to(device), split.y_test
    torch.manual_seed(seed)
    model = MLP(64, out_features=embedding_dim).to(device)  # 64→128→128→d; normalized below
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    batches = class_balanced_batches(split.y_train, classes_per_batch, samples_per_class,
                                     generator=torch.Generator().manual_seed(seed))
    allow_fewer_rows = classes_per_batch * samples_per_class < embedding_dim
    eval_batches = _test_batches(len(X_test), eval_batch_size, seed)  # CPU indices (E_test is on the CPU)
    checkpoint_steps = np.unique(np.linspace(0, num_steps, num_checkpoints + 1).round().astype(int))
    spectra, train_spread = [], []

    def record_spectrum(step: int) -> None:
        E = _embed(model, X_test[eval_batches[0].to(device)])
        spectra.append(torch.linalg.svdvals(E).cpu().numpy())

    def step_fn(index: torch.Tensor, step: int) -> dict:
        if step in checkpoint_steps:
            record_spectrum(step)
        index = index.to(device)  # drawn on the CPU generator
        raw = model(X_train[index])
        E = F.normalize(raw, dim=1)
        labels = y_train[index]
        task = loss_fn(E, labels)
        reg = _regularizer(variant, raw, E, labels, lam, allow_fewer_rows)
        s_mu = svmax.mean_singular_value(E.detach(), allow_fewer_rows=allow_fewer_rows)
        return {"loss": task + reg, "task": task.detach(), "s_mu": s_mu}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, batches, step_fn, [optimizer], num_steps, log_every=10, progress=False)
    record_spectrum(num_steps)
    E_test = _embed(model, X_test).cpu()
    diverged = not bool(torch.isfinite(E_test).all())
    if diverged:
        recalls, nmi_value, spread = {k: float("nan") for k in RECALL_KS}, float("nan"), float("nan")
    else:
        recalls = recall_at_k(E_test, y_test, RECALL_KS)
        nmi_value = nmi(E_test, y_test, seed=seed)
        spread = float(np.mean([float(svmax.normalized_spread(E_test[i])) for i in eval_batches]))
    return {
        "loss": loss, "lr": lr, "seed": seed, "variant": variant, "lam": lam,
        "embedding_dim": embedding_dim, "batch_size": classes_per_batch * samples_per_class,
        "recall": {str(k): float(v) for k, v in recalls.items()}, "nmi": float(nmi_value),
        "spread": spread, "diverged": diverged,
        "spectrum_steps": checkpoint_steps.tolist(), "spectra": np.stack(spectra),
        "history": history.to_dict(),
        "warnings": sorted({str(w.message) for w in caught}),
    }


def train_unit_circle(variant: str, seed: int, *, num_epochs: int = 8, classes_per_batch: int = 10,
                      samples_per_class: int = 4, lr: float = 0.01, momentum: float = 0.9,
                      lam: float = 1.0, num_shown: int = 400, device: str = "cpu") -> dict:
    """Fig. 4 analogue: all ten digits embedded on the unit circle (d = 2), one snapshot per epoch."""
    check_choice("variant", variant, ("vanilla", "svmax"))
    check_device(device)
    X, y = all_digits()
    X = X.to(device)
    torch.manual_seed(seed)
    model = MLP(64, out_features=2).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    shown = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))[:num_shown]
    steps_per_epoch = math.ceil(len(X) / (classes_per_batch * samples_per_class))
    batches = class_balanced_batches(y, classes_per_batch, samples_per_class,
                                     generator=torch.Generator().manual_seed(seed))
    y_device, shown_device = y.to(device), shown.to(device)
    snapshots = [_embed(model, X[shown_device]).cpu().numpy()]

    def step_fn(index: torch.Tensor, step: int) -> dict:
        index = index.to(device)  # drawn on the CPU generator
        E = F.normalize(model(X[index]), dim=1)
        task = ranking_loss("contrastive")(E, y_device[index])
        reg = svmax.svmax_bounded(E, lam) if variant == "svmax" else E.new_zeros(())
        return {"loss": task + reg, "task": task.detach()}

    for _ in range(num_epochs):
        fit(model, batches, step_fn, [optimizer], steps_per_epoch, progress=False)
        snapshots.append(_embed(model, X[shown_device]).cpu().numpy())
    return {"variant": variant, "embeddings": np.stack(snapshots), "labels": y[shown].numpy()}


def _unrolled_discriminator(D, d_step, unroll_steps: int) -> dict:
    """First-order unrolling: take ``unroll_steps`` D steps, return the weights to restore."""
    saved = {k: v.detach().clone() for k, v in D.state_dict().items()}
    for _ in range(unroll_steps):
        d_step()
    return saved


def train_ring_gan(lr: float, lam: float, seed: int, *, num_steps: int = 1500, unroll_steps: int = 0,
                   num_checkpoints: int = 4, num_samples: int = 2500, batch_size: int = 256,
                   latent_dim: int = 16, std: float = 0.02, bins: int = 40, extent: float = 3.0,
                   device: str = "cpu") -> dict:
    """Part B: the 8-Gaussian ring GAN, non-saturating loss, ``- lam * s_mu`` of the fake batch (Eq. 1)."""
    check_device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    G, D = ring_gan_models(latent_dim)
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    centres = mixture_centres("ring")
    z_eval = torch.randn(num_samples, latent_dim, generator=generator).to(device)
    checkpoint_steps = np.unique(np.linspace(0, num_steps, num_checkpoints + 1).round().astype(int))
    checkpoint_steps[0] = 1 if num_steps else 0  # the paper's first panel is step 1
    edges = np.linspace(-extent, extent, bins + 1)
    heatmaps, modes, quality = [], [], []

    def real_batch() -> torch.Tensor:
        return sample_mixture(batch_size, "ring", std, generator=generator).to(device)

    def d_step() -> torch.Tensor:
        z = torch.randn(batch_size, latent_dim, generator=generator).to(device)
        fake = G(z).detach()
        # non-saturating GAN, D side: -log D(x) - log(1 - D(G(z)))
        loss = F.softplus(-D(real_batch())).mean() + F.softplus(D(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        return loss.detach()

    def snapshot() -> None:
        with torch.no_grad():
            samples = G(z_eval).cpu()
        counts, _, _ = np.histogram2d(samples[:, 0].numpy(), samples[:, 1].numpy(), bins=[edges, edges])
        heatmaps.append(counts.T.astype(np.float32))
        scores = mode_quality(samples, centres, std)
        modes.append(scores["modes_covered"])
        quality.append(scores["high_quality_fraction"])

    def step_fn(_, step: int) -> dict:
        d_loss = d_step()
        saved = _unrolled_discriminator(D, d_step, unroll_steps) if unroll_steps else None
        z = torch.randn(batch_size, latent_dim, generator=generator).to(device)
        fake = G(z)
        g_task = F.softplus(-D(fake)).mean()  # non-saturating: -log D(G(z))
        g_loss = g_task + (svmax.svmax_plain(fake, lam) if lam else 0.0)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if saved is not None:
            D.load_state_dict(saved)
        if step + 1 in checkpoint_steps:
            snapshot()
        return {"d_loss": d_loss, "g_loss": g_task.detach()}

    if 0 in checkpoint_steps:
        snapshot()
    history = fit(G, [None], step_fn, (), num_steps, log_every=25, progress=False)
    return {"lr": lr, "lam": lam, "seed": seed, "unroll_steps": unroll_steps,
            "checkpoint_steps": checkpoint_steps.tolist(), "heatmaps": np.stack(heatmaps),
            "modes_covered": np.array(modes), "high_quality": np.array(quality),
            "extent": extent, "history": history.to_dict()}
