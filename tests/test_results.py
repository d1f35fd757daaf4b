"""Results as DataFrames: ``optbench.load(DIR)`` and ``optbench.run_grid(..., out=None)`` (store/results.py,
grid/memory.py) give the same tables, and a grid in memory writes nothing anywhere."""

from __future__ import annotations

import tempfile

import pandas as pd
import pytest

import optbench
from optbench.errors import OptbenchError

GRID = {"problem": ["quadratic", "mlp-classification(width=8, n_train=64, n_val=32)"], "optimizer": ["sgd", "adam"],
        "lr": [0.01, 0.3], "steps": 12}  # fmt: skip


def test_a_grid_in_memory_writes_nothing_and_equals_the_folder_read_back(tmp_path, monkeypatch):
    import torch

    # Building any torch.optim optimizer imports torch._dynamo, which makes torch's own (empty) inductor
    # cache folder in the temp dir once per process: done before the temp dir is watched.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR again
    events = []
    memory = optbench.run_grid(GRID, out=None, progress=lambda state: events.append(state.done))
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    assert events == list(range(9)) and len(memory.runs) == 8 and memory.folder is None
    assert set(memory.runs["engine"]) == {"batched"}  # the same plan as a grid into a folder

    folder = tmp_path / "g"
    written = optbench.run_grid(GRID, out=folder, workers=1)
    loaded = optbench.load(folder)
    assert loaded.folder == folder and loaded.manifest["experiment"] == "grid"
    assert written["run_id"].tolist() == memory.runs["run_id"].tolist() == loaded.runs["run_id"].tolist()
    columns = [c for c in memory.runs if c != "wall_time_s"]
    pd.testing.assert_frame_equal(memory.runs[columns], loaded.runs[columns])
    by_row = ["run_id", "step"]
    pd.testing.assert_frame_equal(
        memory.traces.sort_values(by_row).reset_index(drop=True),
        loaded.traces.sort_values(by_row).reset_index(drop=True),
    )


def test_joined_pairs_each_trace_row_with_its_run():
    tables = optbench.run_grid({"optimizer": ["sgd"], "lr": [0.01, 0.1], "steps": 5}, out=None)
    joined = tables.joined()
    assert len(joined) == len(tables.traces) == 10
    assert {"lr", "lr_config", "loss", "loss_config", "optimizer", "status"} <= set(joined)
    first = joined[joined["step"] == 0].set_index("lr_config")
    assert first["lr"].tolist() == [0.01, 0.1] and set(first["loss_config"]) == {"none"}
    assert (joined["final_loss"] > 0).all()


def test_a_grid_in_memory_uses_this_process_only():
    with pytest.raises(OptbenchError, match="give out=FOLDER to use workers or Ray"):
        optbench.run_grid({"steps": 3}, out=None, workers=2)


def test_load_refuses_what_is_not_a_results_folder_in_one_line(tmp_path):
    with pytest.raises(OptbenchError, match="does not exist"):
        optbench.load(tmp_path / "missing")
    with pytest.raises(OptbenchError, match="no runs.parquet"):
        optbench.load(tmp_path)
