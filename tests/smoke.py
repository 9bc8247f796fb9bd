"""Shared by the experiment tests (importable because pyproject puts tests/ on the path)."""
import pytest


def smoke_run(experiment, tmp_path_factory):
    """Yield ``experiment.run`` at the smoke budget, in one process, with a fresh cache and no bars."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("LABKIT_PROGRESS", "off")
    try:
        yield experiment.run(experiment.from_budget("smoke", workers=1))
    finally:
        mp.undo()


def cached_smoke_run(experiment):
    """Yield ``experiment.run`` at the smoke budget, in one process, on the default cache (a rerun of
    the view tests trains nothing) and without progress bars."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_PROGRESS", "off")
    try:
        yield experiment.run(experiment.from_budget("smoke", workers=1))
    finally:
        mp.undo()
