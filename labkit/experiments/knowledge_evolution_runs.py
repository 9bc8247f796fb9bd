"""One training run of chapter 02 (knowledge evolution): G generations of e epochs, or a control.

``train_generations`` takes plain arguments, seeds itself and returns plain data, so that
``labkit.cache.cached_runs`` can spread runs over processes and cache each one. Besides the
accuracies it returns which test items each network got right (``dense_correct``,
``slim_correct``), so that the chapter's claims can bootstrap over test items as well as seeds.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from labkit.config import check_choice, check_device, check_positive_int
from labkit.data import load_small_data
from labkit.methods import knowledge_evolution as ke
from labkit.models import init_weights, make_backbone
from labkit.train import every, fit

# ke: Algorithm 1. restart_only: the same per-generation restarts of optimizer and schedule, nothing
# re-initialised. full_reset: everything re-initialised each generation (BN included). single: one
# run of G·e epochs (the compute-matched baseline), evaluated every e epochs.
MODES = ("ke", "restart_only", "full_reset", "single")
# One conv per backbone whose kernel magnitudes the chapter shows across generations.
WATCHED_LAYER = {"resnet": "stages.1.conv1.weight", "plain": "blocks.1.0.weight"}


def _correct(model, X: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """``(n,)`` bool: which of the ``n`` items ``model`` classifies correctly (in eval mode)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        correct = torch.cat([model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]
                             for i in range(0, len(X), batch_size)])
    model.train(was_training)
    return correct.cpu().numpy()


def correct_fraction(correct: list[np.ndarray]) -> np.ndarray:
    """Accuracy of each per-item correctness array; NaN for an empty one (no slim net under WELS)."""
    return np.array([c.mean() if c.size else float("nan") for c in correct])


def _epoch_batches(num_samples: int, batch_size: int, generator: torch.Generator):
    """Shuffled mini-batches of indices, epoch after epoch (the last partial batch is kept)."""
    while True:
        yield from torch.randperm(num_samples, generator=generator).split(batch_size)


