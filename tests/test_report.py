import json

import pytest

from labkit.report import Claim, claims_table, failed_assertions, load_claims, save_claims


def _claims():
    return [
        Claim("bounds", "L <= s <= U", 0.123456, "inside", True),
        Claim("gap", "+0.10 R@1", -0.02, ">= 0.10", False, asserted_at=("full",)),
    ]


def test_failed_assertions_respect_budget():
    claims = _claims()
    assert failed_assertions(claims, "quick") == []
    assert [c.name for c in failed_assertions(claims, "full")] == ["gap"]


def test_table_text_is_rounded_and_html_colours_rows():
    table = claims_table(_claims(), "quick")
    text = repr(table)
    assert "0.123" in text and "0.123456" not in text
    assert "not reproduced; shown (asserted at full)" in text
    html = table._repr_html_()
    assert html.count("<tr") == 3 and "#fce8e6" in html and "#e6f4ea" in html


def test_save_claims_writes_json_to_output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_OUTPUT_DIR", str(tmp_path))
    path = save_claims("03-svmax", "SVMax", "quick", _claims(), device="cpu")
    assert path == tmp_path / "03-svmax.claims.json"
    record = load_claims(path)
    assert record["budget"] == "quick" and record["claims"][1]["asserted_at"] == ["full"]
    assert record["claims"][0]["held"] is True
    json.dumps(record)


def test_bad_budget_in_claim():
    with pytest.raises(ValueError, match="asserted_at='fast'"):
        Claim("x", "p", 1.0, "c", True, asserted_at=("fast",))
