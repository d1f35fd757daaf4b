"""Local executors: identical results whatever the number of workers; clear errors for bad options."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from optbench import store
from optbench.errors import OptbenchError
from optbench.grid import GridSpec, expand, run_grid
from optbench.grid.executors import RAY_MISSING, LocalExecutor, make_executor, usable_cores

# Small MLPs with minibatches, two seeds, a scheduler and a param-group axis: every source of randomness.
MLP_GRID = GridSpec(
    problem="mlp-classification",
    width=16,
    optimizer="sgd,adamw",
    lr="0.01,0.1",
    momentum=0.9,
    scheduler="cosine",
    head_lr_scale="1,10",
    seed="0,1",
    steps=40,
)


def _comparable(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.drop(columns="wall_time_s")


@pytest.mark.slow
def test_results_are_identical_with_one_and_two_workers(tmp_path):
    one = run_grid(MLP_GRID, out=tmp_path / "w1", workers=1)
    two = run_grid(MLP_GRID, out=tmp_path / "w2", workers=2)
    assert len(one) == 16 and (one["status"] == "ok").all()
    assert list(two["run_id"]) == [c.run_id() for c in expand(MLP_GRID)]  # expansion order, not finish order
    pd.testing.assert_frame_equal(_comparable(one), _comparable(two))  # bit-identical, warnings included
    sort = ["run_id", "step"]
    traces_one = store.read_traces(tmp_path / "w1").sort_values(sort).reset_index(drop=True)
    traces_two = store.read_traces(tmp_path / "w2").sort_values(sort).reset_index(drop=True)
    pd.testing.assert_frame_equal(traces_one, traces_two)
    assert store.read_manifest(tmp_path / "w2")["workers"] == 2


def test_in_process_runs_leave_the_callers_torch_threads_alone(tmp_path):
    import torch

    before = torch.get_num_threads()
    run_grid(GridSpec(steps=5), out=tmp_path, workers=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "dask"}, "unknown executor 'dask'; valid: local, ray"),
        ({"kind": "local", "address": "ray://head:10001"}, "--address applies to --executor ray"),
        ({"kind": "local", "workers": 0}, "--workers must be >= 1, got 0"),
        ({"kind": "ray", "workers": 2}, "--workers applies to --executor local"),
    ],
)
def test_bad_execution_options(kwargs, message):
    with pytest.raises(OptbenchError, match=message.replace("(", r"\(")):
        make_executor(**kwargs)


def test_missing_ray_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(OptbenchError) as err:
        make_executor("ray")
    assert str(err.value) == RAY_MISSING == "install the ray extra: pip install 'optbench[ray]'"


def test_default_workers_are_the_usable_cores():
    assert LocalExecutor().workers == usable_cores() >= 1


def test_a_failing_grid_leaves_no_half_made_folder(tmp_path, monkeypatch):
    def broken(self, configs, out, on_result):
        raise OSError("disk full")

    monkeypatch.setattr(LocalExecutor, "run", broken)
    with pytest.raises(OSError):
        run_grid(GridSpec(steps=5), out=tmp_path / "new", workers=1)
    assert not (tmp_path / "new").exists()


def test_an_interrupted_grid_keeps_its_commits_readable(tmp_path, monkeypatch):
    real_run = LocalExecutor.run

    def interrupted(self, configs, out, on_result):
        real_run(self, configs[:2], out, on_result)
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalExecutor, "run", interrupted)
    spec = GridSpec(lr="0.1,0.2,0.3", steps=5)
    with pytest.raises(KeyboardInterrupt):
        run_grid(spec, out=tmp_path, workers=1, engine="reference")  # one task per run
    assert len(store.read_runs(tmp_path)) == 2
    monkeypatch.setattr(LocalExecutor, "run", real_run)
    events = []
    runs = run_grid(spec, out=tmp_path, workers=1, engine="reference", progress=events.append)
    assert events[0].resumed == 2 and len(runs) == 3


def test_a_cpu_batch_is_cut_for_the_workers_and_a_gpu_batch_stays_whole():
    from optbench.grid.executors import MIN_CHUNK, Task
    from optbench.spec import RunConfig

    cells = tuple(RunConfig(lr=0.001 * (i + 1)) for i in range(4 * MIN_CHUNK))
    assert [len(t.configs) for t in Task(cells, batched=True).split(3)] == [22, 22, 20]
    assert [len(t.configs) for t in Task(cells[: MIN_CHUNK + 1], batched=True).split(3)] == [MIN_CHUNK + 1]
    gpu = tuple(c.replace(device="cuda") for c in cells)
    assert Task(gpu, batched=True).split(3) == [Task(gpu, batched=True)]
    assert Task(cells[:1]).split(3) == [Task(cells[:1])]


# ------------------------------------------------------------------------------ a worker killed mid-grid


def _dies_at_lr_0_3(task, out):
    """The task function a pool worker runs, as the OOM killer would see it: a worker given a cell with
    lr 0.3 is killed by SIGKILL; every other task runs and commits as usual."""
    import os
    import signal

    from optbench.grid import executors

    if any(config.lr == 0.3 for config in task.configs):
        os.kill(os.getpid(), signal.SIGKILL)
    return executors.run_and_commit(task, out)


# Two optimizers: two batches for the batched engine, so the grid runs on a pool (one task runs in-process).
KILL_SPEC = GridSpec(optimizer="sgd,adam", lr="0.1,0.2,0.3", steps=30)


@pytest.mark.slow
def test_a_worker_killed_by_sigkill_costs_only_its_cell(tmp_path, monkeypatch):
    """A real SIGKILL in a real pool worker: the other tasks in flight run again on a fresh pool; a batch
    whose worker dies is cut in two until the culprit is one cell, which runs once more and is then a failed
    run naming the signal; every other row equals an undisturbed grid's; nothing committed is lost or run
    twice. (The batched engine: its path covers the reference engine's single cells too.)"""
    from optbench.grid import executors

    engine = "batched"

    expected = run_grid(KILL_SPEC, out=tmp_path / "undisturbed", workers=1, engine=engine)
    monkeypatch.setattr(executors, "run_and_commit", _dies_at_lr_0_3)  # pickled by name into the workers
    runs = run_grid(KILL_SPEC, out=tmp_path / "killed", workers=2, engine=engine)
    killed = runs["lr"] == 0.3
    assert list(runs["run_id"]) == list(expected["run_id"])
    assert (runs.loc[killed, "status"] == "failed").all()
    assert runs.loc[~killed, "status"].tolist() == expected.loc[~killed, "status"].tolist()
    assert set(runs.loc[killed, "reason"]) == {
        "its worker process was killed by SIGKILL 2 times running this cell "
        "(the OOM killer sends SIGKILL when memory runs out)"
    }
    assert runs.loc[~killed, "final_loss"].tolist() == expected.loc[~killed, "final_loss"].tolist()
    assert set(runs["engine"]) == {engine}
    traces = store.read_traces(tmp_path / "killed")
    assert not traces.duplicated(["run_id", "step"]).any() and traces["run_id"].nunique() == 4
    monkeypatch.undo()
    again = []
    run_grid(KILL_SPEC, out=tmp_path / "killed", workers=1, engine=engine, progress=again.append)
    assert again[-1].resumed == 6  # the failed cells are data: committed, not run again


def test_pool_breaks_no_cell_can_be_blamed_for_stop_the_grid_with_one_line(tmp_path, monkeypatch):
    """A worker killed between tasks, or by SIGTERM from outside, blames no task: the tasks run again on a
    fresh pool, and after three such breaks the grid stops (exit 1: not the input's fault)."""
    from typer.testing import CliRunner

    from optbench.cli.app import app
    from optbench.grid import executors

    breaks = []

    def broken_pool(tasks, workers, out, on_result, on_start=None):
        breaks.append(len(tasks))
        return list(tasks), {}  # nothing finished, nobody to blame

    monkeypatch.setattr(executors, "_run_pool", broken_pool)
    args = [
        "grid",
        "--lr",
        "0.1,0.2",
        "--steps",
        "5",
        "--workers",
        "2",
        "--engine",
        "reference",
        "--no-progress",
    ]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "g")])
    assert breaks == [2, 2, 2] and result.exit_code == 1
    assert result.stderr == (
        "error: worker processes keep dying (3 times) and no run can be blamed; the runs committed so far "
        "are kept: run the same command again to resume\n"
    )
    assert not (tmp_path / "g").exists()  # nothing was committed: the folder it made is gone


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


@pytest.mark.parametrize("address", ["head:port", "ray://", ":6379", "head:99999", "ray://a/b:1"])
def test_a_malformed_ray_address_is_one_line(address):
    from optbench.grid.executors import check_reachable

    with pytest.raises(OptbenchError, match="is not host:port, ray://host:port or auto"):
        check_reachable(address)


def test_an_unreachable_ray_address_fails_at_once_not_after_ray_retries():
    """Given an address nothing answers at, Ray's client retries for minutes; the check says so in one
    line, before ray.init."""
    import time

    from optbench.grid.executors import check_reachable

    for address in (f"127.0.0.1:{_closed_port()}", f"ray://127.0.0.1:{_closed_port()}"):
        began = time.monotonic()
        with pytest.raises(OptbenchError, match=f"cannot reach the Ray cluster at {address}: "):
            check_reachable(address)
        assert time.monotonic() - began < 6


def test_a_listening_address_auto_and_none_pass_the_check():
    import socket

    from optbench.grid.executors import check_reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}")
        check_reachable(f"ray://127.0.0.1:{port}")
    check_reachable(None)
    check_reachable("auto")
