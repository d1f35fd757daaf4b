"""Which folder a command may write into (store.folder): a folder optbench did not make is never written
into, a folder of another command is refused, every bad path is one line, an early error leaves nothing."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from optbench import store
from optbench.errors import OptbenchError
from optbench.grid import GridSpec, run_grid

runner = CliRunner()

# One cheap invocation of every command that writes a results folder (the folder is appended).
WRITERS = {
    "grid": ["grid", "--steps", "3", "--workers", "1", "--no-progress"],
    "lr-sweep": ["lr-sweep", "--num", "2", "--steps", "3", "--no-plots"],
    "lr-find": ["lr-find", "--problem", "quadratic", "--steps", "10"],
    "schedules": ["schedules", "--steps", "5", "--schedulers", "cosine"],
    "init-report": ["init-report", "--depth", "2", "--width", "8", "--no-plots", "--init", "default"],
    "amp": ["amp", "--device", "cpu", "--widths", "8", "--min-run-time", "0.01", "--precision", "fp32"],
}


def cli(*args):
    from optbench.cli.app import app

    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line(result, code=2):
    assert result.exit_code == code, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.stderr[len("error: ") : -1]


def files_in(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command", WRITERS)
def test_a_folder_optbench_did_not_make_is_refused_and_untouched(tmp_path, command):
    """The hostile case of the issue: userdir/traces/important.parquet was deleted, userdir/runs.parquet
    overwritten."""
    user = tmp_path / "userdir"
    (user / "traces").mkdir(parents=True)
    (user / "traces" / "important.parquet").write_text("precious")
    (user / "runs.parquet").write_text("mine")
    before = {p: p.read_bytes() for p in user.rglob("*") if p.is_file()}
    message = one_line(cli(*WRITERS[command], "--out", user))
    assert message == (
        f"--out {user} is not empty and is not an optbench results folder (no manifest.json); optbench "
        "writes only into a new or empty folder or one of its own results folders"
    )
    assert {p: p.read_bytes() for p in user.rglob("*") if p.is_file()} == before
    assert files_in(user) == ["runs.parquet", "traces", "traces/important.parquet"]  # not even a lock file


@pytest.mark.parametrize("command", list(WRITERS))
def test_a_blank_out_is_an_error_not_the_current_folder(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    for blank in ("", "  "):
        message = one_line(cli(*WRITERS[command], "--out", blank))
        assert message.startswith("--out is empty; give a folder name")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("command", ["grid", "lr-sweep", "schedules"])
def test_a_folder_of_another_command_is_refused(tmp_path, command):
    other = "lr-find" if command != "lr-find" else "grid"
    out = tmp_path / "other"
    assert cli(*WRITERS[other], "--out", out).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    message = one_line(cli(*WRITERS[command], "--out", out))
    assert message == (
        f"--out {out} holds the results of bench {other}; bench {command} writes only into a new folder or "
        "one of its own (choose another --out)"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_lr_sweep_into_a_grid_folder_mixes_nothing(tmp_path):
    """The issue's case: the sweep's table had 203 rows and said "measurement DISAGREES"."""
    out = tmp_path / "g"
    assert (
        cli(
            "grid", "--lr", "0.1,0.2,0.3", "--steps", "5", "--workers", "1", "--no-progress", "--out", out
        ).exit_code
        == 0
    )
    one_line(cli("lr-sweep", "--num", "3", "--steps", "5", "--out", out))
    assert len(pd.read_parquet(out / store.RUNS_FILE)) == 3


def test_an_lr_sweep_resumes_its_own_runs_and_refuses_another_sweeps(tmp_path, monkeypatch):
    from optbench.engine import reference
    from optbench.experiments import sweep

    out = tmp_path / "s"
    real_run, calls = reference.run, []

    def interrupted_after_two(config):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(config.lr)
        return real_run(config)

    monkeypatch.setattr(reference, "run", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        sweep.lr_sweep(0.05, 0.2, 4, out=out, plots=False)
    assert len(store.completed_run_ids(out)) == 2  # kept: the sweep can resume
    monkeypatch.setattr(reference, "run", real_run)
    resumed = sweep.lr_sweep(0.05, 0.2, 4, out=out, plots=False)
    assert len(resumed.runs) == 4
    expected = sweep.lr_sweep(0.05, 0.2, 4, out=tmp_path / "fresh", plots=False)
    assert resumed.runs["final_loss"].tolist() == expected.runs["final_loss"].tolist()
    with pytest.raises(OptbenchError, match="holds 4 run\\(s\\) of another lr sweep"):
        sweep.lr_sweep(0.3, 0.4, 2, out=out, plots=False)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["lr-sweep", "schedules", "init-report", "amp"])
def test_every_writing_command_takes_the_folder_lock(tmp_path, command):
    """The issue's case: an lr-sweep beside a grid left 203 commit records for a 200-row runs table. Here
    this process holds the folder as a running command does; the command, in another process, is refused."""
    import sys

    from optbench.store import lock as folderlock

    out = tmp_path / "f"
    assert cli(*WRITERS[command], "--out", out).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    with folderlock.exclusive(out, command):
        held = subprocess.run(
            [sys.executable, "-m", "optbench", *WRITERS[command], "--out", str(out)],
            capture_output=True,
            text=True,
        )
    assert held.returncode == 2 and held.stderr.count("\n") == 1
    assert held.stderr.startswith(f"error: another {command} (pid {os.getpid()}) is writing to {out}")
    assert {
        p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.endswith(".lock")
    } == before


def test_a_path_through_a_file_is_one_line(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    for command in ("grid", "lr-sweep", "schedules"):
        message = one_line(cli(*WRITERS[command], "--out", afile / "sub"))
        assert message == f"--out {afile / 'sub'}: {afile} is a file, not a folder"
    assert afile.read_text() == "mine"


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("lr-find", ["--batch-size", "4"]),  # --batch-size applies to MLP problems: the run is invalid
        ("grid", ["--executor", "local", "--workers", "0"]),
    ],
)
def test_an_early_error_leaves_no_folder_not_even_results(tmp_path, monkeypatch, command, extra):
    monkeypatch.chdir(tmp_path)
    result = cli(*WRITERS[command], *extra)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert list(tmp_path.iterdir()) == []


def test_a_runtime_error_before_the_first_commit_leaves_no_results_folder(tmp_path, monkeypatch):
    """A bad Ray address, a grid interrupted before its first commit: the default folder goes, and so does
    the results/ folder made for it."""
    from optbench.grid.executors import LocalExecutor

    monkeypatch.chdir(tmp_path)

    def unreachable(self, tasks, out, on_result):
        raise OptbenchError("cannot start or reach ray://nowhere:1: connection refused")

    monkeypatch.setattr(LocalExecutor, "run", unreachable)
    assert one_line(cli("grid", "--steps", "3", "--no-progress")).startswith("cannot start or reach")
    assert list(tmp_path.iterdir()) == []

    def interrupted(self, tasks, out, on_result):
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalExecutor, "run", interrupted)
    result = cli("grid", "--steps", "3", "--no-progress")
    assert result.exit_code == 130
    assert result.stderr == "interrupted before any run was committed; nothing was kept\n"
    assert list(tmp_path.iterdir()) == []


def test_an_existing_empty_folder_is_not_removed_after_an_error(tmp_path, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    one_line(cli("lr-find", "--problem", "quadratic", "--steps", "10", "--batch-size", "4", "--out", out))
    assert out.is_dir()


def test_stale_temp_files_of_ours_are_removed_and_other_dot_files_kept(tmp_path):
    """A SIGKILL during a write leaves `_runs/.<id>.parquet.<hex>.tmp`: the next command into the folder
    removes it (under the lock, so no writer of ours is alive); a dot file of another name stays."""
    out = tmp_path / "g"
    run_grid(GridSpec(steps=3), out=out, workers=1)
    stale = [
        out / store.COMMITS_DIR / f".0123456789abcdef.parquet.{'a' * 32}.tmp",
        out / store.TRACES_DIR / f".batch-0123456789abcdef.parquet.{'b' * 32}.tmp",
        out / f".runs.parquet.{'c' * 32}.tmp",
    ]
    for path in stale:
        path.write_bytes(b"PAR1 half")
    theirs = out / store.TRACES_DIR / ".keep"
    theirs.write_text("theirs")
    run_grid(GridSpec(steps=3), out=out, workers=1)
    assert not any(path.exists() for path in stale) and theirs.read_text() == "theirs"


def test_a_foreign_file_in_the_commit_folder_is_not_a_row(tmp_path):
    """The issue's case: a foreign Parquet file in _runs/ became an all-null row."""
    import pyarrow as pa

    out = tmp_path / "g"
    run_grid(GridSpec(lr="0.1,0.2", steps=3), out=out, workers=1)
    pq.write_table(pa.table({"x": [1, 2]}), out / store.COMMITS_DIR / "mine.parquet")
    lines = []
    runs = run_grid(GridSpec(lr="0.1,0.2", steps=3), out=out, workers=1, say=lines.append)
    assert len(runs) == 2 and runs["run_id"].notna().all()
    assert len(pd.read_parquet(out / store.RUNS_FILE)) == 2
    assert lines == [
        f"note: 1 file(s) in {out} were not written by optbench and are left alone: _runs/mine.parquet"
    ]
    assert pq.read_table(out / store.COMMITS_DIR / "mine.parquet").num_rows == 2


