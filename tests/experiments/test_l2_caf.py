"""Chapter 10 (L2-CAF): the scenes, the networks and their split at a layer, BN recalibration, the
maps of every method, fast against slow mode, the smoke run, its tables and its claims."""
import numpy as np
import pytest
import torch

from labkit.experiments import l2_caf as ex
from labkit.experiments import l2_caf_runs as runs
from labkit.methods import l2_caf
from smoke import smoke_run_one_thread

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sets():
    return runs.make_sets(image_size=64, num_train=48, num_test=8, num_pairs=3, seed=0)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    yield from smoke_run_one_thread(ex, tmp_path_factory)


def test_sets_half_medium_half_large_and_pairs_of_two_classes_apart(sets):
    assert sets.test_size == ("medium",) * 4 + ("large",) * 4
    areas = ((sets.test_boxes[:, 2] - sets.test_boxes[:, 0]) * (sets.test_boxes[:, 3] - sets.test_boxes[:, 1])) / 64**2
    assert float(areas[:4].max()) < float(areas[4:].min())  # box areas follow the buckets
    assert len(sets.pair_x) == 3 and (sets.pair_y[:, 0] != sets.pair_y[:, 1]).all()
    a, b = sets.pair_boxes[:, 0], sets.pair_boxes[:, 1]
    apart = (a[:, 2] <= b[:, 0]) | (b[:, 2] <= a[:, 0]) | (a[:, 3] <= b[:, 1]) | (b[:, 3] <= a[:, 1])
    assert apart.all()
    again = runs.make_sets(image_size=64, num_train=48, num_test=8, num_pairs=3, seed=0)
    assert torch.equal(again.test_x, sets.test_x) and torch.equal(again.train_y, sets.train_y)


@pytest.mark.parametrize("kind", runs.KINDS)
def test_the_head_replayed_from_a_block_is_the_network(sets, kind):
    torch.manual_seed(0)
    net = runs.ShapeNet(kind, widths=(4, 4, 8, 8)).eval()
    x = sets.test_x[:3]
    for index in runs.LAYERS.values():
        A = l2_caf.capture(net, f"trunk.{index}", x)
        torch.testing.assert_close(net.forward_from(index, A), net(x))
    assert l2_caf.capture(net, "trunk.3", x).shape[-1] == 8 and l2_caf.capture(net, "trunk.2", x).shape[-1] == 16


