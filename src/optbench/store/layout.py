"""The layout of a results folder DIR: one home for its file names.

    DIR/runs.parquet             one row per run (config + summary), rewritten atomically after each batch
    DIR/traces/<name>.parquet    the traces of one batch of runs (a Parquet dataset:
                                 pandas.read_parquet(DIR/"traces"))
    DIR/_runs/<name>.parquet     the commit record of the same batch: its runs' rows; resume reads these
    DIR/manifest.json            command line, versions, device, start/end time

A batch of runs (or a single run, named by its run id) is written as one trace file and one commit
record of the same name; the commit record is written last, so it is what resume trusts.
"""

RUNS_FILE = "runs.parquet"
TRACES_DIR = "traces"
COMMITS_DIR = "_runs"
MANIFEST_FILE = "manifest.json"

# Files the other experiments write beside (or instead of) runs.parquet.
SCHEDULES_FILE = "schedules.parquet"  # bench schedules: scheduler, step, lr
LAYERS_FILE = "layers.parquet"  # bench init-report: std per layer, init and activation
GAINS_FILE = "gains.parquet"  # bench init-report: calculate_gain against the measured gain
AMP_FILE = "amp.parquet"  # bench amp: step time per width and precision
