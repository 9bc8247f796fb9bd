"""Chapter 06 (SLADE), single runs: the data pools (disjoint class sets, the novel-fraction and
novel-from-test knobs, hidden labels kept apart, determinism, bad input), the teacher, its control
with validation checkpoints, the SSL initialisation, and the student (pair sources, the basis's
labeled-only cross-entropy, snapshots and the precision-against-δ curve)."""
import numpy as np
import pytest
import torch

from labkit.experiments import slade_runs as runs
from labkit.experiments import slade_student as student

SMALL = dict(num_labeled_classes=4, labeled_per_class=3, unlabeled_size=20, num_novel_classes=5,
             num_validation_classes=3, validation_per_class=2, num_test_classes=4, test_per_class=3, size=16)


def test_pools_have_disjoint_class_sets_and_the_requested_sizes():
    pools = runs.make_pools(novel_fraction=0.5, **SMALL)
    labeled = set(pools.y_labeled.tolist())
    validation, test = set(pools.y_validation.tolist()), set(pools.y_test.tolist())
    assert labeled == set(range(4)) and validation == {9, 10, 11} and test == {12, 13, 14, 15}
    assert not (labeled | set(pools.y_unlabeled_hidden.tolist())) & (validation | test)
    assert pools.X_labeled.shape == (12, 1, 16, 16) and pools.X_unlabeled.shape == (20, 1, 16, 16)
    assert pools.X_validation.shape == (6, 1, 16, 16) and pools.X_test.shape == (12, 1, 16, 16)
    # the novel flag is exactly "class outside the labeled ones"
    assert torch.equal(pools.novel, pools.y_unlabeled_hidden >= 4)
    for X in (pools.X_labeled, pools.X_unlabeled, pools.X_validation, pools.X_test):
        assert X.dtype == torch.float32 and X.min() >= 0 and X.max() <= 1


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (0.5, 10), (1.0, 20), (0.33, 7)])
def test_the_novel_fraction_sets_the_share_of_novel_images(fraction, expected):
    pools = runs.make_pools(novel_fraction=fraction, **SMALL)
    assert int(pools.novel.sum()) == expected
    seen = pools.y_unlabeled_hidden[~pools.novel]
    if len(seen):  # seen classes are spread evenly: counts differ by at most one
        counts = torch.bincount(seen, minlength=4)
        assert int(counts.max() - counts.min()) <= 1


def test_pools_are_deterministic_and_sets_do_not_move_with_the_knob():
    a, b = runs.make_pools(seed=3, **SMALL), runs.make_pools(seed=3, **SMALL)
    assert torch.equal(a.X_unlabeled, b.X_unlabeled) and torch.equal(a.X_test, b.X_test)
    other = runs.make_pools(seed=3, **{**SMALL, "unlabeled_size": 40}, novel_fraction=0.9)
    assert torch.equal(a.X_labeled, other.X_labeled) and torch.equal(a.X_test, other.X_test)
    assert torch.equal(a.X_validation, other.X_validation)
    # unlabeled renders of a labeled class are new images, not copies of the labeled ones
    assert not any(torch.equal(x, y) for x in a.X_unlabeled[~a.novel] for y in a.X_labeled)
    assert not torch.equal(runs.make_pools(seed=4, **SMALL).X_test, a.X_test)


def test_pools_bad_input():
    with pytest.raises(ValueError, match="novel_fraction=1.5 is out of range"):
        runs.make_pools(novel_fraction=1.5, **SMALL)
    with pytest.raises(ValueError, match="novel_fraction='half' is not valid"):
        runs.make_pools(novel_fraction="half", **SMALL)
    with pytest.raises(ValueError, match="num_test_classes=0 is not valid"):
        runs.make_pools(**{**SMALL, "num_test_classes": 0})


