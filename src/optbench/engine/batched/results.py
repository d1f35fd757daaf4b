"""A batch's results: the host traces of all its cells, summarized at once, cut into per-cell results lazily.

``engine.summary.summarize`` computes every cell's summary columns from the [C, T] traces in a few numpy
passes. The per-cell ``RunResult`` objects are ``CellResult``s: their ``summary`` and ``trace`` are built
from the batch's arrays when first read (the store reads them all, a caller that wants a few cells pays for
those), each exactly as ``engine.run`` shapes them: float64 columns cut at the cell's end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optbench.engine.batched.loop import HostTraces
from optbench.engine.reference import RunResult
from optbench.engine.summary import SummaryColumns, summarize
from optbench.spec import RunConfig, RunSummary

ENGINE = "batched"


@dataclass
class BatchOutcome:
    """What one batch leaves: its host traces (cell j = column j), lrs, summaries and per-cell notes."""

    traces: HostTraces
    lr: np.ndarray  # [T or 1, C] float64: each cell's first param group's lr per step
    knob: list[str | None]  # per cell
    warnings: list[str | None]  # per cell, already joined
    exactness: str
    wall_time_s: float  # per cell: the batch's wall time divided evenly
    columns: SummaryColumns | None = None

    def __post_init__(self):
        t = self.traces
        self.columns = summarize(
            t.loss.T,
            t.diverged,
            t.steps,
            None if t.val_loss is None else t.val_loss.T,
            None if t.val_acc is None else t.val_acc.T,
        )
        self.ends = np.where(t.diverged >= 0, t.diverged + 1, t.steps).tolist()

    def summary(self, j: int) -> RunSummary:
        return RunSummary(
            **self.columns.row(j),
            momentum_knob=self.knob[j],
            wall_time_s=self.wall_time_s,
            warnings=self.warnings[j],
            engine=ENGINE,
            exactness=self.exactness,
            extras={"step_program": self.traces.step_program},
        )

    def trace(self, j: int) -> dict[str, np.ndarray]:
        """Cell j's trace, column for column as engine.run writes it."""
        t, end = self.traces, self.ends[j]
        nan = np.full(end, np.nan)
        lr = self.lr[:end, j] if self.lr.shape[0] > 1 else np.full(end, self.lr[0, j])
        trace = {
            "step": np.arange(end, dtype=np.int64),
            "lr": np.array(lr, dtype=np.float64),
            "loss": _column(t.loss, j, end),
            "grad_norm": _column(t.grad_norm, j, end),
            "update_norm": _column(t.update_norm, j, end),
            "param_norm": _column(t.param_norm, j, end),
            "x0": nan,
            "x1": nan.copy(),
            "val_loss": _column(t.val_loss, j, end),
            "val_acc": _column(t.val_acc, j, end),
            "loss_scale": np.full(end, np.nan),
            "skipped_step": np.zeros(end, dtype=bool),
        }
        if t.x is not None:
            trace["x0"] = t.x[:end, j, 0].astype(np.float64)
            if t.x.shape[2] > 1:
                trace["x1"] = t.x[:end, j, 1].astype(np.float64)
        return trace


def _column(values: np.ndarray | None, j: int, end: int) -> np.ndarray:
    if values is None:
        return np.full(end, np.nan)
    return values[:end, j].astype(np.float64)


class CellResult(RunResult):
    """A batched cell's ``RunResult``; its summary and trace are built from the batch on first use."""

    def __init__(self, config: RunConfig, outcome: BatchOutcome, j: int):  # not the dataclass __init__
        self.config = config
        self._outcome, self._j = outcome, j
        self._summary: RunSummary | None = None
        self._trace: dict | None = None

    @property
    def summary(self) -> RunSummary:
        if self._summary is None:
            self._summary = self._outcome.summary(self._j)
        return self._summary

    @summary.setter
    def summary(self, value: RunSummary) -> None:
        self._summary = value

    @property
    def trace(self) -> dict[str, np.ndarray]:
        if self._trace is None:
            self._trace = self._outcome.trace(self._j)
        return self._trace

    @trace.setter
    def trace(self, value: dict) -> None:
        self._trace = value

    def __reduce__(self):
        """Pickled (Ray, a process pool) as the plain RunResult it stands for, not with its whole batch."""
        return RunResult, (self.config, self.summary, self.trace)

    def __repr__(self) -> str:
        return f"CellResult(config={self.config!r}, engine={ENGINE!r})"
