"""labkit.methods.contrastive_motion: causality of every level (and a test that would catch a
non-causal encoder), InfoNCE against a hand computation, positives at the same (clip, time,
position), stop-gradient, the spatial-only negatives, fusion variants and bad input."""
import math

import pytest
import torch

from labkit.methods import contrastive_motion as cm


def _net(**kwargs):
    torch.manual_seed(0)
    kwargs = {**dict(widths=(4, 8, 8), levels=2, proj_dim=6), **kwargs}
    return cm.HierarchicalMotionNet(num_classes=8, **kwargs).eval()


def _clips(b=2, frames=5, size=16):
    return torch.rand(b, frames, 1, size, size, generator=torch.Generator().manual_seed(1))


def _causal_violations(net, clips, t):
    """Levels whose motion at steps ≤ t changes when frame t + 1 changes."""
    out = net(clips)
    changed = clips.clone()
    changed[:, t + 1] = torch.rand_like(changed[:, t + 1])
    again = net(changed)
    return [l for l, (a, b) in enumerate(zip(out["motion"], again["motion"]), start=1)
            if not torch.allclose(a[:, :t + 1], b[:, :t + 1])]


@pytest.mark.parametrize("t", [0, 1, 3])
def test_motion_at_t_never_sees_frame_t_plus_1(t):
    assert _causal_violations(_net(), _clips(), t) == []


def test_the_causality_check_catches_a_non_causal_encoder():
    class Peeking(cm.MotionEncoder):  # looks at the *next* step: what the check must reject
        def forward(self, x):
            after = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
            b, frames = x.shape[:2]
            out = self.layers(torch.cat([x, after], dim=2).flatten(0, 1))
            return out.reshape(b, frames, *out.shape[1:])

    net = _net()
    net.encoders[0] = Peeking(4, 8).eval()
    assert 1 in _causal_violations(net, _clips(), 1)


def test_previous_step_pads_with_zeros_not_a_wrap_around():
    x = torch.arange(1, 4).float().reshape(1, 3, 1)
    assert cm.previous_step(x).flatten().tolist() == [0.0, 1.0, 2.0]


def test_info_nce_matches_a_hand_computation():
    prediction = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    tau = 0.5
    loss, top1 = cm.info_nce(prediction, target, tau)
    row0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0.6 / tau)))
    row1 = -math.log(math.exp(0.8 / tau) / (math.exp(0.0 / tau) + math.exp(0.8 / tau)))
    assert float(loss) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert float(top1) == 1.0


def test_spatial_negatives_only_compete_within_a_group():
    torch.manual_seed(0)
    p, t = torch.nn.functional.normalize(torch.randn(6, 4), dim=1), torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    loss, _ = cm.info_nce(p, t, 0.1, groups)
    by_hand = (cm.info_nce(p[:3], t[:3], 0.1)[0] + cm.info_nce(p[3:], t[3:], 0.1)[0]) / 2
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


def test_predictions_pair_step_t_with_the_target_at_t_plus_1():
    net = _net()
    out = net(_clips())
    prediction, target = net.predictions(out, level=1)
    assert prediction.shape == target.shape == (2, 4, 6, 8, 8)
    torch.testing.assert_close(prediction.norm(dim=2), torch.ones(2, 4, 8, 8))
    # the target at index t is built from step t + 1 of the level below (z0 pooled to the level's grid)
    pooled = torch.nn.functional.adaptive_avg_pool2d(out["z0"].flatten(0, 1), (8, 8)).reshape(2, 5, 4, 8, 8)
    expected = torch.nn.functional.normalize(net.targets[0](pooled[:, 1:].flatten(0, 1)), dim=1).reshape(2, 4, 6, 8, 8)
    torch.testing.assert_close(target, expected)


def test_anchors_are_distinct_and_skip_padded_steps():
    anchors = cm.sample_anchors(batch=3, steps=4, positions=5, num_anchors=40, first_step=1,
                                generator=torch.Generator().manual_seed(0))
    assert len(anchors) == 40 and len({tuple(a) for a in anchors.tolist()}) == 40
    assert int(anchors[:, 1].min()) >= 1 and int(anchors[:, 1].max()) <= 3
    everything = cm.sample_anchors(batch=1, steps=2, positions=3, num_anchors=100)
    assert len(everything) == 6  # capped at all there are
    with pytest.raises(ValueError, match="first_step=4"):
        cm.sample_anchors(batch=1, steps=4, positions=3, num_anchors=5, first_step=4)
    with pytest.raises(ValueError, match="num_anchors=0"):
        cm.sample_anchors(batch=1, steps=4, positions=3, num_anchors=0)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_blocks_the_target_path(stop_gradient):
    net = _net().train()
    _, target = net.predictions(net(_clips()), level=1, stop_gradient=stop_gradient)
    # the target is Q(pool(z0 at t + 1)): without sg its gradient reaches the stem, with sg it does not
    stem_grad, head_grad = torch.autograd.grad(target.sum(), [net.stem[0].weight, net.targets[0].weight],
                                               allow_unused=True)
    assert head_grad is not None and float(head_grad.abs().sum()) > 0  # the target head itself still learns
    blocked = stem_grad is None or float(stem_grad.abs().sum()) == 0.0
    assert blocked == stop_gradient


def test_l2_loss_and_top1_are_reported():
    net = _net().train()
    out = net(_clips())
    for loss in cm.LOSSES:
        result = cm.prediction_loss(net, out, level=2, num_anchors=16, loss=loss,
                                    generator=torch.Generator().manual_seed(0))
        assert result["loss"].ndim == 0 and 0 <= float(result["top1"]) <= 1 and result["anchors"] == 16


def test_fusion_variants_and_appearance_only():
    clips = _clips()
    top = _net(fusion="top")
    assert top.fused_levels() == {1}
    assert _net().fused_levels() == {0, 1}
    appearance = _net(motion_input="none")
    out = appearance(clips)
    assert out["motion"] == [] and out["logits"].shape == (2, 8) and len(appearance.encoders) == 0
    frames = _net(motion_input="frames", with_difference=True)
    assert frames(clips)["motion"][0].shape == (2, 5, 8, 8, 8)
    oracle = _net(motion_input="flow")
    assert oracle(clips, flow=torch.zeros(2, 5, 2, 16, 16))["logits"].shape == (2, 8)
    with pytest.raises(ValueError, match="flow must be given exactly"):
        oracle(clips)


@pytest.mark.parametrize("kwargs, match", [
    (dict(levels=3), "levels=3.*at most 2"), (dict(fusion="middle"), "fusion='middle'"),
    (dict(motion_input="optical"), "motion_input='optical'"), (dict(widths=(4,)), "widths=\\(4,\\)"),
])
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _net(**kwargs)


def test_bad_losses_and_clips():
    net = _net()
    out = net(_clips())
    with pytest.raises(ValueError, match="loss='cosine'"):
        cm.prediction_loss(net, out, level=1, loss="cosine")
    with pytest.raises(ValueError, match="negatives='temporal'"):
        cm.prediction_loss(net, out, level=1, negatives="temporal")
    with pytest.raises(ValueError, match="level=3"):
        net.predictions(out, level=3)
    with pytest.raises(ValueError, match=r"\(b, T, C, H, W\)"):
        net(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="temperature=0"):
        cm.info_nce(torch.zeros(2, 2), torch.zeros(2, 2), 0)
