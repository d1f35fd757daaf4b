"""Run results in a results folder: commit a batch of runs (trace file, then commit record), find what is
committed, purge or drop what must be re-run, consolidate runs.parquet, read it all back."""

from __future__ import annotations

from pathlib import Path

from optbench.store.files import table_from_rows, write_parquet_atomic
from optbench.store.layout import COMMITS_DIR, RUNS_FILE, TRACES_DIR

# Trace columns whose values repeat (the run id on every row; lr, validation and scaler values that change
# rarely). Dictionary-encoding the per-step floats as well triples the write time of a large batch and
# makes the file bigger, as their values rarely repeat.
TRACE_DICTIONARY_COLUMNS = ("run_id", "lr", "val_loss", "val_acc", "loss_scale", "skipped_step")


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
    write_parquet_atomic(
        _traces_table(results, traces_schema()),
        out / TRACES_DIR / f"{name}.parquet",
        dictionary_columns=list(TRACE_DICTIONARY_COLUMNS),
    )
    rows = table_from_rows([r.summary_row() for r in results], runs_schema())
    write_parquet_atomic(rows, out / COMMITS_DIR / f"{name}.parquet")


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


def _parquet_files(folder: Path) -> list[Path]:
    return (
        sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.exists() else []
    )


def completed_run_ids(out: Path) -> set[str]:
    """Runs whose commit record exists (both their files were renamed into place)."""
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for path in _parquet_files(Path(out) / COMMITS_DIR):
        if path.stem.startswith("batch-"):
            ids.update(pq.read_table(path, columns=["run_id"]).column("run_id").to_pylist())
        else:  # one run per file, named by its run id
            ids.add(path.stem)
    return ids


# Present while purge_runs rewrites files: if a process dies meanwhile, drop_uncommitted finishes the job.
PURGE_MARKER = "_purge-in-progress"


def purge_runs(out: Path, run_ids: set[str]) -> None:
    """Remove these runs' rows from every commit record, then from every trace file (``--force``).

    Commit records go first: a process killed in between leaves the runs uncommitted, so they re-run, and
    the marker file tells the next ``drop_uncommitted`` to clear their rows from the trace files.
    """
    out = Path(out)
    marker = out / PURGE_MARKER
    marker.touch()
    for folder in (COMMITS_DIR, TRACES_DIR):
        _drop_rows(out / folder, run_ids, drop_listed=True)
    marker.unlink()


def drop_uncommitted(out: Path) -> None:
    """Clear what a process killed between two writes left, so that a re-run duplicates no trace rows:
    trace files whose commit record (the same file name in ``_runs/``) never landed, and, after an
    interrupted ``purge_runs``, trace rows of runs that no commit record holds."""
    out = Path(out)
    committed = {path.name for path in _parquet_files(out / COMMITS_DIR)}
    for path in _parquet_files(out / TRACES_DIR):
        if path.name not in committed:
            path.unlink()
    marker = out / PURGE_MARKER
    if marker.exists():
        _drop_rows(out / TRACES_DIR, completed_run_ids(out), drop_listed=False)
        marker.unlink()


def _drop_rows(folder: Path, run_ids: set[str], *, drop_listed: bool) -> None:
    """Rewrite each Parquet file in ``folder`` without the rows whose run_id is (``drop_listed``) or is
    not in ``run_ids``; a file left empty is removed."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    value_set = pa.array(sorted(run_ids), pa.string())
    for path in _parquet_files(folder):
        table = pq.read_table(path)
        listed = pc.is_in(table.column("run_id"), value_set=value_set)
        dropped = listed if drop_listed else pc.invert(listed)
        if not pc.any(dropped).as_py():
            continue
        kept = table.filter(pc.invert(dropped))
        if kept.num_rows:
            traces = folder.name == TRACES_DIR
            write_parquet_atomic(
                kept, path, dictionary_columns=list(TRACE_DICTIONARY_COLUMNS) if traces else None
            )
        else:
            path.unlink()


def consolidate_runs(out: Path, order: list[str] | None = None):
    """Rewrite DIR/runs.parquet from the commit records (atomic); rows follow ``order`` where given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optbench.spec import runs_schema

    out = Path(out)
    files = _parquet_files(out / COMMITS_DIR)
    tables = [pq.read_table(p, schema=runs_schema()) for p in files]
    table = pa.concat_tables(tables) if tables else runs_schema().empty_table()
    if order is not None:
        rank = {run_id: i for i, run_id in enumerate(order)}
        ids = table.column("run_id").to_pylist()
        table = table.take(sorted(range(len(ids)), key=lambda i: (rank.get(ids[i], len(rank)), ids[i])))
    write_parquet_atomic(table, out / RUNS_FILE)
    return table


def read_runs(out: Path):
    """runs.parquet as a DataFrame."""
    import pandas as pd

    return pd.read_parquet(Path(out) / RUNS_FILE)


def read_traces(out: Path, run_ids: list[str] | None = None):
    """All traces of a results folder as one DataFrame (optionally only some runs)."""
    import pyarrow.dataset as ds

    from optbench.spec import traces_schema

    dataset = ds.dataset(Path(out) / TRACES_DIR, format="parquet", schema=traces_schema())
    filter_ = ds.field("run_id").isin(run_ids) if run_ids is not None else None
    return dataset.to_table(filter=filter_).to_pandas()
