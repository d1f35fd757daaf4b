"""Results folders: atomic Parquet writes with explicit schemas, commit records, read-back, the manifest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optbench import store
from optbench.engine.reference import run
from optbench.spec import RunConfig, runs_schema, traces_schema


@pytest.fixture(scope="module")
def results():
    """Three finished runs: ok, diverged, invalid."""
    return [
        run(RunConfig(problem="quadratic", lr=0.1, steps=6)),
        run(RunConfig(problem="quadratic", lr=0.5, steps=20)),
        run(RunConfig(problem="quadratic", optimizer="sparseadam", steps=6)),
    ]


def _dot_files(folder):
    return [p for p in folder.rglob(".*")]


def test_rows_match_the_explicit_schemas(results):
    for result in results:
        assert list(result.summary_row()) == runs_schema().names
        assert list(result.trace_rows()) == traces_schema().names


def test_commit_consolidate_and_read_back(tmp_path, results):
    for result in reversed(results):
        store.commit_run(tmp_path, result)
    order = [r.run_id for r in results]
    assert store.completed_run_ids(tmp_path) == set(order)
    store.consolidate_runs(tmp_path, order=order)

    assert pq.read_schema(tmp_path / "runs.parquet").equals(runs_schema())
    runs = store.read_runs(tmp_path)
    assert runs["run_id"].tolist() == order  # rows follow the given order
    assert runs["status"].tolist() == ["ok", "diverged", "invalid"]
    assert runs.loc[1, "diverged_step"] == 7 and runs.loc[0, "steps"] == 6
    assert pd.isna(runs.loc[0, "momentum"]) and pd.isna(runs.loc[0, "batch_size"])
    assert "sparse" in runs.loc[2, "reason"]

    for result in results:
        path = tmp_path / "traces" / f"{result.run_id}.parquet"
        assert pq.read_schema(path).equals(traces_schema())
    traces = store.read_traces(tmp_path)
    assert len(traces) == 6 + 8 + 0
    first = traces[traces["run_id"] == order[0]].sort_values("step")
    assert first["loss"].tolist() == pytest.approx(results[0].trace["loss"].tolist())
    assert first["step"].tolist() == list(range(6))
    only = store.read_traces(tmp_path, run_ids=[order[1]])
    assert set(only["run_id"]) == {order[1]} and len(only) == 8
    # the README's one-liners: pandas reads the traces folder as one data set
    assert len(pd.read_parquet(tmp_path / "traces")) == 14
    assert _dot_files(tmp_path) == []


def test_a_batch_commit_reads_back_row_for_row(tmp_path, results):
    """One trace file for many runs: every row keeps its run id and its values (NaN stays missing)."""
    store.commit_runs(tmp_path, results)
    (trace_file,) = (tmp_path / "traces").glob("batch-*.parquet")
    assert pq.read_schema(trace_file).equals(traces_schema())
    traces = store.read_traces(tmp_path)
    for result in results:
        rows = traces[traces["run_id"] == result.run_id].sort_values("step")
        assert rows["step"].tolist() == list(range(len(result.trace["step"])))
        for column in ("loss", "lr", "grad_norm", "x0"):
            assert rows[column].tolist() == pytest.approx(list(result.trace[column]), nan_ok=True)
    table = pq.read_table(trace_file)
    not_measured = sum(int(np.isnan(r.trace["val_loss"]).sum()) for r in results)  # toys: no validation
    assert not_measured and table.column("val_loss").null_count == not_measured  # NaN is stored as null
    assert table.column("loss").null_count == 0
    metadata = pq.ParquetFile(trace_file).metadata.row_group(0)
    encodings = {
        metadata.column(i).path_in_schema: metadata.column(i).encodings for i in range(metadata.num_columns)
    }
    assert "RLE_DICTIONARY" in encodings["run_id"] and "RLE_DICTIONARY" not in encodings["loss"]


def test_duckdb_reads_the_folder_as_the_readme_shows(tmp_path, results):
    duckdb = pytest.importorskip("duckdb")
    for result in results:
        store.commit_run(tmp_path, result)
    store.consolidate_runs(tmp_path, order=[r.run_id for r in results])
    (tmp_path / "traces" / ".half-written.parquet.1234.tmp").write_bytes(b"PAR1 garbage")  # a killed write
    per_lr = duckdb.sql(
        f"select lr, max(loss), count(*) from '{tmp_path}/traces/*.parquet' group by lr order by lr"
    ).fetchall()
    assert per_lr == [(0.1, 16.0, 6), (0.5, results[1].summary.final_loss, 8)]  # the invalid run has no rows
    statuses = duckdb.sql(f"select status, diverged_step from '{tmp_path}/runs.parquet'").fetchall()
    assert statuses == [("ok", None), ("diverged", 7), ("invalid", None)]


def test_a_killed_write_leaves_only_a_dot_file_that_scans_ignore(tmp_path, results):
    store.commit_run(tmp_path, results[0])
    (tmp_path / "traces" / ".half-written.parquet.1234.tmp").write_bytes(b"PAR1 garbage")
    (tmp_path / "_runs" / ".half.parquet.5678.tmp").write_bytes(b"garbage")
    assert len(store.read_traces(tmp_path)) == 6
    assert store.completed_run_ids(tmp_path) == {results[0].run_id}
    assert len(store.consolidate_runs(tmp_path)) == 1


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    table = pa.table({"a": [1, 2, 3]})

    def short_write(table, where, **kwargs):  # a disk that drops rows
        original(table.slice(0, 1), where, **kwargs)

    original = pq.write_table
    monkeypatch.setattr(pq, "write_table", short_write)
    with pytest.raises(OSError, match="short write"):
        store.write_parquet_atomic(table, tmp_path / "sub" / "t.parquet")
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_write_replaces_an_existing_file(tmp_path):
    path = tmp_path / "t.parquet"
    store.write_parquet_atomic(pa.table({"a": [1]}), path)
    store.write_parquet_atomic(pa.table({"a": [1, 2]}), path)
    assert pq.read_table(path).num_rows == 2
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_table_from_rows_fills_missing_keys_with_nulls():
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    table = store.table_from_rows([{"a": 1}, {"a": 2, "b": "x", "extra": 0}], schema)
    assert table.schema.equals(schema)
    assert table.to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def test_consolidate_with_no_runs_writes_an_empty_table_with_the_schema(tmp_path):
    table = store.consolidate_runs(tmp_path)
    assert table.num_rows == 0
    assert pq.read_schema(tmp_path / "runs.parquet").equals(runs_schema())


def test_manifest_carries_command_versions_and_times(tmp_path):
    import torch

    manifest = store.start_manifest(tmp_path, "lr-sweep --min 0.1", {"experiment": "lr-sweep"})
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest, default=str))
    assert on_disk["command"] == "lr-sweep --min 0.1" and on_disk["experiment"] == "lr-sweep"
    assert on_disk["torch"] == torch.__version__ and on_disk["ended_at"] is None
    assert {"optbench", "python", "platform", "cpu", "cuda_available", "argv", "started_at"} <= set(on_disk)
    store.finish_manifest(tmp_path, manifest, largest_stable_lr=0.2)
    done = store.read_manifest(tmp_path)
    assert done["ended_at"] is not None and done["largest_stable_lr"] == 0.2
    assert done["started_at"] == on_disk["started_at"]
    assert store.read_manifest(tmp_path / "nowhere") == {}


def test_a_resumed_grid_manifest_keeps_the_whole_grids_time(tmp_path):
    """After a resume the manifest says when the folder's first invocation started and how long all of
    them took, not only the last invocation's time."""
    from optbench.grid import GridSpec, run_grid

    run_grid(GridSpec(lr="0.1", steps=20), out=tmp_path, workers=1)
    first = store.read_manifest(tmp_path)
    assert first["invocations"] == 1 and first["total_elapsed_s"] == first["elapsed_s"] > 0
    run_grid(GridSpec(lr="0.1,0.2", steps=20), out=tmp_path, workers=1)
    second = store.read_manifest(tmp_path)
    assert second["invocations"] == 2 and second["first_started_at"] == first["started_at"]
    assert second["total_elapsed_s"] == pytest.approx(first["total_elapsed_s"] + second["elapsed_s"])


