"""``bench export --to tensorboard``: one TensorBoard run per cell (see ``optbench.export``).

Scalars: every trace column a run measured (``loss``, ``lr``, ``grad_norm``, ``update_norm``,
``param_norm``, ``val_loss``, ``val_acc``, ``x0``/``x1``, ``loss_scale``) at its steps; a step without a
value (not measured, a non-finite loss) is left out. HParams: the config columns and the status, each
with the values the folder's runs take as its domain; metrics ``final_loss``, ``best_loss``,
``final_val_loss``, ``final_val_acc`` (NaN where a run has none), written as scalars at the last step.
"""

from __future__ import annotations

import math
from pathlib import Path

from optbench.export import run_labels

SCALARS = (
    "loss",
    "lr",
    "grad_norm",
    "update_norm",
    "param_norm",
    "val_loss",
    "val_acc",
    "x0",
    "x1",
    "loss_scale",
)
METRICS = ("final_loss", "best_loss", "final_val_loss", "final_val_acc")


def write(tables, dest: Path) -> list[Path]:
    from torch.utils.tensorboard import SummaryWriter

    runs, traces = tables.runs, tables.traces
    hparam_columns = [c for c in _config_columns() if c in runs] + ["status"]
    domains = _domains(runs, hparam_columns)
    labels = run_labels(runs)
    by_run = dict(tuple(traces.groupby("run_id", sort=False))) if len(traces) else {}
    for row in runs.to_dict("records"):
        trace = by_run.get(row["run_id"])
        with SummaryWriter(log_dir=str(dest / labels[row["run_id"]])) as writer:
            last = _scalars(writer, trace)
            _hparams(writer, row, hparam_columns, domains, last)
    return [p for p in dest.rglob("*") if p.is_file() and p.name.startswith("events.out.tfevents")]


def _config_columns() -> tuple[str, ...]:
    from optbench.spec import CONFIG_FIELDS

    return CONFIG_FIELDS


def _scalars(writer, trace) -> int:
    """Write the trace's columns as scalars; return its last step (0 without a trace)."""
    if trace is None or trace.empty:
        return 0
    steps = trace["step"].tolist()
    for column in SCALARS:
        if column not in trace:
            continue
        for step, value in zip(steps, trace[column].tolist(), strict=True):
            if value is not None and math.isfinite(value):
                writer.add_scalar(column, value, int(step))
    return int(steps[-1])


def _plain(value):
    """A value the hparams plugin takes: Python int/float/str/bool, None for a null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _domains(runs, columns: list[str]) -> dict[str, list]:
    domains = {}
    for column in columns:
        values = sorted({v for v in map(_plain, runs[column].tolist()) if v is not None}, key=str)
        if values and (
            all(isinstance(v, str) for v in values) or all(type(v) in (int, float) for v in values)
        ):
            domains[column] = values
    return domains


def _hparams(writer, row: dict, columns: list[str], domains: dict, step: int) -> None:
    from torch.utils.tensorboard.summary import hparams

    values = {c: _plain(row[c]) for c in columns}
    metrics = {f"hparam/{m}": _metric(row.get(m)) for m in METRICS}
    experiment, start, end = hparams(values, metrics, hparam_domain_discrete=domains)
    for summary in (experiment, start, end):
        writer.file_writer.add_summary(summary)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, step)


def _metric(value) -> float:
    value = _plain(value)
    return float("nan") if value is None else float(value)
