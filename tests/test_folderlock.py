"""One grid per results folder (optbench.folderlock): a second grid is refused, a restarted one waits for
the last one's workers, and the locks go with a process killed by SIGKILL."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from optbench import store
from optbench.cli.app import app
from optbench.errors import OptbenchError
from optbench.grid import GridSpec, run_grid
from optbench.store import lock as folderlock

SMALL = GridSpec(lr="0.1,0.2", momentum="0,0.5", steps=10)


def _holder(code: str) -> subprocess.Popen:
    """A Python process that runs ``code``, prints 'held' and waits; returned once it has printed."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_grid_on_the_same_folder_is_refused_until_the_first_is_gone(tmp_path):
    out = tmp_path / "g"
    out.mkdir()
    holder = _holder(f"""
        import time
        from optbench.store import lock as folderlock
        with folderlock.exclusive({str(out)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)
    try:
        with pytest.raises(OptbenchError, match=f"another grid \\(pid {holder.pid}\\) is writing to "):
            run_grid(SMALL, out=out, workers=1)
        result = CliRunner().invoke(app, ["grid", "--steps", "5", "--no-progress", "--out", str(out)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"error: another grid (pid {holder.pid}) is writing to {out}")
        assert not (out / store.COMMITS_DIR).exists()  # the refused grids wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert len(run_grid(SMALL, out=out, workers=1)) == 4  # the kernel dropped the dead holder's lock


@pytest.mark.slow
def test_a_restarted_grid_waits_for_the_last_grids_workers(tmp_path):
    """An orphaned worker of a killed grid writes a trace file late. The restarted grid must clean the
    folder only after that worker is gone, or the stray file would stay and duplicate trace rows."""
    run_grid(SMALL, out=tmp_path, workers=1, engine="reference")
    existing = sorted((tmp_path / store.TRACES_DIR).glob("*.parquet"))[0]
    stray = tmp_path / store.TRACES_DIR / "batch-0123456789abcdef.parquet"  # named as a worker names it
    worker = _holder(f"""
        import shutil, time
        from optbench.store import lock as folderlock
        folderlock.hold_as_writer({str(tmp_path)!r})
        print("held", flush=True)
        time.sleep(1.0)
        shutil.copy({str(existing)!r}, {str(stray)!r})  # a trace file no commit record names
    """)
    runs = run_grid(SMALL, out=tmp_path, workers=1)  # everything is done: only the clean-up runs
    worker.wait()
    assert worker.returncode == 0 and len(runs) == 4
    assert not stray.exists()
    traces = store.read_traces(tmp_path)
    assert not traces.duplicated(["run_id", "step"]).any()


@pytest.mark.slow
def test_pool_workers_hold_the_writers_lock_while_the_grid_runs(tmp_path):
    held = []

    def probe(_state) -> None:
        fd = os.open(tmp_path / folderlock.WRITERS_LOCK, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)

    run_grid(
        GridSpec(lr="0.1,0.2,0.3", steps=20), out=tmp_path, workers=2, engine="reference", progress=probe
    )
    assert held[1:] and all(held[1:])  # every result arrived while workers held it (the first call: none yet)


def test_a_waiting_grid_gives_up_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(folderlock, "WRITERS_WAIT_S", 0.2)
    worker = _holder(f"""
        import time
        from optbench.store import lock as folderlock
        folderlock.hold_as_writer({str(tmp_path)!r})
        print("held", flush=True)
        time.sleep(60)
    """)
    try:
        with pytest.raises(OptbenchError, match="worker processes of an earlier grid are still writing to"):
            run_grid(SMALL, out=tmp_path, workers=1)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert len(run_grid(SMALL, out=tmp_path, workers=1)) == 4


@pytest.mark.slow
@pytest.mark.parametrize("parent_alive", [True, False])
def test_a_worker_whose_grid_died_before_it_started_exits_without_writing(tmp_path, parent_alive):
    """A pool worker still starting when its grid is killed would take init's pid for its parent and never
    see the death; it checks the grid's own pid instead, after taking its writer's lock."""
    parent = "os.getppid()" if parent_alive else "2**22 + 12345"  # beyond pid_max: no such process
    code = f"import os; from optbench.grid.executors import _init_worker; _init_worker({str(tmp_path)!r}, {parent}); print('working')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout.strip()) == ((0, "working") if parent_alive else (1, ""))


def test_a_folder_that_cannot_be_locked_is_one_line(tmp_path, monkeypatch):
    def refused(path, flags, mode=0o777):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(folderlock.os, "open", refused)
    with pytest.raises(OptbenchError, match=f"^cannot lock {tmp_path}: Permission denied$"):
        run_grid(SMALL, out=tmp_path, workers=1)