def test_batch_norm_recalibration_sets_the_exact_mean_of_the_training_features(sets):
    torch.manual_seed(0)
    net = runs.ShapeNet("cam", widths=(4, 4, 8, 8))
    runs.recalibrate_batch_norm(net, sets.train_x, batch_size=16)  # equal batches: a mean of means
    assert not net.training
    conv = net.trunk[0][0]
    with torch.no_grad():
        features = conv(runs.standardise(sets.train_x))
    torch.testing.assert_close(net.trunk[0][1].running_mean, features.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_fast_mode_gives_the_slow_mode_maps(sets):
    torch.manual_seed(0)
    net = runs.ShapeNet("mlp", widths=(4, 4, 8, 8)).eval()
    x, y = sets.test_x[:3], sets.test_y[:3]
    fast = runs.attention_maps(net, x, y, runs.SPECIFIC, max_iters=60, seed=1)
    slow = runs.attention_maps(net, x, y, runs.SPECIFIC, max_iters=60, seed=1, slow=True)
    torch.testing.assert_close(fast["maps"], slow["maps"], rtol=1e-4, atol=1e-5)
    assert np.array_equal(fast["iterations"], slow["iterations"])


def test_maps_have_the_layers_resolution_and_bad_requests_name_the_parameter(sets):
    torch.manual_seed(0)
    net = runs.ShapeNet("mlp", widths=(4, 4, 8, 8)).eval()
    x, y = sets.test_x[:2], sets.test_y[:2]
    assert runs.attention_maps(net, x, y, runs.GRAD_CAM)["maps"].shape == (2, 8, 8)
    assert runs.attention_maps(net, x, y, runs.OBLIVIOUS, layer="penultimate", max_iters=5)["maps"].shape == (2, 16, 16)
    with pytest.raises(ValueError, match="method='CAM' needs the GAP"):
        runs.attention_maps(net, x, y, runs.CAM)
    with pytest.raises(ValueError, match="method='LRP'"):
        runs.attention_maps(net, x, y, "LRP")
    with pytest.raises(ValueError, match="layer='first'"):
        runs.attention_maps(net, x, y, runs.GRAD_CAM, layer="first")
    assert runs.methods_for("retrieval") == (runs.OBLIVIOUS, runs.GRAD_CAM, runs.CENTRE)


def test_from_budget_rejects_bad_values():
    with pytest.raises(ValueError, match="ablations entry 'dropout'"):
        ex.from_budget("quick", ablations=("dropout",))
    with pytest.raises(ValueError, match="kind='vit'"):
        ex.from_budget("quick", kinds=("vit",))
    with pytest.raises(ValueError, match="num_test=1"):
        ex.from_budget("quick", num_test=1)
    assert ex.from_budget("full").seeds >= 3


def test_the_smoke_run_scores_every_method_of_every_network(results):
    cfg = results["config"]
    assert set(results["nets"]) == set(runs.KINDS)
    for kind, entries in results["nets"].items():
        entry = entries[0]
        assert set(entry["methods"]) - {runs.SPECIFIC_POSITIVE} == set(runs.methods_for(kind))
        for scored in entry["methods"].values():
            assert scored["hits"].shape == (cfg["num_test"], 9) and scored["pointing"].shape == (cfg["num_test"],)
        assert entry["convergence"]["snapshots"].shape[1] == cfg["keep"]
    cam = results["nets"]["cam"][0]
    assert cam["correlation"].min() > 0.999  # Grad-CAM = ReLU(CAM) / HW on GAP + linear
    assert set(cam["ablations"]) == set(cfg["ablations"])
    assert cam["ablations"]["penultimate block"]["maps"].shape[-1] == 16
    table = ex.localization_table(results)
    assert len(table) == sum(len(runs.methods_for(k)) for k in runs.KINDS) + 2  # f⁺ on both classifiers
    assert len(ex.pair_table(results)) == 8 and len(ex.ablation_table(results)) == 2 + len(cfg["ablations"])
    net = ex.trained_net(results, "retrieval")
    with torch.no_grad():
        assert torch.allclose(net(ex.chapter_sets(results).test_x[:2]).norm(dim=1), torch.ones(2))


def test_claims_cover_the_spec_outcomes(results):
    timing = ex.timing(results, iterations=3)
    assert len(timing["loop"]) == results["config"]["timing_repeats"] and min(timing["slow_iteration"]) > 0
    claims = ex.claims(results, timing)
    numbers = {c.name.split(".")[0] for c in claims}
    assert numbers == {"1a", "1b", "1c", "1d", "2a", "2b", "3a", "3b", "4", "5", "6a", "6b", "6c", "7a", "7b", "8", "8b"}
    assert [c.status for c in ex.claims(results) if c.name.startswith("6")] == ["not measured"] * 2
    one_seed = [c for c in claims if c.status not in ("reported", "not measured") and not c.name.startswith("6")]
    assert all(c.status == "inconclusive" for c in one_seed)  # one training seed gives no interval
    assert "timing repeats" in next(c for c in claims if c.name.startswith("6a")).noise


def test_the_retrieval_net_fine_tunes_the_seeds_classifier_which_training_reproduces(sets):
    first, _ = runs.train_net("cam", sets, seed=3, steps=4, batch_size=8, widths=(4, 4, 8, 8))
    again, _ = runs.train_net("cam", sets, seed=3, steps=4, batch_size=8, widths=(4, 4, 8, 8))
    for name, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name  # so the retrieval net's start is the cam net
    net, history = runs.train_net("retrieval", sets, seed=3, steps=8, batch_size=8, widths=(4, 4, 8, 8))
    assert history["pretraining loss"]["step"][-1] == 7 and history["loss"]["step"][-1] == 1  # 8 then 8 // 4 steps
    assert not torch.equal(net.trunk[0][0].weight, first.trunk[0][0].weight)  # fine-tuned from it
    assert net.trunk[0][0].weight.sub(first.trunk[0][0].weight).abs().max() < 0.1


def test_the_device_is_checked_and_reaches_every_run(results):
    with pytest.raises(ValueError, match="device='tpu'.*'cpu', 'cuda'"):
        ex.from_budget("smoke", device="tpu")
    cfg = ex.from_budget("smoke")
    assert cfg.device == "cpu" and all(kw["device"] == "cpu" for kw in ex.plan(cfg))
    assert results["config"]["device"] == "cpu"
    with pytest.raises(ValueError, match="device='gpu'"):
        ex.trained_net(results, "cam", device="gpu")
    sets = ex.chapter_sets(results)
    with pytest.raises(ValueError, match="device='tpu'"):
        runs.train_net("cam", sets, seed=0, steps=1, batch_size=4, widths=(4, 4, 8, 8), device="tpu")


def _structure(value, key=""):
    """``value`` with every number and string replaced by its type and every tensor or array by its
    shape and dtype. How many loss checks and snapshots an optimisation keeps depends on when its
    filters stopped, so only their trailing shape counts."""
    if isinstance(value, dict):
        return {k: _structure(v, k) for k, v in value.items() if k != "device"}
    if isinstance(value, (torch.Tensor, np.ndarray)):
        shape = tuple(value.shape)[1:] if key in ("snapshots", "losses") else tuple(value.shape)
        return type(value).__name__, shape, str(value.dtype)
    if isinstance(value, (list, tuple)):
        return [_structure(v) for v in value]
    return type(value).__name__


def _tensors(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, torch.Tensor):
        yield value


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_smoke_run_on_cuda_matches_the_cpu_run(results, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    gpu = ex.run(ex.from_budget("smoke", device="cuda", workers=1))
    assert gpu["config"]["device"] == "cuda"
    assert _structure(gpu) == _structure(results)
    tensors = list(_tensors(gpu))
    assert tensors and all(x.device.type == "cpu" for x in tensors)  # results never depend on the device
    assert all(torch.isfinite(x).all() for x in tensors if x.is_floating_point())
    for kind, entries in gpu["nets"].items():
        cpu_entry, entry = results["nets"][kind][0], entries[0]
        for method, scored in entry["methods"].items():
            assert np.isfinite(scored["maps"]).all(), (kind, method)
        # same data, initialisation and first batch: the first logged loss agrees (TF32 convolutions aside)
        first = "pretraining loss" if kind == "retrieval" else "loss"
        assert entry["history"][first]["value"][0] == pytest.approx(cpu_entry["history"][first]["value"][0], rel=2e-2)
    assert gpu["nets"]["cam"][0]["correlation"].min() > 0.99  # Grad-CAM = ReLU(CAM) / HW on the GPU too
    timing = ex.timing(gpu, iterations=3, device="cuda")
    assert timing["device"] == "cuda" and min(timing["slow_iteration"]) > 0 and "on cuda" in ex.timing_lines(timing)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_maps_of_a_network_on_cuda_match_the_cpu_maps(sets):
    torch.manual_seed(0)
    net = runs.ShapeNet("cam", widths=(4, 4, 8, 8)).eval()
    on_gpu = runs.ShapeNet("cam", widths=(4, 4, 8, 8)).cuda().eval()
    on_gpu.load_state_dict(net.state_dict())
    x, y = sets.test_x[:3], sets.test_y[:3]
    # full float32 convolutions: the filters start from the same CPU draw, so the maps agree closely
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        for method in (runs.SPECIFIC, runs.OBLIVIOUS, runs.GRAD_CAM, runs.CAM, runs.CENTRE):
            for slow in ((False, True) if method in (runs.SPECIFIC, runs.OBLIVIOUS) else (False,)):
                options = dict(max_iters=20, seed=1, slow=slow) if method in (runs.SPECIFIC, runs.OBLIVIOUS) else {}
                cpu, gpu = (runs.attention_maps(n, x, y, method, **options) for n in (net, on_gpu))
                assert gpu["maps"].device.type == "cpu", method
                torch.testing.assert_close(gpu["maps"], cpu["maps"], rtol=1e-3, atol=1e-4)
        assert runs.predict(on_gpu, x).device.type == "cpu"
        assert runs.quality(on_gpu, sets)["accuracy"] == runs.quality(net, sets)["accuracy"]
