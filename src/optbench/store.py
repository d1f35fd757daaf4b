"""Writing and reading results folders: atomic Parquet files, the per-run commit records, the manifest.

Layout of a results folder DIR::

    DIR/runs.parquet          one row per run (config + summary), rewritten atomically after each batch
    DIR/traces/<run_id>.parquet  one file per run (a Parquet dataset: pandas.read_parquet(DIR/"traces"))
    DIR/_runs/<run_id>.parquet   the commit record of each finished run; resume reads these
    DIR/manifest.json         command line, versions, device, start/end time

Every file is written to a dot-prefixed temp name in its final folder, validated, then renamed: a process
killed half way leaves only dot files, which pyarrow's dataset discovery ignores.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any

RUNS_FILE = "runs.parquet"
TRACES_DIR = "traces"
COMMITS_DIR = "_runs"
MANIFEST_FILE = "manifest.json"


def write_parquet_atomic(table, path: Path, dictionary_columns: list[str] | None = None) -> None:
    """Write ``table`` to ``path`` via temp file + rename; the temp file is read back before the rename.

    ``dictionary_columns``: dictionary-encode only these (default: every column, pyarrow's default).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, use_dictionary=True if dictionary_columns is None else dictionary_columns)
        if pq.read_metadata(tmp).num_rows != table.num_rows:  # validate before it becomes visible
            raise OSError(f"short write of {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def table_from_rows(rows: list[dict[str, Any]], schema):
    """Build a pyarrow Table with an explicit schema (missing keys become nulls)."""
    import pyarrow as pa

    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


# ------------------------------------------------------------------------------------------------ manifest


def environment() -> dict[str, Any]:
    """Versions and device names: the evidence a result carries."""
    import torch

    from optbench import __version__

    env = {
        "optbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def require_folder(out: Path) -> None:
    """A results folder may not exist yet, but it must not be a file (a one-line error, not a traceback)."""
    from optbench.errors import OptbenchError

    if Path(out).exists() and not Path(out).is_dir():
        raise OptbenchError(f"--out {out} is a file, not a folder")


def start_manifest(out: Path, command: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the manifest at the start of a command (ended_at filled by ``finish_manifest``)."""
    require_folder(out)
    # The bench command line when run from the CLI; None from the Python API (argv is the host script's).
    from_cli = Path(sys.argv[0]).name in ("bench", "__main__.py")
    manifest = {
        "command": command,
        "command_line": shlex.join(["bench", *sys.argv[1:]]) if from_cli else None,
        "argv": sys.argv,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ended_at": None,
        **environment(),
        **(extra or {}),
    }
    write_text_atomic(json.dumps(manifest, indent=2, default=str), Path(out) / MANIFEST_FILE)
    return manifest


def finish_manifest(out: Path, manifest: dict[str, Any], **extra: Any) -> None:
    manifest = {**manifest, **extra, "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_text_atomic(json.dumps(manifest, indent=2, default=str), Path(out) / MANIFEST_FILE)


def read_manifest(out: Path) -> dict[str, Any]:
    path = Path(out) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def default_out(kind: str, root: str | Path = "results") -> Path:
    """A new folder under ``results/`` named after the command and the time, e.g. lr-sweep-20261122-101500."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(root) / f"{kind}-{stamp}"
    n = 1
    while out.exists():
        n += 1
        out = Path(root) / f"{kind}-{stamp}-{n}"
    return out


# ----------------------------------------------------------------------------------------- run results


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
