"""Lottery tickets: exact sparsity under ties, a NumPy reference for the global threshold, shrinking
masks, masks that survive optimizers and loads, rewinding, and the reporting helpers."""
import collections
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from labkit.methods import lottery
from labkit.models.tiny_detector import TinyDetector


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def small_model(seed=0):
    """conv 4x2x3x3 (+4 bias), BN(4) (8 params), fc 3x4 (+3 bias): 84 prunable of 99 parameters."""
    torch.manual_seed(seed)
    return nn.Sequential(collections.OrderedDict(
        conv=nn.Conv2d(2, 4, 3), bn=nn.BatchNorm2d(4), pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(), fc=nn.Linear(4, 3)))


def random_weights(shapes=((6, 5), (4, 3, 2, 2), (17, 3)), seed=0):
    g = generator(seed)
    return {f"w{i}": torch.randn(*s, generator=g) for i, s in enumerate(shapes)}


def count(masks):
    return sum(int(m.sum()) for m in masks.values())


def train(model, optimizer, steps, seed=0):
    g = generator(seed)
    for _ in range(steps):
        x, y = torch.randn(8, 2, 5, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


# ---- keep schedule ---------------------------------------------------------------------------

def test_keep_schedule_one_shot_and_iterative():
    assert lottery.keep_schedule(0.2, 2) == [0.2]
    assert lottery.keep_schedule(1.0, 3) == [1.0, 1.0]
    assert lottery.keep_schedule(0.1, 4) == pytest.approx([0.1 ** (1 / 3), 0.1 ** (2 / 3), 0.1], rel=1e-12)


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, True, "a"])
def test_keep_schedule_rejects_bad_keep(bad):
    with pytest.raises(ValueError, match="keep="):
        lottery.keep_schedule(bad, 3)


@pytest.mark.parametrize("bad", [1, 2.5, True])
def test_keep_schedule_rejects_bad_num_rounds(bad):
    with pytest.raises(ValueError, match="num_rounds="):
        lottery.keep_schedule(0.5, bad)


# ---- prunable weights ------------------------------------------------------------------------

def test_prunable_weights_selects_conv_and_linear_weights_only():
    model = small_model()
    assert set(lottery.prunable_weights(model)) == {"conv.weight", "fc.weight"}
    assert set(lottery.prunable_weights(model, ["conv", "bn"])) == {"conv.weight"}
    assert set(lottery.prunable_weights(model, exclude=["fc"])) == {"conv.weight"}
    assert lottery.prunable_weights(model)["fc.weight"] is model.fc.weight  # the parameters, not copies
    with pytest.raises(ValueError, match=r"'head'.*\['bn', 'conv', 'fc'\]"):
        lottery.prunable_weights(model, ["head"])
    # a prefix matches whole module names only: "fc" is not "fc2"
    two = nn.Sequential(collections.OrderedDict(fc=nn.Linear(2, 2), fc2=nn.Linear(2, 2)))
    assert set(lottery.prunable_weights(two, ["fc"])) == {"fc.weight"}


def test_prunable_weights_of_the_tiny_detector():
    model = TinyDetector(num_classes=3, widths=(8, 8, 8), fc_dim=16)
    weights = lottery.prunable_weights(model, ("base", "rpn", "top"), exclude=("rpn.objectness", "rpn.deltas"))
    assert set(weights) == {"base.conv1.conv.weight", "base.conv2.conv.weight", "base.conv3.conv.weight",
                            "rpn.conv.weight", "top.fc1.weight", "top.fc2.weight"}


# ---- exact counts, ties and the global threshold ---------------------------------------------

TIE_SHAPES = ((3, 5), (7, 2), (4, 4, 1, 1))  # 15 + 14 + 16 = 45 weights


