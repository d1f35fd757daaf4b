"""``bench export --to mlflow``: one MLflow run per cell in a local SQLite store (see ``optbench.export``).

Params: the config columns (MLflow keeps params as strings; a null is left out). Tags: ``run_id``, the
summary's ``status``, ``engine``, ``exactness``, ``reason`` and ``optbench.label``. Metrics: the trace
columns over the steps (a step without a value left out) and the summary numbers (``final_loss``, ...) at
the last step. A run that ended ``ok`` or ``diverged`` is FINISHED; ``invalid`` and ``failed`` are FAILED.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

from optbench.export import run_labels
from optbench.export.to_tensorboard import METRICS, SCALARS, _plain

DATABASE = "mlflow.db"
UPDATED_IN_PLACE = (DATABASE,)  # MLflow caches its store per URI: the database is reused, not removed
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def store_uri(dest: Path) -> str:
    return f"sqlite:///{(dest / DATABASE).resolve()}"


def write(tables, dest: Path) -> list[Path]:
    import mlflow.tracking  # noqa: F401 - configures mlflow's loggers, which _quiet_logs then turns down

    with _quiet_logs("mlflow", "alembic"):  # the store's schema set-up logs a line per migration
        return _write(tables, dest)


@contextlib.contextmanager
def _quiet_logs(*names: str):
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _write(tables, dest: Path) -> list[Path]:
    from mlflow.tracking import MlflowClient

    from optbench.spec import CONFIG_FIELDS

    client = MlflowClient(tracking_uri=store_uri(dest))
    name = tables.folder.resolve().name if tables.folder is not None else "optbench"
    experiment = _fresh_experiment(client, name)
    labels = run_labels(tables.runs)
    traces = tables.traces
    by_run = dict(tuple(traces.groupby("run_id", sort=False))) if len(traces) else {}
    stamp = int(time.time() * 1000)
    for row in tables.runs.to_dict("records"):
        tags = {"run_id": row["run_id"], "optbench.label": labels[row["run_id"]]}
        tags.update(
            {
                k: str(_plain(row[k]))
                for k in ("status", "engine", "exactness", "reason")
                if _plain(row.get(k))
            }
        )
        run = client.create_run(experiment, run_name=labels[row["run_id"]], tags=tags)
        params = {c: _plain(row[c]) for c in CONFIG_FIELDS if c in row}
        _log(client, run.info.run_id, by_run.get(row["run_id"]), row, params, stamp)
        client.set_terminated(
            run.info.run_id, "FINISHED" if row["status"] in ("ok", "diverged") else "FAILED"
        )
    return [dest / DATABASE]


def _fresh_experiment(client, name: str) -> str:
    """The experiment ``name`` (made if new) without the runs an earlier export logged in it."""
    from mlflow.entities import ViewType

    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name)
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    for run in client.search_runs(
        [found.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=50000
    ):
        client.delete_run(run.info.run_id)
    return found.experiment_id


def _log(client, run_id: str, trace, row: dict, params: dict, stamp: int) -> None:
    from mlflow.entities import Metric, Param

    metrics, last = [], 0
    if trace is not None and not trace.empty:
        steps = trace["step"].tolist()
        last = int(steps[-1])
        for column in SCALARS:
            for step, value in zip(steps, trace[column].tolist(), strict=True):
                if value is not None and math.isfinite(value):
                    metrics.append(Metric(column, float(value), stamp, int(step)))
    for name in METRICS:
        value = _plain(row.get(name))
        if value is not None and math.isfinite(value):
            metrics.append(Metric(name, float(value), stamp, last))
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items() if v is not None])
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + BATCH])
