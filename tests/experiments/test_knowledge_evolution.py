import numpy as np
import pytest

from labkit.experiments import knowledge_evolution as ex
from labkit.experiments.knowledge_evolution_runs import train_generations
from smoke import smoke_run


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    yield from smoke_run(ex, tmp_path_factory)


def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.KEConfig()
    full = ex.from_budget("full")
    assert full.num_generations == 8 and full.num_seeds == 3 and full.glyph_classes
    with pytest.raises(ValueError, match="unknown config field.*split_rat.*valid fields"):
        ex.from_budget("quick", split_rat=0.3)


def test_planned_runs():
    quick = ex.from_budget("quick")
    assert [r["mode"] for r in ex.main_runs(quick)] == [m for m in ex.CONTROLS for _ in range(quick.num_seeds)]
    assert ex.ablation_runs(quick) == [] and ex.glyph_runs(quick) == []
    labels = [label for label, _ in ex.ablation_runs(ex.from_budget("full"))]
    assert len(labels) == 1 + 2 + 2 + 2 + 1 + 1 and labels[0].startswith("reference")


def test_smoke_results_and_claims(smoke_results):
    res = smoke_results
    curves = ex.curves(res)
    assert set(curves) == set(ex.CONTROLS)
    assert curves["ke"]["dense"].shape == (1, 2) and curves["single"]["dense"].shape == (1, 2)
    names = [c.name.split(".")[0] for c in ex.claims(res)]
    assert names == ["1", "2a", "2b", "3", "4a", "4b", "5", "6a", "6b"]
    assert "N1" in ex.dense_gain_verdict(res)
    masks = res["masks"]
    assert len(masks["kels"]) == len(masks["split_rates"])


def test_cost_rows_are_counted_not_assumed():
    rows = ex.slim_costs(ex.from_budget("quick"))
    half = next(r for r in rows if r["backbone"] == "resnet" and r["split_rate"] == 0.5)
    assert half["slim_macs"] < half["dense_macs"] and 0.2 < half["conv_macs_ratio"] < 0.3


def test_modes_differ_and_bad_mode_is_named():
    kwargs = dict(samples_per_class=3, num_generations=2, epochs_per_generation=1, seed=0)
    ke_run = train_generations("ke", **kwargs)
    restart = train_generations("restart_only", **kwargs)
    # the same first generation, then re-initialisation changes the watched layer
    assert np.array_equal(ke_run["magnitude"][0], restart["magnitude"][0])
    assert not np.array_equal(ke_run["magnitude"][1], restart["magnitude"][1])
    single = train_generations("single", **kwargs)
    assert len(single["dense"]) == 2 and len(single["slim"]) == 1
    with pytest.raises(ValueError, match="mode='reset'"):
        train_generations("reset", **kwargs)
