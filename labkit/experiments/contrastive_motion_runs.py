"""Single runs of chapter 09 (hierarchical contrastive motion learning): the clip pools, Stage A
(self-supervised), Stage B (supervised), and the measurements of a trained network.

- ``make_pools``: unlabeled, labeled and test clips of ``labkit.data.moving_shapes``, each from its
  own random stream (changing the labeled budget leaves the test clips unchanged);
- ``build_net``: the rows' networks (appearance only, RGB difference, the motion pathway, the oracle
  that reads the true displacement fields);
- ``stage_a``: the sum over levels of the prediction loss on unlabeled clips;
- ``stage_b``: cross-entropy on labeled clips (optionally with the auxiliary prediction loss);
- ``accuracy``, ``probe_accuracy`` (logistic regression on frozen, time- and space-pooled features of
  each level), ``contrastive_top1`` and ``displacement_r2`` (a linear map from level-1 features to the
  true displacement, scikit-learn's ridge).

The clips stay on the CPU; every batch goes to the network's device (``_forward``) and every
measured output comes back to the CPU (``_outputs``), so NumPy and scikit-learn see CPU arrays. The
random batches and anchors are drawn on CPU generators: a CPU run draws what it always drew.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from labkit.config import check_choice, check_positive_int
from labkit.data.moving_shapes import MOTIONS, OUT_AND_BACK, MovingShapes, make_moving_shapes
from labkit.methods import contrastive_motion as cm
from labkit.train import fit

__all__ = ["KINDS", "Pools", "make_pools", "build_net", "stage_a", "stage_b", "accuracy", "pooled_features",
           "probe_accuracy", "contrastive_top1", "displacement_r2"]

#: the rows' networks: what level 1 of the motion pathway reads
KINDS = {"appearance": dict(motion_input="none"), "rgb-difference": dict(motion_input="frames", with_difference=True),
         "motion": dict(motion_input="features"), "oracle": dict(motion_input="flow")}
_UNLABELED, _LABELED, _TEST = range(3)


@dataclasses.dataclass(frozen=True)
class Pools:
    unlabeled: MovingShapes
    labeled: MovingShapes
    test: MovingShapes


def _stream(seed: int, tag: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, 909, tag]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def make_pools(unlabeled: int = 600, labeled_per_class: int = 10, test_per_class: int = 50, frames: int = 6,
               size: int = 24, seed: int = 0, **clip_kwargs) -> Pools:
    """Class-balanced labeled and test clips, and unlabeled clips of uniformly drawn classes (their
    labels are never used for training)."""
    labeled_per_class = check_positive_int("labeled_per_class", labeled_per_class)
    unlabeled = check_positive_int("unlabeled", unlabeled)
    classes = torch.arange(len(MOTIONS))
    draw = torch.randint(len(MOTIONS), (unlabeled,), generator=_stream(seed, 99))

    def clips(labels: torch.Tensor, tag: int) -> MovingShapes:
        return make_moving_shapes(labels, frames, size, _stream(seed, tag), **clip_kwargs)

    return Pools(unlabeled=clips(draw, _UNLABELED),
                 labeled=clips(classes.repeat_interleave(labeled_per_class), _LABELED),
                 test=clips(classes.repeat_interleave(check_positive_int("test_per_class", test_per_class)), _TEST))


def build_net(kind: str = "motion", widths: tuple = (8, 16, 32), levels: int = 2, fusion: str = "all",
              proj_dim: int = 16) -> cm.HierarchicalMotionNet:
    check_choice("kind", kind, tuple(KINDS))
    return cm.HierarchicalMotionNet(len(MOTIONS), tuple(widths), levels, proj_dim, fusion, **KINDS[kind])


def _device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


def _forward(net: cm.HierarchicalMotionNet, data: MovingShapes, index: torch.Tensor) -> dict:
    """``net`` on the clips ``data.clips[index]`` (CPU), moved to the net's device; outputs stay there."""
    device = _device(net)
    flow = data.displacement[index].to(device) if net.motion_input == "flow" else None
    return net(data.clips[index].to(device), flow)


def _ssl_terms(net, out: dict, rng: torch.Generator, **loss_kwargs) -> tuple[torch.Tensor, dict]:
    total, logs = 0.0, {}
    for level in range(1, net.levels + 1):
        term = cm.prediction_loss(net, out, level, generator=rng, **loss_kwargs)
        total = total + term["loss"]
        logs[f"nce{level}"], logs[f"top1_{level}"] = term["loss"].detach(), term["top1"]
    return total, logs


def stage_a(net: cm.HierarchicalMotionNet, data: MovingShapes, steps: int, seed: int = 0, batch_size: int = 8,
            lr: float = 1e-3, **loss_kwargs) -> dict:
    """Self-supervised Stage A: ``Σ_l L^l`` on random batches of ``data``'s clips (labels unused).
    ``loss_kwargs`` go to ``prediction_loss`` (num_anchors, temperature, loss, negatives,
    stop_gradient). Returns the history (per-level loss and top-1)."""
    if not net.levels:
        raise ValueError("stage_a needs a motion pathway (levels >= 1)")
    rng = torch.Generator().manual_seed(seed + 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)

    def step_fn(_, step: int) -> dict:
        index = torch.randint(len(data.labels), (batch_size,), generator=rng)
        total, logs = _ssl_terms(net, _forward(net, data, index), rng, **loss_kwargs)
        return {"loss": total, **logs}

    return fit(net, [None], step_fn, [optimizer], steps, log_every=10, progress=False).to_dict()


