"""`bench grid` end to end: CliRunner into tmp_path, Parquet read back; resume after a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from optbench.cli.app import app
from optbench.grid import GridSpec, run_grid

runner = CliRunner()


def bench(*args: str):
    return runner.invoke(app, ["grid", *args], catch_exceptions=False)


def test_grid_writes_the_results_folder_and_prints_the_summary(tmp_path):
    out = tmp_path / "g"
    result = bench(
        "--optimizer",
        "sgd,adagrad",
        "--lr",
        "0.05",
        "--lr",
        "0.3",
        "--momentum",
        "0,0.9",
        "--seeds",
        "2",
        "--steps",
        "40",
        "--workers",
        "1",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 2 * 2 * 2 * 2 and runs["run_id"].is_unique
    assert {"warnings", "momentum_knob", "reason"} <= set(runs.columns)
    assert runs.groupby("status").size().to_dict() == {"diverged": 2, "invalid": 4, "ok": 10}
    assert pd.read_parquet(out / "traces")["run_id"].nunique() == 12  # an invalid cell has no steps
    assert (out / "manifest.json").exists()
    text = result.stdout
    assert "16 runs: 2 optimizer x 2 lr x 2 momentum, 2 seeds; 10 ok, 2 diverged, 4 invalid" in text
    assert "best per optimizer" in text and f"bench report {out}" in text
    assert "4 x optimizer 'adagrad' has no momentum knob (momentum=0.9)" in text

    again = bench(
        "--optimizer",
        "sgd,adagrad",
        "--lr",
        "0.05,0.3",
        "--momentum",
        "0,0.9",
        "--seeds",
        "2",
        "--steps",
        "40",
        "--workers",
        "1",
        "--out",
        str(out),
    )
    assert again.exit_code == 0 and "16 of 16 runs were already in" in again.stdout
    assert len(pd.read_parquet(out / "runs.parquet")) == 16


def test_toml_spec_with_cli_override(tmp_path):
    spec = tmp_path / "grid.toml"
    spec.write_text(
        'problem = "quadratic"\noptimizer = ["sgd", "adam"]\nlr = "linspace(0.1, 0.2, 3)"\nsteps = 400\n'
    )
    out = tmp_path / "g"
    result = bench("--spec", str(spec), "--steps", "10", "--seed", "0,1", "--workers", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 2 * 3 * 2 and set(runs["steps"]) == {10} and set(runs["seed"]) == {0, 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizer", "sgd,adamx"], "error: unknown optimizer 'adamx'; valid: "),
        (["--lr", "linspace(0.1,0.5)"], "error: malformed lr range 'linspace(0.1,0.5)'"),
        (["--problem", "quadratic", "--depth", "3"], "error: --depth 3: applies to MLP problems"),
        (["--spec", "missing.toml"], "error: spec file 'missing.toml' not found"),
        (["--seed", "1", "--seeds", "3"], "error: give either seed"),
        (["--executor", "spark"], "error: unknown executor 'spark'"),
        (["--seeds", "100000000"], "error: seeds must be in 1..1,000,000"),
        (
            ["--lr", "linspace(0.01,0.5,100000000)"],
            "error: lr range 'linspace(0.01,0.5,100000000)' has 100,000,000",
        ),
        (
            ["--lr", "linspace(0.01,0.5,1000)", "--seeds", "20", "--max-cells", "10000"],
            "error: the grid has 20,000 cells, more than 10,000; raise --max-cells",
        ),
        (["--seed", "9223372036854775808"], "error: seed must fit in 64 bits"),
        (
            ["--momentum", "logspace(0,400,2)"],
            "error: momentum range 'logspace(0,400,2)': a value is too large",
        ),
        (
            ["--lr", "0.1,,0.3"],
            "error: lr: empty value in '0.1,,0.3' (two commas in a row, or a comma at an end)",
        ),
        (["--optimizer", "sgd,"], "error: optimizer: empty value in 'sgd,'"),
        (["--max-cells", "0"], "error: --max-cells must be >= 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, args, message):
    out = tmp_path / "g"
    result = bench(*args, "--out", str(out))
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_malformed_toml_names_file_and_line(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('optimizer = ["sgd"]\nlr = [0.1,, 0.2]\nsteps = 5\n')
    result = bench("--spec", str(spec), "--out", str(tmp_path / "g"))
    assert result.exit_code == 2 and "bad.toml: malformed TOML" in result.stderr and "line 2" in result.stderr


# -------------------------------------------------------------------------------- resume after a SIGKILL

KILL_GRID = {"lr": "linspace(0.01, 0.2, 12)", "momentum": "0,0.5", "steps": 1000}


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_rows_of_an_uninterrupted_grid(tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "optbench",
        "grid",
        "--lr",
        KILL_GRID["lr"],
        "--momentum",
        KILL_GRID["momentum"],
        "--steps",
        str(KILL_GRID["steps"]),
        "--workers",
        "2",
        "--no-progress",
        "--engine",
        "reference",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while len(list((out / "_runs").glob("*.parquet"))) < 3:
            assert proc.poll() is None, f"grid ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no run was committed within 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI process and its workers, mid-run
        proc.wait()
    committed = len(list((out / "_runs").glob("*.parquet")))
    assert proc.returncode == -signal.SIGKILL and 3 <= committed < 24
    pd.read_parquet(out / "traces")  # whatever was in flight is invisible to a dataset scan

    # The same command resumes; one worker (in-process) spares a second pool start-up and shows that the
    # worker count does not change a result.
    resumed = subprocess.run([*args, "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{committed} of 24 runs were already in" in resumed.stdout

    reference = run_grid(GridSpec(**KILL_GRID), out=tmp_path / "reference", workers=1, engine="reference")
    runs = pd.read_parquet(out / "runs.parquet")
    assert runs["run_id"].is_unique and list(runs["run_id"]) == list(reference["run_id"])
    assert runs["final_loss"].tolist() == reference["final_loss"].tolist()  # identical, not merely close
    traces = pd.read_parquet(out / "traces").sort_values(["run_id", "step"]).reset_index(drop=True)
    expected = pd.read_parquet(tmp_path / "reference" / "traces").sort_values(["run_id", "step"])
    pd.testing.assert_frame_equal(traces, expected.reset_index(drop=True))


def test_engine_option_picks_the_engine_and_rejects_unknown_ones(tmp_path):
    base = ["grid", "--lr", "0.1,0.2", "--steps", "10", "--workers", "1", "--no-progress"]
    for engine in ("reference", "batched"):
        result = runner.invoke(app, [*base, "--engine", engine, "--out", str(tmp_path / engine)])
        assert result.exit_code == 0, result.output
        assert set(pd.read_parquet(tmp_path / engine / "runs.parquet")["engine"]) == {engine}
    bad = runner.invoke(app, [*base, "--engine", "fast", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "unknown engine 'fast'" in bad.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_a_killed_parent_takes_its_workers_along(tmp_path):
    """``kill PID``: workers stopped, runs.parquet rewritten, one line saying how to resume, exit 130.
    ``kill -9 PID`` of the CLI process alone: its workers notice and exit instead of idling forever."""
    args = [
        sys.executable,
        "-m",
        "optbench",
        "grid",
        "--lr",
        KILL_GRID["lr"],
        "--momentum",
        KILL_GRID["momentum"],
        "--steps",
        str(KILL_GRID["steps"]),
        "--workers",
        "2",
        "--no-progress",
        "--engine",
        "reference",
    ]

    def start(out):
        proc = subprocess.Popen(
            [*args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 120
        while len(list((out / "_runs").glob("*.parquet"))) < 2:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no run was committed within 120 s"
            time.sleep(0.02)
        return proc

    proc = start(tmp_path / "term")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    stderr = proc.stderr.read()
    assert stderr.startswith("interrupted: ") and "run the same command again to resume" in stderr, stderr
    assert len(pd.read_parquet(tmp_path / "term" / "runs.parquet")) >= 2

    proc = start(tmp_path / "kill")
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert workers, "no worker processes found"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") and _alive(int(pid)) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their parent by 30 s"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped by init."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_interrupt_says_how_many_runs_are_in_and_how_to_resume(tmp_path, monkeypatch):
    import optbench.grid as grid_module

    real_run_grid = grid_module.run_grid

    def interrupted_after_the_runs(*args, **kwargs):
        real_run_grid(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(grid_module, "run_grid", interrupted_after_the_runs)
    out = tmp_path / "g"
    result = bench("--lr", "0.1,0.2", "--steps", "5", "--force", "--no-progress", "--out", str(out))
    assert result.exit_code == 130
    assert result.stderr == (
        f"interrupted: 2 of 2 runs are in {out}; run the same command again without --force to resume\n"
    )


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_out_that_is_a_file_is_one_line(tmp_path, force):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    result = bench("--steps", "3", "--no-progress", "--out", str(target), *force)
    assert result.exit_code == 2 and result.stderr == f"error: --out {target} is a file, not a folder\n"
    assert result.stdout == "" and target.read_text() == "mine"


def test_a_damaged_folder_is_repaired_by_the_same_command_with_one_line(tmp_path):
    """The issue's case: a truncated trace file went unnoticed ("200 of 200 runs were already in ...")."""
    out = tmp_path / "g"
    args = [
        "--lr",
        "0.1,0.2,0.3",
        "--steps",
        "10",
        "--workers",
        "1",
        "--engine",
        "reference",
        "--out",
        str(out),
    ]
    assert bench(*args).exit_code == 0
    damaged = sorted((out / "traces").glob("*.parquet"))[0]
    damaged.write_bytes(damaged.read_bytes()[:-50])
    result = bench(*args, "--no-progress")
    assert result.exit_code == 0
    assert result.stderr.startswith(
        f"repairing: 1 run(s) from 1 damaged file(s) run again (traces/{damaged.name}: "
    )
    assert result.stderr.count("\n") == 1
    assert "2 of 3 runs were already in" in result.stdout
    assert (out / "_damaged" / "traces" / damaged.name).exists()
    assert pd.read_parquet(out / "traces")["run_id"].nunique() == 3
