"""Trace -> summary: the columns of runs.parquet that both engines derive from a run's per-step trace.

One function for both engines: the batched engine passes the traces of all its cells at once ([C, T]
arrays), the reference engine one run's trace (``summary_of``). Per run, with ``end`` = the diverged step + 1
(or the steps done)::

    status           "diverged" if a step diverged, else "ok"
    final_loss       loss[end - 1]                     (None for a run of 0 steps)
    best_loss        min of the finite losses of steps 0 .. end - 1   (None if there is none)
    diverged_step    the first diverged step, or None
    steps_completed  diverged_step if diverged, else the steps done
    final_val_loss   last non-NaN val_loss of steps 0 .. end - 1 (None if never evaluated); val_acc alike

E.g. losses [4, 2, inf] diverged at step 2: final_loss inf, best_loss 2, steps_completed 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass
class SummaryColumns:
    """The summary fields of C runs, one list each (Python scalars, None where undefined)."""

    status: list[str]
    final_loss: list[float | None]
    best_loss: list[float | None]
    diverged_step: list[int | None]
    steps_completed: list[int]
    final_val_loss: list[float | None]
    final_val_acc: list[float | None]

    def row(self, c: int) -> dict:
        """Run c's fields, as keyword arguments of ``RunSummary``."""
        return {name: getattr(self, name)[c] for name in TRACE_SUMMARY_FIELDS}


TRACE_SUMMARY_FIELDS = (
    "status",
    "final_loss",
    "best_loss",
    "diverged_step",
    "steps_completed",
    "final_val_loss",
    "final_val_acc",
)


def summarize(
    loss: np.ndarray,
    diverged: np.ndarray,
    steps_done: int,
    val_loss: np.ndarray | None = None,
    val_acc: np.ndarray | None = None,
) -> SummaryColumns:
    """The summaries of C runs from their traces [C, T] (float; values past a run's end are ignored).

    ``diverged`` [C]: each run's first diverged step, -1 for none; ``steps_done``: the steps a run that did
    not diverge completed. ``val_loss`` / ``val_acc`` None: never evaluated (all None).
    """
    loss = np.asarray(loss)
    cells, steps = loss.shape
    diverged = np.asarray(diverged, dtype=np.int64)
    ends = np.where(diverged >= 0, diverged + 1, steps_done)
    within = np.arange(steps)[None, :] < ends[:, None]
    best, has_best = _best(loss, within, steps_done == steps and not (diverged >= 0).any())
    final = loss[np.arange(cells), np.maximum(ends - 1, 0)] if steps else np.full(cells, np.nan)
    return SummaryColumns(
        status=np.where(diverged >= 0, "diverged", "ok").tolist(),
        final_loss=_or_none(final.astype(np.float64), ends > 0),
        best_loss=_or_none(best.astype(np.float64), has_best),
        diverged_step=_or_none(diverged, diverged >= 0),
        steps_completed=np.where(diverged >= 0, diverged, steps_done).tolist(),
        final_val_loss=_last_measured(val_loss, within),
        final_val_acc=_last_measured(val_acc, within),
    )


def _best(loss: np.ndarray, within: np.ndarray, whole: bool) -> tuple[np.ndarray, np.ndarray]:
    """(min of each run's finite losses before its end, whether it has one). ``whole``: every run went
    the full length without diverging, so every loss counts (a non-finite one would have diverged)."""
    if whole and loss.size and np.isfinite(loss).all():
        return loss.min(axis=1), np.ones(loss.shape[0], dtype=bool)
    finite = np.isfinite(loss) & within
    return np.where(finite, loss, np.inf).min(axis=1, initial=np.inf), finite.any(axis=1)


def summary_of(trace: Mapping[str, np.ndarray], diverged_step: int | None, steps_done: int) -> dict:
    """One run's summary fields from its trace (``step``/``loss``/``val_loss``/``val_acc`` columns, cut at
    the run's end), as keyword arguments of ``RunSummary``: the reference engine's call."""
    loss = np.asarray(trace["loss"], dtype=np.float64)[None, :]
    columns = summarize(
        loss,
        np.array([-1 if diverged_step is None else diverged_step]),
        steps_done,
        np.asarray(trace["val_loss"], dtype=np.float64)[None, :],
        np.asarray(trace["val_acc"], dtype=np.float64)[None, :],
    )
    return columns.row(0)


def _or_none(values: np.ndarray, defined: np.ndarray) -> list:
    return [v if ok else None for v, ok in zip(values.tolist(), defined.tolist(), strict=True)]


def _last_measured(values: np.ndarray | None, within: np.ndarray) -> list[float | None]:
    """Each run's last non-NaN value before its end (an inf counts: it was measured)."""
    if values is None:
        return [None] * within.shape[0]
    values = np.asarray(values, dtype=np.float64)
    measured = ~np.isnan(values) & within
    last = np.where(measured, np.arange(values.shape[1])[None, :], -1).max(axis=1, initial=-1)
    if values.shape[1] == 0:
        return [None] * values.shape[0]
    picked = values[np.arange(values.shape[0]), np.maximum(last, 0)]
    return _or_none(picked, last >= 0)