def stage_b(net: cm.HierarchicalMotionNet, data: MovingShapes, steps: int, seed: int = 0, batch_size: int = 8,
            lr: float = 1e-3, aux_weight: float = 0.0, unlabeled: MovingShapes | None = None, **loss_kwargs) -> dict:
    """Supervised Stage B: cross-entropy on random batches of ``data`` (the labeled clips), plus
    ``aux_weight`` × the prediction loss on a batch of ``unlabeled`` clips when given."""
    rng = torch.Generator().manual_seed(seed + 20)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)

    def step_fn(_, step: int) -> dict:
        index = torch.randint(len(data.labels), (batch_size,), generator=rng)
        loss = F.cross_entropy(_forward(net, data, index)["logits"], data.labels[index].to(_device(net)))
        logs = {"ce": loss.detach()}
        if aux_weight and unlabeled is not None:
            extra = torch.randint(len(unlabeled.labels), (batch_size,), generator=rng)
            aux, _ = _ssl_terms(net, _forward(net, unlabeled, extra), rng, **loss_kwargs)
            loss = loss + aux_weight * aux
        return {"loss": loss, **logs}

    return fit(net, [None], step_fn, [optimizer], steps, log_every=10, progress=False).to_dict()


def _on_cpu(out: dict) -> dict:
    """A forward pass's ``logits``, ``z0`` and ``motion`` on the CPU (the same tensors there)."""
    return {"logits": out["logits"].cpu(), "z0": out["z0"].cpu(), "motion": [m.cpu() for m in out["motion"]]}


@torch.no_grad()
def _outputs(net, data: MovingShapes, batch_size: int = 100) -> list[dict]:
    """Eval-mode outputs over ``data`` in batches, on the CPU whatever the net's device."""
    was = net.training
    net.eval()
    out = [_on_cpu(_forward(net, data, torch.arange(i, min(i + batch_size, len(data.labels)))))
           for i in range(0, len(data.labels), batch_size)]
    net.train(was)
    return out


def accuracy(net, data: MovingShapes) -> dict:
    """Test accuracy overall and on the out-and-back pair, and the per-clip correctness."""
    predicted = torch.cat([o["logits"].argmax(1) for o in _outputs(net, data)])
    correct = (predicted == data.labels).numpy().astype(np.uint8)
    pair = np.isin(data.labels.numpy(), OUT_AND_BACK)
    return {"overall": float(correct.mean()), "out_and_back": float(correct[pair].mean()), "correct": correct}


def pooled_features(net, data: MovingShapes) -> dict[str, np.ndarray]:
    """Time- and space-pooled frozen features per clip: ``z0`` (appearance) and ``m1``, ``m2``, …"""
    outs = _outputs(net, data)
    features = {"z0": torch.cat([o["z0"].mean(dim=(1, 3, 4)) for o in outs]).numpy()}
    for level in range(net.levels):
        features[f"m{level + 1}"] = torch.cat([o["motion"][level].mean(dim=(1, 3, 4)) for o in outs]).numpy()
    return features


def probe_accuracy(net, train: MovingShapes, test: MovingShapes) -> dict[str, float]:
    """Linear-probe test accuracy of each level's pooled features (scikit-learn logistic regression,
    standardised features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, X_test = pooled_features(net, train), pooled_features(net, test)
    out = {}
    for name in X_train:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(X_train[name], train.labels.numpy())
        out[name] = float(probe.score(X_test[name], test.labels.numpy()))
    return out


@torch.no_grad()
def contrastive_top1(net, data: MovingShapes, num_anchors: int = 256, seed: int = 0, **loss_kwargs) -> dict:
    """Per level, how often the true future wins among ``num_anchors`` sampled targets (chance
    1 / num_anchors), in eval mode on one batch of ``data``."""
    rng = torch.Generator().manual_seed(seed + 30)
    index = torch.randperm(len(data.labels), generator=rng)[:32]
    was = net.training
    net.eval()
    out = _forward(net, data, index)
    top1 = {f"level {level}": float(cm.prediction_loss(net, out, level, num_anchors=num_anchors, generator=rng,
                                                       **loss_kwargs)["top1"])
            for level in range(1, net.levels + 1)}
    net.train(was)
    return top1


def displacement_r2(net, train: MovingShapes, test: MovingShapes, level: int = 1) -> float:
    """R² on ``test`` of a ridge map from level-``level`` motion features at each position to the
    true displacement averaged over that position's cell (steps 1…T−2: defined and not padded)."""
    from sklearn.linear_model import Ridge

    def table(data: MovingShapes) -> tuple[np.ndarray, np.ndarray]:
        m = torch.cat([o["motion"][level - 1] for o in _outputs(net, data)])  # (n, T, C, h, w)
        flow = F.adaptive_avg_pool2d(data.displacement.flatten(0, 1), m.shape[-2:])
        flow = flow.reshape(*data.displacement.shape[:2], 2, *m.shape[-2:])
        # m at t has seen steps t-1 and t: it can know the displacement t-1 -> t
        X = m[:, 1:-1].permute(0, 1, 3, 4, 2).reshape(-1, m.shape[2]).numpy()
        y = flow[:, :-2].permute(0, 1, 3, 4, 2).reshape(-1, 2).numpy()
        return X, y

    X_train, y_train = table(train)
    X_test, y_test = table(test)
    return float(Ridge(alpha=1.0).fit(X_train, y_train).score(X_test, y_test))
