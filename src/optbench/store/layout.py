"""The layout of a results folder DIR: one home for its file names.

    DIR/runs.parquet             one row per run (config + summary), rewritten atomically after each batch
    DIR/traces/<name>.parquet    the traces of one batch of runs (a Parquet dataset:
                                 pandas.read_parquet(DIR/"traces"))
    DIR/_runs/<name>.parquet     the commit record of the same batch: its runs' rows, and in its Parquet
                                 metadata what its trace file holds (rows, bytes, sha256); resume reads these
    DIR/_damaged/                files found damaged, moved aside (never deleted) before their runs re-run
    DIR/manifest.json            command line, versions, device, start/end time, the command's kind

A batch of runs (or a single run, named by its run id) is written as one trace file and one commit
record of the same name; the commit record is written last, so it is what resume trusts. ``<name>`` is a
run id (16 hex digits) or ``batch-`` and 16 hex digits: a file in ``traces/`` or ``_runs/`` with another
name was not written by optbench, and optbench never deletes or rewrites it.
"""

import re

RUNS_FILE = "runs.parquet"
TRACES_DIR = "traces"
COMMITS_DIR = "_runs"
DAMAGED_DIR = "_damaged"
MANIFEST_FILE = "manifest.json"

RUN_FILE_NAME = re.compile(r"^(batch-)?[0-9a-f]{16}\.parquet$")  # a trace file or commit record of ours

# Files the other experiments write beside (or instead of) runs.parquet.
SCHEDULES_FILE = "schedules.parquet"  # bench schedules: scheduler, step, lr
LAYERS_FILE = "layers.parquet"  # bench init-report: std per layer, init and activation
GAINS_FILE = "gains.parquet"  # bench init-report: calculate_gain against the measured gain
AMP_FILE = "amp.parquet"  # bench amp: step time per width and precision
