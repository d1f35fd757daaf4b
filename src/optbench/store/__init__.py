"""Storing results: atomic Parquet files, per-batch commit records, the manifest, one grid per folder.

``from optbench import store`` gives the whole public surface; each fact has its home in one module:
``layout`` (file names), ``files`` (atomic writes), ``manifest``, ``runs`` (commit, resume, read back),
``lock`` (one writer per folder).
"""

from optbench.store.files import table_from_rows, write_parquet_atomic, write_text_atomic
from optbench.store.layout import COMMITS_DIR, MANIFEST_FILE, RUNS_FILE, TRACES_DIR
from optbench.store.manifest import (
    default_out,
    environment,
    finish_manifest,
    read_manifest,
    require_folder,
    start_manifest,
)
from optbench.store.runs import (
    PURGE_MARKER,
    TRACE_DICTIONARY_COLUMNS,
    commit_run,
    commit_runs,
    completed_run_ids,
    consolidate_runs,
    drop_uncommitted,
    purge_runs,
    read_runs,
    read_traces,
)

__all__ = [
    "COMMITS_DIR",
    "MANIFEST_FILE",
    "PURGE_MARKER",
    "RUNS_FILE",
    "TRACES_DIR",
    "TRACE_DICTIONARY_COLUMNS",
    "commit_run",
    "commit_runs",
    "completed_run_ids",
    "consolidate_runs",
    "default_out",
    "drop_uncommitted",
    "environment",
    "finish_manifest",
    "purge_runs",
    "read_manifest",
    "read_runs",
    "read_traces",
    "require_folder",
    "start_manifest",
    "table_from_rows",
    "write_parquet_atomic",
    "write_text_atomic",
]