@pytest.mark.parametrize("keep", [0.5, 0.3, 0.1, 0.77, 1.0])
def test_all_equal_weights_keep_exactly_floor_keep_n(keep):
    weights = {f"w{i}": (-1.0) ** i * torch.ones(s) for i, s in enumerate(TIE_SHAPES)}  # |w| all tie
    masks = lottery.global_magnitude_masks(weights, keep)
    assert count(masks) == math.floor(keep * 45)
    flat = torch.cat([masks[n].flatten() for n in weights])
    assert flat[:math.floor(keep * 45)].all() and not flat[math.floor(keep * 45):].any()  # ties by position
    layer = lottery.layerwise_magnitude_masks(weights, keep)
    for name, w in weights.items():
        assert int(layer[name].sum()) == math.floor(keep * w.numel())
        assert layer[name].shape == w.shape and layer[name].dtype == torch.bool


def test_ties_at_the_threshold_keep_exactly_floor_keep_n():
    g = generator(3)
    weights = {f"w{i}": torch.tensor([1.0, 2.0, 3.0])[torch.randint(0, 3, s, generator=g)]
               * torch.where(torch.rand(s, generator=g) < 0.5, -1.0, 1.0) for i, s in enumerate(TIE_SHAPES)}
    for keep in [0.2, 0.5, 0.6, 0.9]:
        masks = lottery.global_magnitude_masks(weights, keep)
        assert count(masks) == math.floor(keep * 45)
        kept = torch.cat([weights[n][masks[n]].abs() for n in weights])
        dropped = torch.cat([weights[n][~masks[n]].abs() for n in weights])
        if len(kept) and len(dropped):
            assert kept.min() >= dropped.max()
        for name, w in lottery.layerwise_magnitude_masks(weights, keep).items():
            assert int(w.sum()) == math.floor(keep * weights[name].numel())


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.2, 0.05, 0.013])
def test_global_threshold_matches_numpy_reference(keep):
    weights = random_weights(seed=int(keep * 1000))
    scores = np.concatenate([w.numpy().ravel() for w in weights.values()])
    k = math.floor(keep * len(scores))
    reference = np.zeros(len(scores), dtype=bool)
    reference[np.argsort(-np.abs(scores), kind="stable")[:k]] = True
    masks = lottery.global_magnitude_masks(weights, keep)
    np.testing.assert_array_equal(np.concatenate([masks[n].numpy().ravel() for n in weights]), reference)


def test_global_and_layerwise_differ_on_unequal_layers():
    g = generator(1)
    weights = {"big": 10.0 + torch.rand(20, 10, generator=g), "small": 0.1 * torch.rand(20, 10, generator=g)}
    glob = lottery.layer_sparsity(lottery.global_magnitude_masks(weights, 0.5))
    layer = lottery.layer_sparsity(lottery.layerwise_magnitude_masks(weights, 0.5))
    assert glob == {"big": 0.0, "small": 1.0}
    assert layer == pytest.approx({"big": 0.5, "small": 0.5})


# ---- masks only shrink -----------------------------------------------------------------------

@pytest.mark.parametrize("prune", [lottery.global_magnitude_masks, lottery.layerwise_magnitude_masks])
def test_pruning_again_keeps_a_subset_even_where_pruned_weights_grew(prune):
    weights = random_weights(seed=1)
    old = prune(weights, 0.5)
    grown = {n: torch.where(old[n], w, 100.0 * w.sign()) for n, w in weights.items()}  # pruned are now largest
    new = prune(grown, 0.2, old)
    for name in weights:
        assert not (new[name] & ~old[name]).any()
    if prune is lottery.global_magnitude_masks:
        assert count(new) == math.floor(0.2 * sum(w.numel() for w in weights.values()))
    else:
        assert all(int(new[n].sum()) == math.floor(0.2 * w.numel()) for n, w in weights.items())
    same = prune(grown, 0.5, old)  # the same keep changes nothing
    assert all(torch.equal(same[n], old[n]) for n in weights)


@pytest.mark.parametrize("prune", [lottery.global_magnitude_masks, lottery.layerwise_magnitude_masks])
def test_surviving_zeros_rank_above_pruned_entries(prune):
    weights = {"a": torch.zeros(10), "b": torch.zeros(6)}
    old = {"a": torch.arange(10) >= 5, "b": torch.arange(6) >= 3}  # the *last* half survives
    new = prune(weights, 0.25, old)
    expected = 4 if prune is lottery.global_magnitude_masks else 2 + 1  # floor(0.25*16); floor(2.5)+floor(1.5)
    assert count(new) == expected
    assert all(not (new[n] & ~old[n]).any() for n in weights)


