import numpy as np
import pytest
import torch
from smoke import smoke_run

from labkit.data.photos import PHOTO_NAMES
from labkit.experiments import jpeg as ex
from labkit.experiments import jpeg_runs as runs
from labkit.methods import jpeg


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    yield from smoke_run(ex, tmp_path_factory)


def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.JPEGConfig()
    full = ex.from_budget("full")
    assert full.qualities == tuple(range(10, 101, 10)) and full.ablations and full.detection
    with pytest.raises(ValueError, match="unknown config field.*quality.*valid fields"):
        ex.from_budget("quick", quality=10)
    with pytest.raises(ValueError, match="quality=0"):
        ex.from_budget("quick", qualities=(0, 10))
    with pytest.raises(ValueError, match="must include 10"):
        ex.from_budget("quick", qualities=(30, 50), corrector_qualities=(30,))
    with pytest.raises(ValueError, match=r"detection_qualities=\(30, 50\) is not valid; it must include 10"):
        ex.from_budget("quick", detection_qualities=(30, 50))
    with pytest.raises(ValueError, match="corrector_qualities=.*must be among"):
        ex.from_budget("quick", corrector_qualities=(10, 20))
    with pytest.raises(ValueError, match="subsampling"):
        ex.from_budget("quick", subsampling="4:2:2")


def test_plans_build_on_the_first_stage():
    cfg = ex.from_budget("full")
    first = dict(ex.stage1_plan(cfg))
    assert set(first) == {"classifier", "off-the-shelf", "off-the-shelf (unconditioned)"}
    assert first["off-the-shelf (unconditioned)"]["conditioned"] is False
    second = dict(ex.stage2_plan(cfg, {name: f"{name}.pt" for name in first}))
    assert second["TTAC"]["corrector_file"] == "off-the-shelf.pt"  # TTAC starts from the corrector
    assert second["TTAC (unconditioned)"]["corrector_file"] == "off-the-shelf (unconditioned).pt"
    assert second["fine-tuned (q = 10 only)"]["quality"] == 10 and "quality" not in second["fine-tuned"]
    assert second["TTAC (features)"]["target"] == "features" and second["TTAC (+ pixel L1)"]["pixel_weight"] > 0


def test_smoke_results_cover_every_view(smoke_results):
    res = smoke_results
    qualities = [ex.CLEAN, *res["config"]["qualities"]]
    for setting in ex.SETTINGS:
        assert sorted(ex.sweep_table(res, setting)) == sorted(qualities)
    assert {r["setting"] for r in res["sweep"]} >= {"baseline (4:4:4)", "TTAC (features)", "fine-tuned (q = 10 only)"}
    assert [r["quality"] for r in res["rate"]] == list(res["config"]["qualities"])
    assert all(0 < r["bpp"] < r["patch_bpp"] for r in res["rate"])  # headers dominate a 48 px patch's file
    assert set(res["per_class_q10"]) >= set(ex.SETTINGS) and len(res["per_class_clean"]) == len(PHOTO_NAMES)
    assert len(res["examples"]) == 2 and set(res["examples"][0]["by_quality"]) == set(res["config"]["qualities"])
    assert res["examples"][0]["clean"].dtype.name == "uint8" and "detection" not in res
    assert set(res["corrector_states"]) == {"off-the-shelf", "TTAC"}
    luma, _ = res["tables"][10]
    assert torch.equal(torch.tensor(luma), jpeg.quantization_tables(10)[0])


def test_clean_baseline_is_the_classifiers_own_accuracy(smoke_results):
    base = ex.sweep_table(smoke_results, "baseline")
    cfg = ex.from_budget("smoke", workers=1)
    model = runs.make_classifier(cfg.seed)
    model.load_state_dict(smoke_results["classifier_state"])
    _, _, X_test, y_test = runs.patches(**ex.data_kwargs(cfg))
    assert base[ex.CLEAN] == pytest.approx(runs.accuracy(model, X_test, y_test))


def test_claims(smoke_results):
    claims = ex.claims(smoke_results)
    names = [c.name.split(".")[0] for c in claims]
    assert names[0] == "C1" and claims[0].held and claims[0].asserted("quick")
    assert {"E1b", "E2a", "E3a", "E4a", "E4b", "E5"} <= set(names) and "E6" not in names
    assert all(not c.asserted_at for c in claims if c.name.startswith("E"))


def test_e_claims_fail_when_the_mitigations_do():
    """Fine-tuning recovers nothing, the corrector lowers PSNR, TTAC is worse than both: E2a–E5 fail."""
    accuracy = {("baseline", 0): 0.9, ("baseline", 10): 0.6, ("fine-tuned", 0): 0.95, ("fine-tuned", 10): 0.6,
                ("off-the-shelf", 10): 0.7, ("TTAC", 10): 0.55}
    psnr = {"off-the-shelf": 26.0, "TTAC": 28.0}
    fake = {"sweep": [dict(setting=s, quality=q, accuracy=a, psnr=psnr.get(s, 30.0)) for (s, q), a in accuracy.items()],
            "rate": [dict(quality=10, bpp=0.4, psnr=27.0)]}
    held = {c.name.split(".")[0]: c.held for c in ex.claims(fake)}
    assert held["E1b"] and not any(held[k] for k in ("E2a", "E2b", "E3a", "E4a", "E4b", "E5"))
    assert held["E3b"]  # reported with either sign, never checked (see the spec's E3)


def test_predictions_give_accuracy_and_per_class_accuracy():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 3, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3) * 4)  # the class is the brightest channel (inputs are normalised)
    X = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]])[:, :, None, None]
    y = torch.tensor([0, 1, 2, 2])
    assert runs.predict(model, X).tolist() == [0, 1, 1, 2]
    assert runs.accuracy(model, X, y) == 0.75
    per_class = runs.per_class_accuracy(runs.predict(model, X), y, 4)
    assert per_class[:3].tolist() == [1.0, 1.0, 0.5] and np.isnan(per_class[3])


def test_e6_compares_relative_drops():
    fake = {"sweep": [dict(setting=s, quality=q, accuracy=0.5, psnr=30.0) for s in ex.SETTINGS for q in (0, 10)],
            "rate": [dict(quality=10, bpp=0.4, psnr=27.0)],
            "detection": [dict(quality=0, AP_small=2.0, AP_large=40.0), dict(quality=10, AP_small=1.0, AP_large=36.0)]}
    e6 = [c for c in ex.claims(fake) if c.name.startswith("E6")][0]
    assert e6.held and e6.measured == pytest.approx(-0.5 - -0.1)


def test_mean_psnr_is_finite_when_some_images_are_exact():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.1
    assert ex.mean_psnr(x, y) == pytest.approx(10 * torch.log10(torch.tensor(1 / 0.005)).item())
    assert ex.mean_psnr(x, x) == float("inf")
