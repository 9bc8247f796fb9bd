"""The runner and the ``labkit`` command on a tiny chapter made here (one papermill run)."""
import json

import nbformat
import pytest

from labkit import cli, runner


def _chapter(folder):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Tiny chapter"),
        nbformat.v4.new_code_cell('budget = "quick"\nseed = 0\nscale = 1.5\nfail = False\nworkers = 0',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from labkit.report import Claim, save_claims\n"
            "assert not fail, 'asked to fail'\n"
            "save_claims('00-tiny', 'Tiny', budget, [Claim.reported('c', 'p', scale)])"),
    ]
    folder.mkdir()
    nbformat.write(nb, folder / "00-tiny.ipynb")


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    _chapter(tmp_path / "notebooks")
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(runner, "BUILD_DIR", tmp_path / "build")
    monkeypatch.setattr(runner, "RESULTS_DIR", tmp_path / "results")
    return tmp_path


def test_unknown_chapter_budget_and_parameter_are_one_line_errors(tiny, capsys):
    assert cli.main(["run", "99-nope"]) == 2
    assert "chapter='99-nope' is not valid; choose one of: '00-tiny'" in capsys.readouterr().err
    assert cli.main(["run", "00-tiny", "--budget", "huge"]) == 2
    assert "budget='huge'" in capsys.readouterr().err
    assert cli.main(["run", "tiny", "-p", "scael", "2"]) == 2
    assert "unknown parameter 'scael' for 00-tiny; valid parameters: budget, fail, scale, seed, workers" in capsys.readouterr().err
    assert cli.main(["run", "00", "-p", "scale", "big"]) == 2
    err = capsys.readouterr().err
    assert "scale='big' has the wrong type" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["run", "00-tiny", "-p", "workers", "-3"]) == 2
    assert "workers=-3 is not valid; use 0 (one process per core)" in capsys.readouterr().err
    assert cli.main(["run", "00-tiny", "-p", "workers", "1.5"]) == 2
    assert "workers=1.5 has the wrong type" in capsys.readouterr().err
    assert cli.main(["book", "--budget", "smoke"]) == 2
    assert "budget='smoke' is not valid; choose one of: 'quick', 'full'" in capsys.readouterr().err
    assert not (tiny / "build").exists(), "bad input must be rejected before any work starts"


def test_run_writes_notebook_claims_provenance_and_full_results(tiny):
    out = runner.run_chapter("00-tiny", "full", {"scale": 2})
    assert out == tiny / "build" / "full" / "00-tiny.ipynb" and out.exists()
    record = json.loads(out.with_suffix(".claims.json").read_text())
    assert record["claims"][0]["measured"] == 2.0 and record["provenance"]["duration_s"] > 0
    chapter = runner.find_chapter("00-tiny")
    assert runner.is_fresh(chapter, "full", {"scale": 2.0}) and not runner.is_fresh(chapter, "full")
    # a run with overridden parameters is not the reproduction: results/full stays untouched
    assert not (tiny / "results" / "full" / "00-tiny.json").exists()
    runner.run_chapter("00-tiny", "full")
    committed = json.loads((tiny / "results" / "full" / "00-tiny.json").read_text())
    assert committed["budget"] == "full" and committed["provenance"]["source_hash"]
    assert (tiny / "results" / "full" / "00-tiny.ipynb").is_file()
    from labkit import reproductions
    assert reproductions.reproduction("00-tiny", chapter.path, tiny / "results").fresh


def test_failed_run_keeps_its_notebook(tiny, capsys):
    assert cli.main(["run", "00-tiny", "-p", "fail", "True"]) == 1
    kept = tiny / "build" / "quick" / "00-tiny.ipynb"
    assert str(kept) in capsys.readouterr().err
    nb = json.loads(kept.read_text())
    assert any(o.get("ename") == "AssertionError" for c in nb["cells"] for o in c.get("outputs", []))
    assert not runner.is_fresh(runner.find_chapter("00-tiny"), "quick", {"fail": True})


def test_book_workers_run_chapters_side_by_side_and_report_a_failure_after_all_ran(tiny, capsys):
    """``labkit book --workers 2`` runs chapters in processes of their own, with the parent's
    folders; one chapter failing does not stop the other, and its failure is what is raised."""
    nb = nbformat.read(tiny / "notebooks" / "00-tiny.ipynb", as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("fail = False", "fail = True")
    nbformat.write(nb, tiny / "notebooks" / "01-failing.ipynb")
    with pytest.raises(runner.ChapterFailed, match="chapter 01-failing failed") as error:
        cli._run_chapters([("00-tiny", "quick", "labkit book"), ("01-failing", "quick", "labkit book")], 2)
    assert error.value.executed == tiny / "build" / "quick" / "01-failing.ipynb" and error.value.executed.exists()
    record = json.loads((tiny / "build" / "quick" / "00-tiny.claims.json").read_text())
    assert record["claims"][0]["measured"] == 1.5
    assert "00-tiny: done" in capsys.readouterr().out
    assert cli.main(["book", "--workers", "-1"]) == 2
    assert "--workers=-1 is not valid" in capsys.readouterr().err
