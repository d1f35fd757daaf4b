"""Storing results: atomic Parquet files, commit records that describe their trace files, the manifest,
which folders a command may write into, one writer per folder.

``from optbench import store`` gives the whole public surface; each fact has its home in one module:
``layout`` (file names), ``files`` (atomic writes), ``manifest``, ``folder`` (which folder a command may
write into, holding it), ``commit`` (a batch of runs: trace file, then commit record), ``check`` (``scan``:
what is committed, what is damaged), ``repair`` (set damage aside, resume, purge), ``read`` (read it
back), ``verify`` (``bench verify``), ``lock`` (one writer per folder).
"""

from optbench.store.check import Scan, scan, warn
from optbench.store.commit import TRACE_DICTIONARY_COLUMNS, commit_run, commit_runs
from optbench.store.files import FileFacts, table_from_rows, write_parquet_atomic, write_text_atomic
from optbench.store.folder import check_out, folder_kind, require_folder, results_folder
from optbench.store.layout import COMMITS_DIR, DAMAGED_DIR, MANIFEST_FILE, RUNS_FILE, TRACES_DIR
from optbench.store.manifest import (
    default_out,
    environment,
    finish_manifest,
    read_manifest,
    start_manifest,
)
from optbench.store.read import config_of, consolidate_runs, read_runs, read_traces
from optbench.store.repair import (
    completed_run_ids,
    drop_uncommitted,
    prepare,
    purge_runs,
    repair_line,
    set_aside,
)

__all__ = [
    "COMMITS_DIR",
    "DAMAGED_DIR",
    "MANIFEST_FILE",
    "RUNS_FILE",
    "TRACES_DIR",
    "TRACE_DICTIONARY_COLUMNS",
    "FileFacts",
    "Scan",
    "check_out",
    "commit_run",
    "commit_runs",
    "completed_run_ids",
    "config_of",
    "consolidate_runs",
    "default_out",
    "drop_uncommitted",
    "environment",
    "finish_manifest",
    "folder_kind",
    "prepare",
    "purge_runs",
    "read_manifest",
    "read_runs",
    "read_traces",
    "repair_line",
    "require_folder",
    "results_folder",
    "scan",
    "set_aside",
    "start_manifest",
    "table_from_rows",
    "warn",
    "write_parquet_atomic",
    "write_text_atomic",
]