def test_default_out_never_reuses_a_folder(tmp_path):
    first = store.default_out("lr-sweep", root=tmp_path)
    assert first.parent == tmp_path and first.name.startswith("lr-sweep-")
    first.mkdir()
    second = store.default_out("lr-sweep", root=tmp_path)
    assert second != first and not second.exists()


def test_the_cheap_check_is_cached_until_a_file_changes(tmp_path, results, monkeypatch):
    """A grid consolidates every 30 s, a plot reads runs then traces: each record is read once per process,
    and read again as soon as its record or trace file changes (files changed in the last 2 s are not
    cached: a change within one clock tick can keep size and mtime)."""
    import os

    store.commit_runs(tmp_path, results)
    for path in tmp_path.rglob("*.parquet"):
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # long ago
    reads = []
    real = store.check._read_record
    monkeypatch.setattr(store.check, "_read_record", lambda *a: reads.append(a) or real(*a))
    assert store.scan(tmp_path).run_ids == {r.run_id for r in results}
    assert store.scan(tmp_path).run_ids == {r.run_id for r in results}
    assert len(reads) == 1  # the second scan read nothing
    (trace,) = (tmp_path / store.TRACES_DIR).glob("*.parquet")
    trace.write_bytes(trace.read_bytes()[:-10])
    assert [d.reason.split(":")[0] for d in store.scan(tmp_path).damaged] == [f"traces/{trace.name}"]
