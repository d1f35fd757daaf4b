"""Commit a batch of finished runs: its trace file first, then its commit record (what resume trusts).

A commit record is the batch's rows of runs.parquet; its Parquet key-value metadata ``TRACE_FACTS`` says
what its trace file holds (rows, bytes, sha256, smallest and largest run id), so that ``store.scan`` can
tell a damaged or swapped trace file from the one that was written.
"""

from __future__ import annotations

import json
from pathlib import Path

from optbench.store.files import FileFacts, table_from_rows, write_parquet_atomic
from optbench.store.layout import COMMITS_DIR, TRACES_DIR

# Trace columns whose values repeat (the run id on every row; lr, validation and scaler values that change
# rarely). Dictionary-encoding the per-step floats as well triples the write time of a large batch and
# makes the file bigger, as their values rarely repeat.
TRACE_DICTIONARY_COLUMNS = ("run_id", "lr", "val_loss", "val_acc", "loss_scale", "skipped_step")
TRACE_FACTS = b"optbench.trace"  # key of the trace file's facts in a commit record's Parquet metadata


def commit_run(out: Path, result) -> None:
    """Persist one finished run: its trace file first, then its commit record (what resume trusts)."""
    commit_runs(out, [result], name=result.run_id)


def commit_runs(out: Path, results: list, name: str | None = None) -> None:
    """Persist finished runs as one unit: one trace file, then one commit record holding all their rows.

    A batch of a thousand tiny runs thus costs two file writes, not two thousand. The file name is a hash
    of the batch's run ids, so re-running the same batch replaces its files instead of duplicating rows.
    """
    import hashlib

    from optbench.spec import runs_schema, traces_schema

    out = Path(out)
    if name is None:
        ids = ",".join(sorted(r.run_id for r in results))
        name = "batch-" + hashlib.sha256(ids.encode()).hexdigest()[:16]
    facts = write_trace(out / TRACES_DIR / f"{name}.parquet", _traces_table(results, traces_schema()))
    rows = table_from_rows([r.summary_row() for r in results], runs_schema())
    write_record(out / COMMITS_DIR / f"{name}.parquet", rows, facts)


def write_trace(path: Path, table) -> FileFacts:
    return write_parquet_atomic(table, path, dictionary_columns=list(TRACE_DICTIONARY_COLUMNS))


def write_record(path: Path, rows, facts: FileFacts) -> None:
    metadata = {**(rows.schema.metadata or {}), TRACE_FACTS: json.dumps(facts.__dict__).encode()}
    write_parquet_atomic(rows.replace_schema_metadata(metadata), path)


def _traces_table(results: list, schema):
    """All the runs' traces as one table: columns concatenated once (a table per run costs ~0.5 ms each)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = [len(r.trace["step"]) for r in results]
    run_of_row = pa.array(
        np.repeat(np.arange(len(results)), lengths)
    )  # a string per row made in C++, not numpy
    columns = {"run_id": pc.take(pa.array([r.run_id for r in results], pa.string()), run_of_row)}
    for name in schema.names[1:]:
        values = np.concatenate([np.asarray(r.trace[name]) for r in results]) if results else np.empty(0)
        if pa.types.is_floating(schema.field(name).type):  # NaN (not measured, or a non-finite loss) -> null
            values = values.astype(np.float64, copy=False)
            columns[name] = pa.array(values, schema.field(name).type, mask=np.isnan(values))
        else:
            columns[name] = pa.array(values, schema.field(name).type)
    return pa.Table.from_pydict(columns, schema=schema)


# -------------------------------------------------------------------------------------------------- scan