def test_the_teacher_learns_and_the_control_continues_from_it():
    pools = dict(SMALL, seed=1, validation_per_class=3)  # 9 validation images: Recall@8 needs n > 8
    teacher = runs.train_labeled(pools, seed=0, steps=30, classes_per_batch=4, samples_per_class=3)
    assert set(teacher["test"]["recall"]) == {"1", "2", "4", "8"} and 0 <= teacher["test"]["nmi"] <= 1
    losses = teacher["history"]["loss"]["value"]
    assert sum(losses[-2:]) < sum(losses[:2])  # Eq. (1) falls on the labeled batches
    control = runs.train_labeled(pools, seed=0, steps=5, init_state=teacher["state"], classes_per_batch=4,
                                 samples_per_class=3)
    assert control["warm_start"] and not teacher["warm_start"]
    # the control starts from the teacher: with zero extra steps it is the teacher
    same = runs.train_labeled(pools, seed=0, steps=0, init_state=teacher["state"], classes_per_batch=4,
                              samples_per_class=3)
    assert same["test"]["recall"] == teacher["test"]["recall"] and same["test"]["nmi"] == teacher["test"]["nmi"]
    assert np.array_equal(same["test"]["hits"], teacher["test"]["hits"])
    with pytest.raises(ValueError, match="unknown keys \\['classes'\\]"):
        runs.train_labeled(dict(pools, classes=3), seed=0, steps=1)


@pytest.fixture(scope="module")
def tiny_teacher():
    pools = dict(SMALL, seed=2, validation_per_class=3)
    return pools, runs.train_labeled(pools, seed=0, steps=40, classes_per_batch=4, samples_per_class=3)


