"""labkit.methods.l2_caf: the constraint over the whole map and across channels, frozen weights,
the objectives, the stopping rule, batched equals looped, Grad-CAM against CAM, and the box
post-processing on hand-made heatmaps."""
import numpy as np
import pytest
import torch
from torch import nn

from labkit.methods import l2_caf


class GapNet(nn.Module):
    """conv → BN → ReLU → GAP → linear: the CAM-compatible classifier."""

    def __init__(self, classes=4, mlp=False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, classes)) if mlp else nn.Linear(6, classes)

    def head(self, A):
        return self.fc(A.mean(dim=(2, 3)))

    def forward(self, x):
        return self.head(self.features(x))


def _net(mlp=False):
    torch.manual_seed(0)
    net = GapNet(mlp=mlp)
    net.train()
    for _ in range(3):  # non-trivial BN statistics
        net(torch.rand(8, 1, 8, 8))
    return net.eval()


def _x(b=3):
    return torch.rand(b, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_the_filter_has_unit_norm_over_the_whole_map_and_is_shared_across_channels():
    f = torch.randn(2, 5, 5)
    f_hat = l2_caf.constrain(f)
    torch.testing.assert_close(f_hat.flatten(1).norm(dim=1), torch.ones(2))
    torch.testing.assert_close(l2_caf.constrain(f, "softmax").flatten(1).sum(1), torch.ones(2))
    assert torch.equal(l2_caf.constrain(f, "none"), f)
    net, x = _net(), _x(2)
    out = l2_caf.filtered_forward(net, "features", x)(torch.ones(2, 8, 8))
    torch.testing.assert_close(out, net(x))  # a filter of ones changes nothing
    A = l2_caf.capture(net, "features", x)
    f_hat = l2_caf.constrain(torch.rand(2, 8, 8))
    torch.testing.assert_close(l2_caf.filtered_forward(net, "features", x)(f_hat), net.head(A * f_hat[:, None]))


def test_a_run_leaves_weights_and_bn_statistics_bit_identical():
    net, x = _net(), _x()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()  # frozen() must switch to eval mode itself, or BN statistics would move
    with l2_caf.frozen(net):
        forward = l2_caf.filtered_forward(net, "features", x)
        l2_caf.optimise_filters(forward, (3, 8, 8), "oblivious", reference=net(x).detach(), max_iters=20)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in net.parameters()) and all(p.requires_grad for p in net.parameters())
    assert net.training  # the mode is restored