def _train(model, X, y, *, num_steps: int, lr: float, momentum: float, weight_decay: float,
           label_smoothing: float, batch_size: int, noise_std: float, generator: torch.Generator,
           evaluate_every: int = 0, evaluate=None) -> list:
    """``num_steps`` SGD steps with a fresh optimizer and one cosine schedule over them (one
    generation); ``evaluate()`` after every ``evaluate_every`` steps, its results returned."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(num_steps, 1))
    batches = _epoch_batches(len(X), batch_size, generator)
    checkpoints: list = []

    def step_fn(index: torch.Tensor, step: int) -> dict:
        index = index.to(X.device)  # drawn on the CPU generator: the same batches on any device
        inputs = X[index]
        if noise_std:  # light noise augmentation
            inputs = inputs + noise_std * torch.randn(inputs.shape, generator=generator).to(inputs.device)
        return {"loss": F.cross_entropy(model(inputs), y[index], label_smoothing=label_smoothing)}

    hooks = [every(evaluate_every, lambda state: checkpoints.append(evaluate()))] \
        if evaluate is not None and evaluate_every else []
    fit(model, batches, step_fn, [optimizer], num_steps, schedulers=[schedule], hooks=hooks,
        log_every=math.ceil(len(X) / batch_size), progress=False)
    return checkpoints


def train_generations(mode: str = "ke", *, dataset: str = "digits", samples_per_class: int = 15,
                      image_size: int = 16, num_classes: int = 0, data_seed: int = 0, backbone: str = "resnet",
                      split_kind: str = "kels", split_rate: float = 0.5, num_generations: int = 4,
                      epochs_per_generation: int = 15, steps_per_generation: int = 0,
                      test_samples_per_class: int = 0, reset_distribution: str = "default", seed: int = 0,
                      lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                      label_smoothing: float = 0.1, batch_size: int = 32, noise_std: float = 0.05,
                      device: str = "cpu") -> dict:
    """Train one network through ``num_generations`` generations; accuracies after each one.

    ``num_classes`` (glyphs only; 0 keeps the dataset's default) sets how many classes are drawn.
    ``steps_per_generation`` (0: ``epochs_per_generation`` epochs) fixes the SGD steps of a
    generation instead, so that runs on different training-set sizes get the same compute.
    ``test_samples_per_class`` (0: this run's own split) scores the run on the test part of the split
    with that many training images per class, so that a sweep over sizes shares one test set (digits
    draws training images nested by ``data_seed``, so a larger split's test part lies inside a
    smaller one's; the glyphs test part does not depend on the size).
    Trains on ``device`` (every random draw on a CPU generator, then moved); returns NumPy arrays.
    """
    check_choice("mode", mode, MODES)
    check_device(device)
    check_positive_int("num_generations", num_generations)
    check_positive_int("epochs_per_generation", epochs_per_generation)
    classes = {"num_classes": num_classes} if num_classes else {}  # glyphs: how many classes to draw
    data = load_small_data(dataset, samples_per_class=samples_per_class, size=image_size, seed=data_seed,
                           **classes)
    test = data if not test_samples_per_class else load_small_data(
        dataset, samples_per_class=test_samples_per_class, size=image_size, seed=data_seed, **classes)
    X_train, y_train = data.X_train.to(device), data.y_train.to(device)
    X_test, y_test = test.X_test.to(device), test.y_test.to(device)
    steps_per_epoch = math.ceil(len(X_train) / batch_size)
    num_steps = steps_per_generation or epochs_per_generation * steps_per_epoch
    check_positive_int("steps_per_generation", num_steps)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    def build(width_multiplier: float = 1.0):
        model = make_backbone(backbone, num_classes=data.num_classes, in_channels=X_train.shape[1],
                              width_multiplier=width_multiplier)
        return init_weights(model, generator).to(device)

    model = build()
    masks = ke.split_masks(model, split_kind, split_rate, generator)
    train_kwargs = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, label_smoothing=label_smoothing,
                        batch_size=batch_size, noise_std=noise_std, generator=generator)

    def slim_correct() -> np.ndarray:
        if split_kind != "kels":
            return np.zeros(0, dtype=bool)  # WELS fit hypotheses are sparse: no slim network
        slim = ke.extract_slim(model, build(split_rate), split_rate)
        return _correct(slim, X_test, y_test)

    watched = WATCHED_LAYER[backbone]
    record = {"dense": [], "slim": [], "train": [], "magnitude": [], "fit_reset_magnitude": []}

    def snapshot() -> None:
        weight = dict(model.named_parameters())[watched].detach().cpu()
        record["dense"].append(_correct(model, X_test, y_test))
        record["slim"].append(slim_correct())
        record["train"].append(float(_correct(model, X_train, y_train).mean()))
        record["magnitude"].append(ke.kernel_magnitude(weight).numpy())
        record["fit_reset_magnitude"].append(ke.mean_abs_weight_blocks(weight, split_rate))

    if mode == "single":  # one schedule over G generations' steps, evaluated where each generation would end
        checkpoints = _train(model, X_train, y_train, num_steps=num_generations * num_steps,
                             evaluate_every=num_steps, evaluate=lambda: _correct(model, X_test, y_test),
                             **train_kwargs)
        snapshot()
        record["dense"] = checkpoints[:-1] + record["dense"]
    else:
        for generation in range(num_generations):
            if generation and mode == "ke":
                ke.reinitialize_reset(model, masks, reset_distribution, generator)
            elif generation and mode == "full_reset":
                model = build()
            _train(model, X_train, y_train, num_steps=num_steps, **train_kwargs)
            snapshot()
    return {"mode": mode, "dataset": dataset, "samples_per_class": samples_per_class, "backbone": backbone,
            "split_kind": split_kind, "split_rate": split_rate, "reset_distribution": reset_distribution,
            "seed": seed, "num_generations": num_generations, "num_classes": data.num_classes,
            "chance": 1.0 / data.num_classes, "steps_per_generation": num_steps,
            # whole epochs as given, or the fraction of an epoch that steps_per_generation makes
            "epochs_per_generation": num_steps / steps_per_epoch if steps_per_generation else epochs_per_generation,
            "dense": correct_fraction(record["dense"]), "slim": correct_fraction(record["slim"]),
            "train": np.array(record["train"]), "dense_correct": np.stack(record["dense"]),
            "slim_correct": np.stack(record["slim"]),
            "magnitude": np.stack(record["magnitude"]), "watched_layer": watched,
            "fit_magnitude": np.array([m["fit"] for m in record["fit_reset_magnitude"]]),
            "reset_magnitude": np.array([m["reset"] for m in record["fit_reset_magnitude"]])}
