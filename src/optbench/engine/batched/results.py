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
    """What one batch leaves: its host traces (cell j = column j), lrs, and each cell's plan, whose knob and
    warnings it shares; the summaries of all cells are computed at once, on first use."""

    traces: HostTraces
    lr: np.ndarray  # [T or 1, C] float64: each cell's first param group's lr per step
    plan_of_cell: np.ndarray  # [C]
    knob: list[str | None]  # per plan
    warnings: list[str | None]  # per plan, joined
    cell_warnings: dict[int, str | None]  # cells whose own build warned: their joined warnings
    exactness: str
    wall_time_s: float  # per cell: the batch's wall time divided evenly
    _summaries: SummaryColumns | None = None
    _columns: dict | None = None
    _sharpness: dict | None = None

    def __post_init__(self):
        t = self.traces
        self.ends = np.where(t.diverged >= 0, t.diverged + 1, t.steps).tolist()

    def summary(self, j: int) -> RunSummary:
        if self._summaries is None:
            t = self.traces
            self._summaries = summarize(
                t.loss.T,
                t.diverged,
                t.steps,
                None if t.val_loss is None else t.val_loss.T,
                None if t.val_acc is None else t.val_acc.T,
            )
        p = int(self.plan_of_cell[j])
        return RunSummary(
            **self._summaries.row(j),
            momentum_knob=self.knob[p],
            wall_time_s=self.wall_time_s,
            warnings=self.cell_warnings.get(j, self.warnings[p]),
            engine=ENGINE,
            exactness=self.exactness,
            extras={"step_program": self.traces.step_program, "notes": self.traces.notes},
            **{name: values[j] for name, values in self._sharpness_columns().items()},
        )

    def _sharpness_columns(self) -> dict[str, list]:
        """``sharpness_residual`` / ``sharpness_unconverged`` of every cell over the steps before its end
        (a cell measured after its divergence, before the check that dropped it, counts as the reference
        engine, which stopped there); empty when the batch did not track sharpness."""
        if self._sharpness is None:
            t = self.traces
            self._sharpness = {}
            if t.sharpness_residual is not None:
                within = np.arange(t.steps)[:, None] < np.asarray(self.ends)[None, :]  # [T, C]
                residual = np.where(within, t.sharpness_residual, np.nan)
                measured = ~np.isnan(residual)
                largest = np.where(measured, residual, -np.inf).max(axis=0, initial=-np.inf)
                unconverged = np.where(within, np.nan_to_num(t.sharpness_unconverged), 0.0).sum(axis=0)
                self._sharpness = {
                    "sharpness_residual": [
                        v if m else None for v, m in zip(largest.tolist(), measured.any(axis=0), strict=True)
                    ],
                    "sharpness_unconverged": unconverged.astype(int).tolist(),
                }
        return self._sharpness

    def trace(self, j: int) -> dict[str, np.ndarray]:
        """Cell j's trace, column for column as engine.run writes it (float64 rows of ``_table``)."""
        end = self.ends[j]
        return {name: table[j, :end] for name, table in self._tables().items()}

    def _tables(self) -> dict[str, np.ndarray]:
        """Every trace column of every cell as one [C, T] array (float64; step int64, skipped_step bool),
        made on first use in one pass per column. Columns a batch does not measure are NaN, shared (and
        read-only) between its cells, as are the step numbers."""
        if self._columns is not None:
            return self._columns
        t = self.traces
        cells = len(self.ends)
        nan = _shared(np.full((cells, t.steps), np.nan))
        x = t.x if t.x is not None else None
        lr = np.broadcast_to(self.lr, (t.steps, cells)) if self.lr.shape[0] == 1 else self.lr
        self._columns = {
            "step": _shared(np.broadcast_to(np.arange(t.steps, dtype=np.int64), (cells, t.steps))),
            "lr": _rows(lr),
            "loss": _rows(t.loss),
            "grad_norm": _rows(t.grad_norm),
            "update_norm": _rows(t.update_norm),
            "param_norm": _rows(t.param_norm),
            "x0": _rows(x[:, :, 0]) if x is not None else nan,
            "x1": _rows(x[:, :, 1]) if x is not None and x.shape[2] > 1 else nan,
            "val_loss": _rows(t.val_loss) if t.val_loss is not None else nan,
            "val_acc": _rows(t.val_acc) if t.val_acc is not None else nan,
            "loss_scale": nan,
            "skipped_step": _shared(np.zeros((cells, t.steps), dtype=bool)),
            "sharpness": _rows(t.sharpness) if t.sharpness is not None else nan,
            "precond_sharpness": _rows(t.precond_sharpness) if t.precond_sharpness is not None else nan,
        }
        return self._columns


def _rows(values: np.ndarray) -> np.ndarray:
    """[T, C] -> [C, T] float64, each cell's row contiguous."""
    return np.ascontiguousarray(values.T, dtype=np.float64)


def _shared(values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values)
    values.flags.writeable = False  # one array behind many cells' traces: nobody may write into it
    return values


class CellResult(RunResult):
    """A batched cell's ``RunResult``; its summary and trace are built from the batch on first use."""

    _summary: RunSummary | None = None
    _trace: dict | None = None

    def __init__(self, config: RunConfig, outcome: BatchOutcome, j: int):  # not the dataclass __init__
        self.config, self._outcome, self._j = config, outcome, j

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
