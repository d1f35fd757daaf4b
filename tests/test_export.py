"""``bench export`` (optbench/export): CSV read back with pandas, TensorBoard read back with tensorboard's own
event reader, MLflow read back with its client; destinations that are not ours are never written."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import optbench
from optbench.export import MARKER, export, run_labels

GRID = {"optimizer": ["sgd", "adam"], "lr": [0.05, 0.5], "steps": 8}  # sgd at 0.5 diverges on 4x^2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "grid"
    optbench.run_grid(GRID, out=out, workers=1)
    return out


def _one_line_exit_2(result, needle: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and needle in message, message


def test_csv_holds_the_runs_and_traces_optbench_load_reads(cli, folder):
    result = cli("export", folder, "--to", "csv")
    assert result.exit_code == 0, (result.output, result.exception)
    dest = folder / "csv"
    tables = optbench.load(folder)
    runs = pd.read_csv(dest / "runs.csv")
    assert runs["run_id"].tolist() == tables.runs["run_id"].tolist()
    assert runs["status"].tolist() == tables.runs["status"].tolist()
    traces = pd.read_csv(dest / "traces.csv")
    assert len(traces) == len(tables.traces)
    np.testing.assert_array_equal(
        traces["loss"].to_numpy(), tables.traces["loss"].to_numpy()
    )  # repr round trip
    marker = json.loads((dest / MARKER).read_text())
    assert marker["format"] == "csv" and marker["files"] == ["runs.csv", "traces.csv"]


def test_tensorboard_has_one_run_per_cell_with_its_trace_and_config_as_hparams(folder):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    dest = export(folder, "tensorboard")
    tables = optbench.load(folder)
    labels = run_labels(tables.runs)
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == sorted(labels.values())
    assert set(labels.values()) == {"optimizer=adam,lr=0.05", "optimizer=adam,lr=0.5", "optimizer=sgd,lr=0.05", "optimizer=sgd,lr=0.5"}  # fmt: skip
    for row in tables.runs.itertuples():
        events = EventAccumulator(str(dest / labels[row.run_id]))
        events.Reload()
        trace = tables.traces[tables.traces["run_id"] == row.run_id].sort_values("step")
        finite = trace[np.isfinite(trace["loss"])]
        scalars = events.Scalars("loss")
        assert [e.step for e in scalars] == finite["step"].tolist()
        assert [e.value for e in scalars] == finite["loss"].astype(
            np.float32
        ).tolist()  # TensorBoard keeps float32
        assert [e.value for e in events.Scalars("lr")] == trace["lr"].astype(np.float32).tolist()
        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = start.session_start_info.hparams
        assert hparams["optimizer"].string_value == row.optimizer and hparams["lr"].number_value == row.lr
        assert hparams["status"].string_value == row.status and hparams["problem"].string_value == "quadratic"
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        domains = {h.name: [v.string_value or v.number_value for v in h.domain_discrete.values] for h in experiment.hparam_infos}  # fmt: skip
        assert domains["optimizer"] == ["adam", "sgd"] and domains["lr"] == [0.05, 0.5]
        final = events.Scalars("hparam/final_loss")[0].value
        assert final == np.float32(row.final_loss) or (math.isnan(final) and row.final_loss is None)
    assert set(tables.runs["status"]) == {"ok", "diverged"}


def test_an_export_never_writes_into_a_folder_that_is_not_its_own(cli, folder, tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "important.txt").write_text("mine")
    _one_line_exit_2(cli("export", folder, "--to", "csv", "--out", foreign), "holds no optbench export")
    assert [p.name for p in foreign.iterdir()] == ["important.txt"]
    export(folder, "csv", tmp_path / "csv-out")
    _one_line_exit_2(cli("export", folder, "--to", "tensorboard", "--out", tmp_path / "csv-out"), "holds an optbench csv export")  # fmt: skip
    (tmp_path / "csv-out" / "mine.txt").write_text("added by hand")
    (tmp_path / "csv-out" / "runs.csv").write_text("stale")
    export(folder, "csv", tmp_path / "csv-out")  # again: our files replaced, the user's left alone
    assert (tmp_path / "csv-out" / "mine.txt").read_text() == "added by hand"
    assert pd.read_csv(tmp_path / "csv-out" / "runs.csv").shape[0] == 4
    _one_line_exit_2(cli("export", tmp_path / "missing", "--to", "csv"), "does not exist")
    _one_line_exit_2(cli("export", folder, "--to", "parquet"), "unknown export format 'parquet'")


def test_a_missing_extra_is_one_line_naming_it(cli, folder, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    _one_line_exit_2(
        cli("export", folder, "--to", "mlflow"), "--to mlflow needs mlflow: pip install 'optbench[mlflow]'"
    )
    assert not (folder / "mlflow").exists()


@pytest.mark.slow
def test_mlflow_has_one_run_per_cell_in_a_local_store(folder, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from optbench.export.to_mlflow import store_uri

    dest = export(folder, "mlflow", tmp_path / "mlflow")
    client = MlflowClient(tracking_uri=store_uri(dest))
    (experiment,) = [e for e in client.search_experiments() if e.name == "grid"]
    found = {r.data.tags["run_id"]: r for r in client.search_runs([experiment.experiment_id])}
    tables = optbench.load(folder)
    assert set(found) == set(tables.runs["run_id"])
    for row in tables.runs.itertuples():
        mlflow_run = found[row.run_id]
        assert (
            mlflow_run.data.params["optimizer"] == row.optimizer
            and float(mlflow_run.data.params["lr"]) == row.lr
        )
        assert mlflow_run.data.tags["status"] == row.status and mlflow_run.info.status == "FINISHED"
        history = client.get_metric_history(mlflow_run.info.run_id, "loss")
        trace = tables.traces[tables.traces["run_id"] == row.run_id].sort_values("step")
        finite = trace[np.isfinite(trace["loss"])]
        assert sorted((m.step, m.value) for m in history) == list(
            zip(finite["step"], finite["loss"], strict=True)
        )
    again = export(folder, "mlflow", tmp_path / "mlflow")  # replaces its own store: still one run per cell
    client = MlflowClient(tracking_uri=store_uri(again))
    assert len(client.search_runs([client.search_experiments()[0].experiment_id])) == 4
