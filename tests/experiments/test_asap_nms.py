import pytest

from labkit.experiments import asap_nms as ex


@pytest.fixture(scope="module")
def smoke_results():
    return ex.run(ex.from_budget("smoke"))


def test_budgets_and_bad_fields():
    assert ex.from_budget("quick") == ex.ASAPConfig()
    full = ex.from_budget("full")
    assert full.repeats >= 30 and 12000 in full.sizes and full.detector_steps > 0
    with pytest.raises(ValueError, match="unknown config field.*cutof.*valid fields"):
        ex.from_budget("quick", cutof=0.3)


def test_smoke_results_cover_every_view(smoke_results):
    res = smoke_results
    cfg = res["config"]
    assert {r["impl"] for r in res["latency"]} == set(ex.IMPLEMENTATIONS)
    assert [r["N"] for r in res["counts"]] == list(cfg["sizes"])
    assert all(r["asap_iou"] < r["greedy_iou"] for r in res["counts"])
    assert res["full_radius"]["equal"] and res["detector"] is None
    diff = res["keep_diff"]
    assert len(diff["both"]) + len(diff["greedy_only"]) + len(diff["asap_only"]) > 0
    assert 0 < res["iou_profile"]["fraction_zero"] < 1
    assert len(res["lut_neighbourhoods"]["offsets"]) == len(cfg["cutoffs"])


def test_claims_names_and_the_deterministic_ones(smoke_results):
    claims = ex.claims(smoke_results)
    names = [c.name.split(".")[0] for c in claims]
    assert names == ["E1", "E2a", "E2b", "E2c", "E3a", "E3b", "E4", "E5"]
    by = dict(zip(names, claims))
    assert by["E2b"].held and by["E5"].held
    assert by["E2c"].measured is None
    assert all(not by[n].asserted_at for n in ("E3a", "E3b", "E4"))  # timings are never asserted