@pytest.mark.parametrize("source", student.PAIR_SOURCES)
def test_a_student_trains_from_the_teacher_with_every_pair_source(tiny_teacher, source):
    pools, teacher = tiny_teacher
    out = student.train_student(pools, seed=0, steps=12, teacher_state=teacher["state"], k=6, pair_source=source,
                             warmup=4, classes_per_batch=4, samples_per_class=3)
    assert set(out["test"]["recall"]) == {"1", "2", "4", "8"}
    assert 0 <= out["pseudo_quality"]["purity"] <= 1 and out["pseudo_quality"]["num_clusters"] <= 6
    for kind in ("positive", "negative"):
        assert 0 <= out["pair_precision"][kind] <= 1 and 0 <= out["pair_recall"][kind] <= 1
    assert 0 <= out["auc"]["basis"] <= 1 and 0 <= out["auc"]["cosine"] <= 1
    counts = out["pair_counts"]
    assert counts["pos_true"] <= counts["pos_selected"] and counts["neg_true"] <= counts["neg_selected"]
    if source == "all":  # every pseudo-label pair of every batch after the warm-up
        assert counts["pos_selected"] + counts["neg_selected"] == 8 * (12 * 11 // 2)


def test_pseudo_label_quality_of_a_perfect_and_a_random_clustering():
    hidden = np.repeat(np.arange(4), 5)
    perfect = student.pseudo_label_quality((hidden + 1) % 4, hidden)  # renamed clusters: still perfect
    assert perfect["nmi"] == pytest.approx(1.0) and perfect["purity"] == 1.0
    merged = student.pseudo_label_quality(np.zeros(20, dtype=int), hidden)
    assert merged["purity"] == 0.25 and merged["nmi"] == pytest.approx(0.0)


def test_a_bad_pair_source_is_refused(tiny_teacher):
    pools, teacher = tiny_teacher
    with pytest.raises(ValueError, match="pair_source='labels'.*'basis', 'cosine', 'all'"):
        student.train_student(pools, seed=0, steps=1, teacher_state=teacher["state"], pair_source="labels")


def test_novel_images_come_from_test_classes_only_when_the_knob_says_so():
    default = runs.make_pools(novel_fraction=1.0, **SMALL)
    test = set(default.y_test.tolist())
    assert not set(default.y_unlabeled_hidden.tolist()) & test
    shared = runs.make_pools(novel_fraction=1.0, novel_from_test=True, **SMALL)
    assert set(shared.y_unlabeled_hidden.tolist()) == test and bool(shared.novel.all())
    assert not torch.equal(shared.X_unlabeled[:3], shared.X_test[:3])  # other renders of the same classes
    torch.testing.assert_close(shared.X_test, default.X_test)  # the test set itself does not move
    assert not set(shared.y_labeled.tolist()) & test
    with pytest.raises(ValueError, match="novel_from_test='yes'.*True or False"):
        runs.make_pools(novel_from_test="yes", **SMALL)


def test_the_control_keeps_its_best_validation_checkpoint():
    pools = dict(SMALL, seed=3, validation_per_class=3)
    teacher = runs.train_labeled(pools, seed=0, steps=20, classes_per_batch=4, samples_per_class=3)
    control = runs.train_labeled(pools, seed=0, steps=20, init_state=teacher["state"], classes_per_batch=4,
                                 samples_per_class=3, eval_every=5)
    checkpoints = control["checkpoints"]
    assert checkpoints["step"] == [0, 5, 10, 15, 20]  # step 0 is the teacher itself
    best = control["early_stopped"]
    assert best["validation_r1"] == max(checkpoints["validation_r1"])
    assert best["step"] == checkpoints["step"][checkpoints["validation_r1"].index(best["validation_r1"])]
    if best["step"] == 0:  # the teacher's weights: its test metrics are the teacher's
        assert best["test"]["recall"] == teacher["test"]["recall"]
    # checkpoints do not change the run: the same control without them ends with the same weights
    plain = runs.train_labeled(pools, seed=0, steps=20, init_state=teacher["state"], classes_per_batch=4,
                               samples_per_class=3)
    for key, value in plain["state"].items():
        torch.testing.assert_close(control["state"][key], value)


def test_simclr_pretraining_learns_and_its_weights_initialise_a_teacher():
    pools = dict(SMALL, seed=4, validation_per_class=3)
    ssl = runs.pretrain_simclr(pools, seed=0, steps=12, batch_size=16)
    losses = ssl["history"]["loss"]["value"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    teacher = runs.train_labeled(pools, seed=0, steps=0, init_state=ssl["state"], classes_per_batch=4,
                                 samples_per_class=3)
    assert teacher["test"]["recall"] == ssl["test"]["recall"]  # zero steps: the SSL net unchanged


def test_the_basis_cross_entropy_sees_only_labeled_images(tiny_teacher, monkeypatch):
    from labkit.methods import slade

    pools, teacher = tiny_teacher
    data = runs.make_pools(**pools)
    calls = []
    original = slade.FeatureBasis.logits

    def logits(self, E):
        calls.append((tuple(self.weight.shape), len(E)))
        return original(self, E)

    seen_targets = []
    cross_entropy = torch.nn.functional.cross_entropy

    def recording_cross_entropy(input, target, *args, **kwargs):
        seen_targets.append(target.clone())
        return cross_entropy(input, target, *args, **kwargs)

    monkeypatch.setattr(slade.FeatureBasis, "logits", logits)
    monkeypatch.setattr(student.F, "cross_entropy", recording_cross_entropy)
    student.train_student(pools, seed=0, steps=6, teacher_state=teacher["state"], k=6, warmup=2,
                          classes_per_batch=4, samples_per_class=3)
    num_labeled = int(data.y_labeled.max()) + 1
    assert len(calls) == 6 and all(shape == (num_labeled, 64) and n == 12 for shape, n in calls)
    # every target is a true label of the labeled classes (pseudo labels never reach Eq. 3)
    assert len(seen_targets) == 6 and all(int(t.max()) < num_labeled and len(t) == 12 for t in seen_targets)


def test_student_snapshots_and_the_delta_curve(tiny_teacher):
    pools, teacher = tiny_teacher
    out = student.train_student(pools, seed=0, steps=12, teacher_state=teacher["state"], k=6, warmup=4,
                                classes_per_batch=4, samples_per_class=3, snapshots=3)
    steps = [s["step"] for s in out["snapshots"]]
    assert steps == sorted(set(steps)) and {0, 4, 12} <= set(steps) and out["warmup"] == 4
    for snap in out["snapshots"]:
        assert len(snap["same"]) == len(student.HISTOGRAM_BINS) - 1 == len(snap["different"])
        assert snap["step"] > 0 or snap["thresholds"] is None  # nothing seen yet at step 0
    curve = out["delta_curve"]
    assert curve is not None, "mining never started"
    assert curve["delta"] == list(student.DELTAS)
    for select in ("sim", "sim+label"):
        counts = curve[select]["pos_count"]
        assert all(a >= b for a, b in zip(counts, counts[1:]))  # a larger δ keeps fewer positives
        assert all(0 <= p <= 1 for p in curve[select]["pos_precision"] if p == p)
    # sim+label keeps a subset of sim's positives
    assert all(a <= b for a, b in zip(curve["sim+label"]["pos_count"], curve["sim"]["pos_count"]))
    assert curve["sim+label"]["pos_count"][0] <= curve["all_pairs"]["pos_count"]


def test_student_bad_warmup_and_snapshots(tiny_teacher):
    pools, teacher = tiny_teacher
    with pytest.raises(ValueError, match="warmup=12.*\\[0, steps=12\\)"):
        student.train_student(pools, seed=0, steps=12, teacher_state=teacher["state"], warmup=12)
    with pytest.raises(ValueError, match="snapshots=0"):
        student.train_student(pools, seed=0, steps=12, teacher_state=teacher["state"], warmup=2, snapshots=0)
    with pytest.raises(ValueError, match="k=0"):
        student.train_student(pools, seed=0, steps=12, teacher_state=teacher["state"], warmup=2, k=0)
    with pytest.raises(ValueError, match="select='label'.*'sim', 'sim\\+label'"):
        student.train_student(pools, seed=0, steps=12, teacher_state=teacher["state"], warmup=2, select="label")
    with pytest.raises(ValueError, match="delta=inf.*finite"):
        student.train_student(pools, seed=0, steps=12, teacher_state=teacher["state"], warmup=2, delta=float("inf"))


def test_runs_refuse_an_unknown_device_and_return_cpu_tensors(tiny_teacher):
    pools, teacher = tiny_teacher
    with pytest.raises(ValueError, match="device='tpu'"):
        runs.train_labeled(pools, seed=0, steps=1, device="tpu")
    with pytest.raises(ValueError, match="device='gpu'"):
        student.train_student(pools, seed=0, steps=4, teacher_state=teacher["state"], warmup=1, device="gpu")
    assert all(v.device.type == "cpu" for v in teacher["state"].values())
    # device="cpu" is the default: the same run, bit for bit
    default, explicit = (runs.train_labeled(pools, seed=0, steps=3, classes_per_batch=4, samples_per_class=3, **device)
                         for device in ({}, dict(device="cpu")))
    assert explicit["test"]["recall"] == default["test"]["recall"]
    assert all(torch.equal(explicit["state"][k], v) for k, v in default["state"].items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_single_runs_on_cuda_return_cpu_results(tiny_teacher):
    pools, teacher = tiny_teacher
    gpu_teacher = runs.train_labeled(pools, seed=0, steps=40, classes_per_batch=4, samples_per_class=3, device="cuda")
    out = student.train_student(pools, seed=0, steps=12, teacher_state=gpu_teacher["state"], k=6, warmup=4,
                                classes_per_batch=4, samples_per_class=3, device="cuda")
    ssl = runs.pretrain_simclr(pools, seed=0, steps=4, batch_size=16, device="cuda")
    for result in (gpu_teacher, out, ssl):
        assert all(v.device.type == "cpu" and torch.isfinite(v.float()).all() for v in result["state"].values())
        assert np.isfinite(result["history"]["loss"]["value"]).all()
    # same initialisation and first batch as on the CPU: the first loss agrees (TF32 convolutions aside)
    assert gpu_teacher["history"]["loss"]["value"][0] == pytest.approx(teacher["history"]["loss"]["value"][0], rel=2e-2)
    assert 0 <= out["auc"]["basis"] <= 1 and out["delta_curve"] is not None
