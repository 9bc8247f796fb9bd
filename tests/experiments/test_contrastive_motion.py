"""Chapter 09 (hierarchical contrastive motion), single runs: the pools, the rows' networks, Stage A
and Stage B on a few steps, and the measurements (accuracy, probes, top-1, displacement R²)."""
import numpy as np
import pytest
import torch

from labkit.data.moving_shapes import MOTIONS
from labkit.experiments import contrastive_motion_runs as runs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pools():
    return runs.make_pools(unlabeled=24, labeled_per_class=2, test_per_class=2, frames=5, size=16)


def test_pools_are_balanced_and_the_test_clips_do_not_move_with_the_budget(pools):
    assert len(pools.labeled.labels) == 2 * len(MOTIONS) and len(pools.test.labels) == 2 * len(MOTIONS)
    assert torch.equal(torch.bincount(pools.labeled.labels), torch.full((len(MOTIONS),), 2))
    assert pools.unlabeled.clips.shape == (24, 5, 1, 16, 16)
    more = runs.make_pools(unlabeled=24, labeled_per_class=3, test_per_class=2, frames=5, size=16)
    torch.testing.assert_close(more.test.clips, pools.test.clips)
    torch.testing.assert_close(more.unlabeled.clips, pools.unlabeled.clips)
    with pytest.raises(ValueError, match="labeled_per_class=0"):
        runs.make_pools(labeled_per_class=0)


@pytest.mark.parametrize("kind", list(runs.KINDS))
def test_every_row_trains_and_is_measured(pools, kind):
    torch.manual_seed(0)
    net = runs.build_net(kind, widths=(4, 8, 8), proj_dim=8)
    if net.levels:
        history = runs.stage_a(net, pools.unlabeled, steps=3, batch_size=4, num_anchors=16)
        assert {"nce1", "nce2", "top1_1", "top1_2"} <= set(history)
    else:
        with pytest.raises(ValueError, match="needs a motion pathway"):
            runs.stage_a(net, pools.unlabeled, steps=1)
    history = runs.stage_b(net, pools.labeled, steps=3, batch_size=4, aux_weight=0.1 if net.levels else 0.0,
                           unlabeled=pools.unlabeled, num_anchors=16)
    assert np.isfinite(history["loss"]["value"]).all()
    acc = runs.accuracy(net, pools.test)
    assert 0 <= acc["overall"] <= 1 and 0 <= acc["out_and_back"] <= 1 and len(acc["correct"]) == len(pools.test.labels)
    probes = runs.probe_accuracy(net, pools.labeled, pools.test)
    assert set(probes) == {"z0", *[f"m{l + 1}" for l in range(net.levels)]}
    if net.levels and kind != "oracle":
        top1 = runs.contrastive_top1(net, pools.test, num_anchors=16)
        assert set(top1) == {"level 1", "level 2"} and all(0 <= v <= 1 for v in top1.values())
        assert runs.displacement_r2(net, pools.labeled, pools.test) <= 1.0


def test_bad_kind_is_named():
    with pytest.raises(ValueError, match="kind='flow'.*'appearance', 'rgb-difference', 'motion', 'oracle'"):
        runs.build_net("flow")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("kind", list(runs.KINDS))
def test_every_row_trains_on_cuda_and_is_measured_on_the_cpu(pools, kind):
    histories, measured = {}, {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        net = runs.build_net(kind, widths=(4, 8, 8), proj_dim=8).to(device)
        histories[device] = runs.stage_b(net, pools.labeled, steps=2, batch_size=4)
        if net.levels and kind != "oracle":
            runs.stage_a(net, pools.unlabeled, steps=2, batch_size=4, num_anchors=16)
            measured[device] = (runs.contrastive_top1(net, pools.test, num_anchors=16),
                                runs.displacement_r2(net, pools.labeled, pools.test))
        acc = runs.accuracy(net, pools.test)
        assert acc["correct"].shape == (len(pools.test.labels),) and 0 <= acc["overall"] <= 1
        assert set(runs.probe_accuracy(net, pools.labeled, pools.test)) == {"z0", *[f"m{l + 1}" for l in
                                                                                   range(net.levels)]}
    # the same initialisation and first batch: the first loss agrees (TF32 convolutions aside)
    assert histories["cuda"]["ce"]["value"][0] == pytest.approx(histories["cpu"]["ce"]["value"][0], rel=2e-2)
    if measured:
        top1, r2 = measured["cuda"]
        assert set(top1) == set(measured["cpu"][0]) and all(0 <= v <= 1 for v in top1.values())
        assert np.isfinite(r2) and r2 <= 1.0