@pytest.mark.parametrize("prune", [lottery.global_magnitude_masks, lottery.layerwise_magnitude_masks])
def test_growing_the_keep_is_refused(prune):
    weights = random_weights()
    old = prune(weights, 0.3)
    with pytest.raises(ValueError, match="keep"):
        prune(weights, 0.5, old)


# ---- masks survive optimizers and loads ------------------------------------------------------

@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2)], ids=["sgd", "adamw"])
@pytest.mark.parametrize("enforce", [True, False])
def test_masked_weights_stay_zero_only_when_enforced(make_optimizer, enforce):
    model = small_model()
    optimizer = make_optimizer(model.parameters())
    train(model, optimizer, 3, seed=1)  # momentum / moments built while dense
    masks = lottery.global_magnitude_masks(lottery.prunable_weights(model), 0.4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if enforce:
        lottery.enforce_masks(model, masks, optimizer)
    else:
        lottery.apply_masks(model, masks)
    train(model, optimizer, 5, seed=2)
    params = dict(model.named_parameters())
    pruned = torch.cat([params[n].detach()[~m] for n, m in masks.items()])
    if enforce:
        assert torch.equal(pruned, torch.zeros_like(pruned))
    else:
        assert (pruned != 0).sum() > 0.9 * len(pruned)  # momentum, decay and gradients revive them
    kept = torch.cat([params[n].detach()[m] for n, m in masks.items()])
    assert not torch.equal(kept, torch.cat([before[n][m] for n, m in masks.items()]))  # training happened


def test_loading_a_dense_state_dict_is_masked_again_and_handles_detach():
    model = small_model()
    dense = copy.deepcopy(model.state_dict())
    masks = lottery.layerwise_magnitude_masks(lottery.prunable_weights(model), 0.5)
    handles = lottery.enforce_masks(model, masks)
    model.load_state_dict(dense)
    for name, m in masks.items():
        assert torch.equal(model.state_dict()[name], dense[name] * m)
        assert (dense[name][~m] != 0).all()
    for handle in handles:
        handle.remove()
    model.load_state_dict(dense)
    assert torch.equal(model.conv.weight, dense["conv.weight"])


def test_apply_masks_leaves_biases_and_batch_norm_alone():
    model = small_model()
    with torch.no_grad():
        model.bn.weight.fill_(2.0)
        model.bn.bias.fill_(-3.0)
    before = copy.deepcopy(model.state_dict())
    masks = lottery.full_masks(lottery.prunable_weights(model))
    masks = {n: torch.zeros_like(m) for n, m in masks.items()}  # prune everything prunable
    lottery.apply_masks(model, masks)
    assert not model.conv.weight.any() and not model.fc.weight.any()
    for name in ["conv.bias", "bn.weight", "bn.bias", "fc.bias"]:
        assert torch.equal(model.state_dict()[name], before[name])
    with pytest.raises(ValueError, match="head.weight"):
        lottery.apply_masks(model, {"head.weight": torch.ones(1, dtype=torch.bool)})


# ---- rewind ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make_optimizer, state_keys", [
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2), ["momentum_buffer"]),
    (lambda p: torch.optim.AdamW(p, lr=1e-2), ["exp_avg", "exp_avg_sq", "step"])], ids=["sgd", "adamw"])
def test_rewind_restores_masked_weights_and_optimizer_state(make_optimizer, state_keys):
    model = small_model()
    optimizer = make_optimizer(model.parameters())
    train(model, optimizer, 3, seed=1)
    saved = lottery.checkpoint(model, optimizer, step=3)
    snapshot_model = {k: v.clone() for k, v in model.state_dict().items()}
    snapshot_opt = copy.deepcopy(optimizer.state_dict()["state"])
    train(model, optimizer, 4, seed=2)
    for k, v in snapshot_model.items():  # the checkpoint did not follow training
        assert torch.equal(saved["model"][k], v)
    assert not torch.equal(model.state_dict()["conv.weight"], snapshot_model["conv.weight"])
    masks = lottery.global_magnitude_masks(lottery.prunable_weights(model), 0.3)
    assert lottery.rewind(model, optimizer, saved, masks) == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot_model[k] * masks[k] if k in masks else snapshot_model[k]), k
    state = optimizer.state_dict()["state"]
    assert set(state) == set(snapshot_opt) and len(state) == len(list(model.parameters()))
    for i, entry in snapshot_opt.items():
        for key in state_keys:
            assert torch.equal(torch.as_tensor(state[i][key]), torch.as_tensor(entry[key])), (i, key)
    train(model, optimizer, 1, seed=3)  # training after the rewind does not alter the checkpoint
    assert all(torch.equal(saved["model"][k], v) for k, v in snapshot_model.items())