# ------------------------------------------------------------------------ read-only folders, a full disk


@contextlib.contextmanager
def read_only(folder):
    """``folder`` made read-only for this process: a read-only tmpfs mount when running as root (root
    ignores permission bits), else chmod; skips where neither is possible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("root without mount: no way to make a folder read-only here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_folders_are_one_line_each(tmp_path):
    source = tmp_path / "g"
    run_grid(GridSpec(lr="0.1,0.2", steps=5), out=source, workers=1)
    target = tmp_path / "ro"
    target.mkdir()
    with read_only(target):
        assert one_line(cli(*WRITERS["grid"], "--out", target / "new")) == (
            f"cannot create --out {target / 'new'}: {os.strerror(errno.EROFS if os.geteuid() == 0 else errno.EACCES)}"
        )
        assert one_line(cli("lr-sweep", "--num", "2", "--steps", "3", "--out", target / "s")).startswith(
            f"cannot create --out {target / 's'}: "
        )
        assert one_line(cli("plot", source, "--figure", "all", "--out", target)).startswith(
            f"cannot write to {target}: "
        )
        assert one_line(cli("report", source, "--out", target / "r.html")).startswith(
            f"{target / 'r.html'}: "
        )
    assert list(target.iterdir()) == []


def test_a_disk_that_fills_during_a_grid_is_one_line_exit_1_and_keeps_what_was_committed(
    tmp_path, monkeypatch
):
    out = tmp_path / "g"
    real_write, writes = pq.write_table, []

    def fills_up(table, where, **kwargs):
        writes.append(where)
        if len(writes) > 4:  # two runs (trace file + commit record each), then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
        real_write(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", fills_up)
    args = [
        "grid",
        "--lr",
        "0.1,0.2,0.3",
        "--steps",
        "5",
        "--workers",
        "1",
        "--engine",
        "reference",
        "--no-progress",
    ]
    message = one_line(cli(*args, "--out", out), code=1)
    assert (
        message.startswith(f"{out / store.TRACES_DIR}/")
        and ": No space left on device; 2 of 3 runs are" in message
    )
    assert message.endswith(f"in {out}; run the same command again to resume")
    assert [p for p in out.rglob(".*") if p.name.endswith(".tmp")] == []  # no temp file left
    monkeypatch.setattr(pq, "write_table", real_write)
    result = cli(*args, "--out", out)
    assert result.exit_code == 0 and "2 of 3 runs were already in" in result.stdout


def test_a_failed_text_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a-folder"
    target.mkdir()
    with pytest.raises(IsADirectoryError):
        store.write_text_atomic("report", target)
    assert list(tmp_path.iterdir()) == [target] and list(target.iterdir()) == []


def test_report_out_a_folder_and_plot_format_clash_are_one_line(tmp_path):
    source = tmp_path / "g"
    run_grid(GridSpec(lr="0.1,0.2", steps=5), out=source, workers=1)
    folder = tmp_path / "reports"
    folder.mkdir()
    assert one_line(cli("report", source, "--out", folder)) == (
        f"--out {folder} is a folder; give the report's file name, e.g. {folder / 'report.html'}"
    )
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".*"))
    png = tmp_path / "x.png"
    assert one_line(cli("plot", source, "--format", "svg", "--out", png)) == (
        f"--out {png} ends in .png but --format is svg; give one of them, or both alike"
    )
    assert not png.exists()
    svg = tmp_path / "x.svg"
    assert cli("plot", source, "--out", svg).exit_code == 0
    assert svg.read_text().lstrip().startswith("<?xml")  # the suffix chose the format