def test_objectives_by_hand():
    out = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    ref = torch.tensor([[1.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(l2_caf.objective(out, ref, "oblivious"), torch.tensor([4 / 3, 17 / 3]))
    torch.testing.assert_close(l2_caf.objective(out, None, "specific", torch.tensor([2, 0])),
                               torch.tensor([1 + 2 - 3.0, 0 - 1 + 4.0]))
    with pytest.raises(ValueError, match="target classes must lie in \\[0, 3\\)"):
        l2_caf.objective(out, None, "specific", torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="objective='both'"):
        l2_caf.objective(out, ref, "both")


def test_the_stopping_rule_compares_losses_fifty_iterations_apart():
    calls = []

    def constant(f_hat):  # a loss that never changes: stops at the first comparison, iteration 50
        calls.append(1)
        return (f_hat.flatten(1) * 0).sum(1, keepdim=True) + 1.0

    out = l2_caf.optimise_filters(constant, (2, 3, 3), "oblivious", reference=torch.zeros(2, 1), max_iters=1000)
    assert out["iterations"].tolist() == [50, 50] and len(out["losses"]) == 2 and len(calls) == 51


def test_batched_equals_the_one_image_loop():
    net, x = _net(), _x(4)
    A = l2_caf.capture(net, "features", x)
    reference = net.head(A).detach()
    initial = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(0))
    kwargs = dict(kind="oblivious", max_iters=300, tolerance=1e-4)
    batched = l2_caf.optimise_filters(lambda f: net.head(A * f[:, None]), (4, 8, 8), reference=reference,
                                      initial=initial, **kwargs)
    for i in range(4):  # the official way: one image at a time, from the same initial filter
        one = l2_caf.optimise_filters(lambda f, i=i: net.head(A[i:i + 1] * f[:, None]), (1, 8, 8),
                                      reference=reference[i:i + 1], initial=initial[i:i + 1], **kwargs)
        assert int(one["iterations"][0]) == int(batched["iterations"][i])
        torch.testing.assert_close(one["filters"][0], batched["filters"][i], atol=1e-5, rtol=1e-4)


def test_grad_cam_equals_cam_on_gap_linear_and_differs_on_an_mlp_head():
    net, x = _net(), _x(4)
    target = torch.tensor([0, 1, 2, 3])
    grad = l2_caf.grad_cam(net, "features", x, target)
    plain = torch.relu(l2_caf.cam(l2_caf.capture(net, "features", x), net.fc.weight, target))
    for g, c in zip(grad, plain):
        if c.abs().sum() > 0:
            assert np.corrcoef(g.flatten().numpy(), c.detach().flatten().numpy())[0, 1] > 0.999
    mlp = _net(mlp=True)
    embedding = l2_caf.grad_cam(mlp, "features", x)  # the self-similarity scalar of an embedding
    assert embedding.shape == (4, 8, 8) and torch.isfinite(embedding).all()


def test_heatmap_is_min_max_normalised_at_image_size():
    maps = l2_caf.heatmap(torch.randn(2, 4, 4), (16, 16))
    assert maps.shape == (2, 16, 16)
    torch.testing.assert_close(maps.flatten(1).amin(1), torch.zeros(2))
    torch.testing.assert_close(maps.flatten(1).amax(1), torch.ones(2))


def test_bad_layer_and_options():
    net = _net()
    with pytest.raises(ValueError, match="layer='layer9' is not a module"):
        l2_caf.capture(net, "layer9", _x())
    with pytest.raises(ValueError, match="constraint='gauss'"):
        l2_caf.constrain(torch.zeros(1, 2, 2), "gauss")
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        l2_caf.optimise_filters(lambda f: f.flatten(1), (1, 2, 2), reference=torch.zeros(1, 4), optimizer="rmsprop")


def test_gaussian_bump_peaks_at_its_mean_has_unit_norm_and_its_mean_is_the_only_parameter():
    bump = l2_caf.gaussian_bump(torch.tensor([[1.0, 5.0], [3.0, 3.0]]), 6, 7)
    assert bump.shape == (2, 6, 7)
    torch.testing.assert_close(bump.flatten(1).norm(dim=1), torch.ones(2))
    assert divmod(int(bump[0].argmax()), 7) == (1, 5) and divmod(int(bump[1].argmax()), 7) == (3, 3)
    net = _net()
    A = l2_caf.capture(net, "features", _x(2))
    out = l2_caf.optimise_filters(lambda f: net.head(A * f[:, None]), (2, 8, 8), "specific",
                                  target=torch.tensor([0, 1]), constraint="gaussian", max_iters=60)
    assert out["parameters"].shape == (2, 2)
    torch.testing.assert_close(out["filters"], l2_caf.gaussian_bump(out["parameters"], 8, 8))
    with pytest.raises(ValueError, match="constraint='gaussian' is parametrised"):
        l2_caf.constrain(torch.ones(1, 2, 2), "gaussian")


def _losses(constraint, kind, init="normal", iters=400):
    net = _net()
    x = _x(3)
    A = l2_caf.capture(net, "features", x)
    with torch.no_grad():
        reference = net(x)
    return l2_caf.optimise_filters(lambda f: net.head(A * f[:, None]), (3, 8, 8), kind, reference=reference,
                                   target=torch.tensor([0, 1, 2]), constraint=constraint, init=init,
                                   max_iters=iters, tolerance=0.0, check_every=10, optimizer="adam",
                                   generator=torch.Generator().manual_seed(0))


def test_without_the_constraint_the_class_specific_loss_diverges_and_with_it_stays_bounded():
    free, unit = _losses("none", "specific"), _losses("l2", "specific")
    free_curve, unit_curve = np.array(free["losses"]), np.array(unit["losses"])
    # unconstrained: the loss keeps falling and the filter norm grows far beyond its start
    assert (np.diff(free_curve[-10:], axis=0) < 0).all()
    assert (free["filters"].flatten(1).norm(dim=1) > 10 * 8).all()  # a N(0,1) 8×8 filter starts near norm 8
    assert free_curve[-1].max() < unit_curve[-1].min() - 10 * np.abs(unit_curve[-1]).max()
    # constrained: |FT| ≤ ‖head weights‖·‖A‖ bounds the loss; its last steps barely move
    assert np.abs(np.diff(unit_curve[-5:], axis=0)).max() < 1e-2 * np.abs(unit_curve[-1]).max()


def test_without_the_constraint_the_class_oblivious_loss_is_solved_by_a_flat_map():
    flat = _losses("none", "oblivious", init="ones", iters=50)
    assert max(flat["losses"][0]) < 1e-10  # f ≡ 1 reproduces the output exactly
    assert torch.equal(flat["filters"], torch.ones(3, 8, 8))  # and nothing moves it
    unit = _losses("l2", "oblivious", init="ones", iters=50)
    assert min(unit["losses"][0]) > 1e-4  # unit norm shrinks the GAP output: the trivial answer is gone


def test_on_a_gap_linear_head_class_specific_l2_caf_reaches_its_closed_form():
    # FT = W·mean_u(A_u f̂_u) + b is linear in f̂, so the loss is ⟨f̂, g⟩ with
    # g_u = (−w_c + Σ_{j≠c} w_j)·A_u / HW, minimised on the unit sphere by f̂ = −g / ‖g‖.
    net = _net()
    x, target = _x(3), torch.tensor([0, 1, 3])
    A = l2_caf.capture(net, "features", x)
    out = l2_caf.optimise_filters(lambda f: net.head(A * f[:, None]), (3, 8, 8), "specific", target=target,
                                  max_iters=1000, generator=torch.Generator().manual_seed(0))
    sign = torch.ones(3, 4).scatter_(1, target[:, None], -1.0)
    g = torch.einsum("bk,kc,bchw->bhw", sign, net.fc.weight, A) / 64
    closed = -g / g.flatten(1).norm(dim=1)[:, None, None]
    assert (out["filters"] * closed).flatten(1).sum(1).min() > 0.999  # cosine to the optimum