def test_rewind_without_a_model_entry_is_refused():
    model = small_model()
    with pytest.raises(ValueError, match="model"):
        lottery.rewind(model, None, {"step": 0})


# ---- reporting -------------------------------------------------------------------------------

def test_sparsity_and_layer_sparsity_by_hand():
    model = small_model()
    masks = {"conv.weight": (torch.arange(72) >= 36).view(4, 2, 3, 3),  # 36 of 72 pruned
             "fc.weight": (torch.arange(12) >= 3).view(3, 4)}  # 3 of 12 pruned
    report = lottery.sparsity(model, masks)
    assert (report["num_pruned"], report["num_prunable"], report["num_parameters"]) == (39, 84, 99)
    assert report["prunable"] == pytest.approx(39 / 84)
    assert report["network"] == pytest.approx(39 / 99)
    assert lottery.layer_sparsity(masks) == pytest.approx({"conv.weight": 0.5, "fc.weight": 0.25})


def test_mask_iou():
    a = {"x": torch.tensor([True, True, False, False]), "y": torch.tensor([True, True])}
    b = {"x": torch.tensor([False, True, True, False]), "y": torch.tensor([True, False])}
    assert lottery.mask_iou(a, a) == 1.0
    assert lottery.mask_iou(a, {n: ~m for n, m in a.items()}) == 0.0
    assert lottery.mask_iou(a, b) == pytest.approx(2 / 5)  # intersection 1 + 1, union 3 + 2
    with pytest.raises(ValueError):
        lottery.mask_iou(a, {"x": a["x"]})


def test_random_masks_keep_counts_and_are_reproducible():
    masks = lottery.layerwise_magnitude_masks(random_weights(seed=2), 0.3)
    first = lottery.random_masks_like(masks, generator(7))
    again = lottery.random_masks_like(masks, generator(7))
    other = lottery.random_masks_like(masks, generator(8))
    for name, m in masks.items():
        assert first[name].shape == m.shape and first[name].dtype == torch.bool
        assert int(first[name].sum()) == int(m.sum())
        assert torch.equal(first[name], again[name])
    assert not all(torch.equal(first[n], masks[n]) for n in masks)
    assert not all(torch.equal(first[n], other[n]) for n in masks)


def test_kept_count_is_not_fooled_by_float_noise():
    assert 0.29 * 100 < 29 and lottery.kept_count(0.29, 100) == 29
    assert lottery.kept_count(0.5, 7) == 3
    with pytest.raises(ValueError, match="keep="):
        lottery.kept_count(0.0, 10)


def test_close_float64_magnitudes_do_not_tie():
    weights = {"a": torch.tensor([1.0, 1.0 + 1e-12], dtype=torch.float64)}
    assert lottery.global_magnitude_masks(weights, 0.5)["a"].tolist() == [False, True]


def test_prunable_weights_rejects_names_that_match_nothing():
    det = TinyDetector(num_classes=3, widths=(8, 8, 8), fc_dim=16)
    with pytest.raises(ValueError, match="modules entry 'base.conv9'"):
        lottery.prunable_weights(det, ("base.conv9",))
    with pytest.raises(ValueError, match="exclude entry 'rpn.objectnes'"):
        lottery.prunable_weights(det, ("rpn",), exclude=("rpn.objectnes",))


def test_mask_iou_refuses_different_shapes():
    with pytest.raises(ValueError, match="shapes"):
        lottery.mask_iou({"x": torch.tensor([True, False, True])}, {"x": torch.tensor([True])})
