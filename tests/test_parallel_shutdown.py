"""Stopping the process that owns ``labkit.parallel``'s pool stops its workers, however it stops.

Each test starts a pool owner (a child process or a Jupyter kernel) in a session of its own, waits
until its workers run, stops the owner, and asserts that every worker is gone within a generous
limit. The runs are stand-ins from ``parallel_workload`` (tiny, light), not a chapter's training.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
START_LIMIT_S = 120.0  # spawning workers imports torch in each: slow on a busy 2-core machine
EXIT_LIMIT_S = 20.0  # workers exit within a second; the margin is for slow machines

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _env(cache_dir: Path) -> dict[str, str]:
    path = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "LABKIT_PROGRESS": "off", "LABKIT_CACHE_DIR": str(cache_dir),
            "LABKIT_WORKERS": ""}


def _wait_for(condition, limit_s: float, what: str, check=lambda: None):
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        check()
        time.sleep(0.05)
    raise AssertionError(f"timed out after {limit_s:.0f} s waiting for {what}")


def _worker_pids(run_dir: Path, count: int, owner: subprocess.Popen | None = None) -> set[int]:
    def started():
        pids = {int(p.name.split(".")[1]) for p in run_dir.glob("*.*") if p.name.split(".")[1].isdigit()}
        return pids if len(pids) >= count else None

    def owner_alive():
        if owner is not None and owner.poll() is not None:
            raise AssertionError(f"the pool owner exited early:\n{owner.stderr.read() if owner.stderr else ''}")

    return _wait_for(started, START_LIMIT_S, f"{count} workers to start", owner_alive)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")  # an orphan's zombie waits for PID 1 to reap it
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _assert_workers_exit(pids: set[int]) -> float:
    start = time.monotonic()
    _wait_for(lambda: not any(_alive(pid) for pid in pids), EXIT_LIMIT_S,
              f"workers {sorted(pid for pid in pids if _alive(pid))} to exit after their parent")
    return time.monotonic() - start


def _owner(mode: str, run_dir: Path, cache_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "parallel_workload", mode, str(run_dir)], cwd=REPO_ROOT,
                            env=_env(cache_dir), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _cleanup(process: subprocess.Popen) -> None:
    """Whatever a failed test left, in the session it started (workers stay in it when orphaned)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=30)
    process.stdout.close()
    process.stderr.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_workers_exit_when_their_parent_is_killed(tmp_path, signum):
    """One worker is training, the other is writing a cache entry; neither outlives the parent, and
    the run cut off mid-write leaves no temporary file."""
    cache_dir = tmp_path / "cache"
    owner = _owner("mixed", tmp_path, cache_dir)
    try:
        pids = _worker_pids(tmp_path, 2, owner)
        _wait_for(lambda: list(tmp_path.glob("saving-*")), START_LIMIT_S, "a run to be mid-write")
        assert len(list((cache_dir / "toy").glob(".*.tmp"))) == 1
        os.kill(owner.pid, signum)  # the owner only, as when a run is stopped; not its process group
        owner.wait(timeout=30)
        _assert_workers_exit(pids)
        assert list((cache_dir / "toy").iterdir()) == []
    finally:
        _cleanup(owner)


def test_an_owner_killed_while_caching_leaves_only_complete_entries(tmp_path):
    cache_dir = tmp_path / "cache"
    owner = _owner("cached", tmp_path, cache_dir)
    try:
        _wait_for(lambda: len(list(tmp_path.glob("*.*"))) >= 3, START_LIMIT_S, "a few batches of entries",
                  lambda: owner.poll() is None or pytest.fail(owner.stderr.read()))
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=30)
        entries = list((cache_dir / "toy").glob("*.pt"))
        assert len(entries) >= 12
        for entry in entries:
            result = torch.load(entry, weights_only=True)
            assert torch.equal(result["weights"], torch.full((256,), float(result["index"])))
    finally:
        _cleanup(owner)


def test_an_interrupt_cancels_pending_runs_and_returns(tmp_path):
    """Lab's stop button: SIGINT to the kernel's process group, workers included."""
    owner = _owner("spin", tmp_path, tmp_path / "cache")
    try:
        pids = _worker_pids(tmp_path, 2, owner)
        os.killpg(owner.pid, signal.SIGINT)
        interrupted = _wait_for(lambda: (tmp_path / "interrupted").exists(), EXIT_LIMIT_S, "map_runs to raise")
        assert interrupted and all(_alive(pid) for pid in pids)  # workers ignore the interrupt
        (tmp_path / "stop").touch()  # the runs already in the workers end; the owner then exits
        assert owner.wait(timeout=60) == 0
        started = {p.name.split(".")[0] for p in tmp_path.glob("*.*") if p.name.split(".")[1].isdigit()}
        assert len(started) < 8  # the pending runs were cancelled
        _assert_workers_exit(pids)
    finally:
        _cleanup(owner)


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_workers_exit_when_their_kernel_restarts_or_dies(tmp_path, how):
    jupyter_client = pytest.importorskip("jupyter_client")
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(REPO_ROOT), env=_env(tmp_path / "cache"))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=START_LIMIT_S)
        client.execute("import parallel_workload as w\nfrom labkit.parallel import map_runs\n"
                       f"map_runs(w.spin, [dict(index=i, run_dir={str(tmp_path)!r}) for i in range(8)], workers=2)")
        pids = _worker_pids(tmp_path, 2)
        if how == "restart":  # JupyterLab's restart: jupyter_client SIGKILLs the kernel's process group
            manager.restart_kernel(now=True)
        else:  # the kernel alone dies (out of memory, a crash, papermill's parent gone)
            os.kill(manager.provisioner.pid, signal.SIGKILL)
        _assert_workers_exit(pids)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
