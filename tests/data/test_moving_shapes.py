"""labkit.data.moving_shapes: the motion classes, the out-and-back pair, appearance independent of the
class, the displacement field, determinism, time folding and bad input."""
import pytest
import torch

from labkit.data.moving_shapes import (MOTIONS, OUT_AND_BACK, fold_time, make_moving_shapes, motion_offsets,
                                       unfold_time)


def _clips(per_class=40, seed=0, **kwargs):
    labels = torch.arange(len(MOTIONS)).repeat_interleave(per_class)
    return make_moving_shapes(labels, generator=seed, **kwargs)


def test_shapes_ranges_and_determinism():
    data = _clips(per_class=3)
    n = 3 * len(MOTIONS)
    assert data.clips.shape == (n, 6, 1, 24, 24) and data.displacement.shape == (n, 6, 2, 24, 24)
    assert float(data.clips.min()) >= 0 and float(data.clips.max()) <= 1
    again = _clips(per_class=3)
    torch.testing.assert_close(data.clips, again.clips)
    assert not torch.equal(data.clips, _clips(per_class=3, seed=1).clips)


def test_offsets_are_time_centred_and_the_pair_is_mirrored():
    offsets = motion_offsets(6)
    torch.testing.assert_close(offsets.mean(dim=1), torch.zeros(len(MOTIONS), 3), atol=1e-6, rtol=0)
    late, early = offsets[OUT_AND_BACK[0]], offsets[OUT_AND_BACK[1]]
    torch.testing.assert_close(early, late.flip(0))  # the same positions in mirrored order
    assert not torch.equal(early, late)
    # every step of one is a step of the other: two-frame motion alone cannot tell them apart
    assert set((late[1:, 0] - late[:-1, 0]).tolist()) == set((early[1:, 0] - early[:-1, 0]).tolist())


def test_out_and_back_pair_has_identical_frame_sets_in_mirrored_order():
    # the same nuisance draws for both classes: one generator seed per clip, noise off
    late = make_moving_shapes(torch.tensor([OUT_AND_BACK[0]]), generator=5, noise=0.0, distractor=False)
    early = make_moving_shapes(torch.tensor([OUT_AND_BACK[1]]), generator=5, noise=0.0, distractor=False)
    torch.testing.assert_close(early.clips[0], late.clips[0].flip(0), atol=1e-5, rtol=0)


def test_appearance_does_not_depend_on_the_class():
    data = _clips(per_class=200, seed=3)
    mean_frame = data.clips.mean(dim=(1, 2, 3, 4))  # time- and space-averaged brightness per clip
    per_class = torch.stack([mean_frame[data.labels == c].mean() for c in range(len(MOTIONS))])
    assert float(per_class.max() - per_class.min()) < 0.01
    for c in range(len(MOTIONS)):
        kinds = torch.bincount(data.shape[data.labels == c], minlength=3).float() / 200
        assert float(kinds.min()) > 0.2


def test_displacement_matches_the_motion():
    data = make_moving_shapes(torch.tensor([0, 1, 2, 3]), generator=0, noise=0.0, distractor=False, speed=2.0,
                              speed_jitter=0.0)
    expected = {0: (2.0, 0.0), 1: (-2.0, 0.0), 2: (0.0, 2.0), 3: (0.0, -2.0)}
    for i, (dx, dy) in expected.items():
        field = data.displacement[i, 0]
        inside = field.abs().sum(0) > 0
        assert inside.any()
        torch.testing.assert_close(field[0][inside], torch.full((int(inside.sum()),), dx), atol=1e-5, rtol=0)
        torch.testing.assert_close(field[1][inside], torch.full((int(inside.sum()),), dy), atol=1e-5, rtol=0)
    assert float(data.displacement[:, -1].abs().max()) == 0.0  # nothing after the last frame
    grow = make_moving_shapes(torch.tensor([4]), generator=0, noise=0.0, distractor=False).displacement[0, 0]
    # expansion: displacement points away from the centre, so the x component grows left to right
    inside = grow.abs().sum(0) > 0
    xs = torch.nonzero(inside)[:, 1].float()
    assert torch.corrcoef(torch.stack([xs, grow[0][inside]]))[0, 1] > 0.9


def test_fold_and_unfold_time():
    x = torch.arange(2 * 3 * 4).reshape(2, 3, 1, 2, 2).float()
    folded = fold_time(x)
    assert folded.shape == (6, 1, 2, 2) and torch.equal(folded[3], x[1, 0])
    assert torch.equal(unfold_time(folded, 3), x)
    with pytest.raises(ValueError, match="multiple of frames=4"):
        unfold_time(folded, 4)
    with pytest.raises(ValueError, match=r"\(b, T, C, H, W\)"):
        fold_time(torch.zeros(2, 3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(frames=3), "frames=3.*>= 4"), (dict(size=4), "size=4"), (dict(speed=0.0), "speed=0.0"),
    (dict(speed_jitter=1.5), "speed_jitter=1.5"), (dict(noise=-1.0), "noise=-1.0"),
])
def test_bad_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_moving_shapes(torch.tensor([0, 1]), **kwargs)


def test_bad_labels():
    with pytest.raises(ValueError, match="class indices in \\[0, 8\\)"):
        make_moving_shapes(torch.tensor([0, 8]))
