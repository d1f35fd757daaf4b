"""The batch's run: every step through the ``Runner``, validation metrics, divergence checks, compaction.

Per step t, as the reference engine: record the validation metrics (MLPs, every ``eval_every`` steps and
the last) and the sharpness (toys, every ``sharpness_every`` steps: ``sharpness``), then the step
(forward, backward, update, record). A cell diverges at its first step with a
non-finite loss or one above ``DIVERGENCE_FACTOR`` x max(|initial loss|, 1); the checks read the losses
every ``CHECK_EVERY`` steps (the host's only syncs besides the initial loss), and a diverged cell's trace
ends there. Diverged rows leave the batch at a check: always for MLPs (their inf/nan costs real compute),
for toys once a quarter of the rows is dead (a toy row is cheap, compaction copies every table). A cell's
inf/nan never meets another cell: the cells share no reduction, each has its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from optbench.engine.batched import sharpness
from optbench.engine.batched.cells import CellBatch
from optbench.engine.batched.program import HostStep, Layout, Program, Runner, Tables
from optbench.engine.batched.rules import Rule
from optbench.engine.reference import CHECK_EVERY, DIVERGENCE_FACTOR


@dataclass
class HostTraces:
    """Per-step values of every cell of a batch, on the host after the loop: [T, C] float32 arrays (cell c
    is column c), None for a column the batch does not record."""

    loss: np.ndarray
    grad_norm: np.ndarray
    update_norm: np.ndarray
    param_norm: np.ndarray
    x: np.ndarray | None  # [T, C, d] the point before each step (toy problems)
    val_loss: np.ndarray | None
    val_acc: np.ndarray | None
    sharpness: np.ndarray | None  # [T, C] float64 (NaN where not measured), None when not tracked
    precond_sharpness: np.ndarray | None
    sharpness_residual: np.ndarray | None  # [T, C] the largest residual of the finite estimates of step t
    sharpness_unconverged: np.ndarray | None  # [T, C] how many of them missed the tolerance
    diverged: np.ndarray  # [C] first bad step, -1 for none
    steps: int
    step_program: str  # "cuda-graph" or "eager"
    notes: list[str]


class Recording:
    """The trace buffers [T, C(, d)] on the batch's device, written by the program at (step, cell)."""

    def __init__(self, batch: CellBatch, steps: int, sharpness_every: int = 0):
        cells, width = batch.flat.shape
        device = batch.flat.device

        def buffer(*shape: int, dtype=torch.float32) -> torch.Tensor:
            return torch.full(shape, float("nan"), device=device, dtype=dtype)

        self.loss = buffer(steps, cells)
        # Toy problems keep the points and gradients (norms at the end, as the engine); MLPs the norms.
        self.x = buffer(steps + 1, cells, width) if batch.coords else None
        self.grads = buffer(steps, cells, width) if batch.coords else None
        if not batch.coords:
            self.grad_norm, self.update_norm, self.param_norm = (buffer(steps, cells) for _ in range(3))
        self.val_loss = buffer(steps, cells) if batch.eval_every else None
        self.val_acc = buffer(steps, cells) if batch.eval_every and batch.val_labels is not None else None
        self.sharpness_every = sharpness_every
        tracked = [buffer(steps, cells, dtype=torch.float64) for _ in range(4)] if sharpness_every else None
        self.sharpness, self.precond_sharpness, self.residual, self.unconverged = tracked or (None,) * 4

    def host(self, diverged: np.ndarray, runner: Runner) -> HostTraces:
        if self.x is not None:  # engine: norms of the kept gradients and points, taken once at the end
            self.grad_norm = torch.linalg.vector_norm(self.grads, dim=2)
            self.param_norm = torch.linalg.vector_norm(self.x[:-1], dim=2)
            self.update_norm = torch.linalg.vector_norm(self.x[1:] - self.x[:-1], dim=2)
        return HostTraces(
            _host(self.loss),
            _host(self.grad_norm),
            _host(self.update_norm),
            _host(self.param_norm),
            _host(self.x[:-1]) if self.x is not None else None,
            _host(self.val_loss),
            _host(self.val_acc),
            _host(self.sharpness),
            _host(self.precond_sharpness),
            _host(self.residual),
            _host(self.unconverged),
            diverged,
            self.loss.shape[0],
            runner.mode,
            runner.notes,
        )


def _host(values: torch.Tensor | None) -> np.ndarray | None:
    return None if values is None else values.cpu().numpy()


class _Rows:
    """What the loop changes as rows leave: the batch, its state, tables and layout."""

    def __init__(self, batch, rule, flags, tables: Tables, layout: Layout, recording: Recording, runner):
        self.batch, self.rule, self.flags, self.tables, self.layout = batch, rule, flags, tables, layout
        self.recording, self.runner = recording, runner
        flat = batch.flat
        self.state = {name: torch.zeros_like(flat) for name in rule.state_names(flags)}
        runner.load(self._program())
        runner.program.init_state()

    def _program(self) -> Program:
        return Program(
            self.batch,
            self.rule,
            self.flags,
            self.tables,
            self.state,
            self.recording,
            self.layout,
            self.runner.step,
        )

    def keep(self, rows: torch.Tensor) -> None:
        """Only these rows stay in the batch (the others diverged)."""
        self.batch.select_rows(rows)
        self.state = {name: s.index_select(0, rows) for name, s in self.state.items()}
        self.tables.select(rows)
        kept = rows.cpu().numpy()
        self.layout = Layout(
            self.layout.code[kept],
            {name: v[:, kept] for name, v in self.layout.switches.items()},
            self.layout.active[rows],
            compacted=True,
        )
        self.runner.load(self._program())


def run_loop(
    batch: CellBatch,
    rule: Rule,
    flags: dict,
    tables: Tables,
    layout: Layout,
    steps: int,
    use_graph: bool,
    sharpness_every: int = 0,
) -> HostTraces:
    """Run the batch's cells for ``steps`` steps; their traces, on the host."""
    device = batch.flat.device
    recording = Recording(batch, steps, sharpness_every)
    runner = Runner(device, use_graph)
    state = _Rows(batch, rule, flags, tables, layout, recording, runner)
    total = batch.flat.shape[0]
    diverged = np.full(total, -1)  # on the host: written at the checks
    alive = torch.ones(total, dtype=torch.bool, device=device)  # rows not diverged yet
    threshold = torch.empty(0, device=device)
    if batch.coords:
        recording.x[0] = batch.flat  # later points are written after each update
    window_start = 0
    for t in range(steps):
        if batch.eval_every and (t % batch.eval_every == 0 or t == steps - 1):
            _record_validation(state, t)
        if sharpness_every and t % sharpness_every == 0:
            _record_sharpness(state, t)
        runner.run(t)
        if t == 0:  # engine: threshold = DIVERGENCE_FACTOR * max(|initial loss|, 1), -inf if not finite
            initial = recording.loss[0].double().cpu().numpy()  # one sync, as the engine's float(loss)
            limit = DIVERGENCE_FACTOR * np.maximum(np.abs(initial), 1.0)
            threshold = torch.from_numpy(np.where(np.isfinite(initial), limit, -np.inf)).float().to(device)
        if (t + 1) % CHECK_EVERY == 0 or t == steps - 1:
            alive, threshold, done = _check(state, window_start, t, alive, threshold, diverged)
            if done:
                break
            window_start = t + 1
    return recording.host(diverged, runner)


def _record_validation(state: _Rows, t: int) -> None:
    val_loss, val_acc = state.batch.evaluate()
    active = state.layout.active if state.layout.compacted else None
    step = HostStep(t)  # evaluation runs eagerly between steps, at the host's step count
    step.put(state.recording.val_loss, val_loss, active)
    if val_acc is not None:
        step.put(state.recording.val_acc, val_acc, active)


def _record_sharpness(state: _Rows, t: int) -> None:
    """Every row's sharpness before step t (and preconditioned, for Adam/AdamW after the first step)."""
    batch, recording = state.batch, state.recording
    if not batch.coords:
        raise NotImplementedError("sharpness of batched MLP cells")  # support sends them to the reference
    scale = None
    if t > 0 and sharpness.preconditioned(state.rule, state.flags):
        scale = sharpness.adam_scale(state.state, state.tables, t)
    estimates = sharpness.measure_toys(batch.fn, batch.flat, scale)
    active = state.layout.active if state.layout.compacted else None
    step = HostStep(t)
    residual = torch.full_like(estimates[0].values, float("nan"))
    unconverged = torch.zeros_like(estimates[0].values)
    for estimate, buffer in zip(estimates, (recording.sharpness, recording.precond_sharpness), strict=True):
        if estimate is None:
            continue
        step.put(buffer, estimate.values, active)
        finite = torch.isfinite(estimate.values)
        residual = torch.fmax(residual, torch.where(finite, estimate.residuals, float("nan")))
        unconverged += (finite & ~estimate.converged).double()
    step.put(recording.residual, residual, active)
    step.put(recording.unconverged, unconverged, active)


def _check(state: _Rows, window_start: int, t: int, alive, threshold, diverged: np.ndarray):
    """Divergence check over steps window_start..t; drops dead rows. Returns (alive, threshold, all dead)."""
    active = state.layout.active
    window = state.recording.loss[window_start : t + 1].index_select(1, active)  # [w, rows] float32
    bad = ~torch.isfinite(window) | (window > threshold)
    newly = bad.any(0) & alive
    if bool(newly.any()):
        rows = newly.nonzero().flatten()
        first_bad = window_start + bad.float().argmax(0)[rows]
        diverged[active[rows].cpu().numpy()] = first_bad.cpu().numpy()
        alive = alive & ~newly
        if not bool(alive.any()):
            return alive, threshold, True
    dead = alive.numel() - int(alive.sum())
    if dead and (not state.batch.coords or 4 * dead >= alive.numel()):
        keep = alive.nonzero().flatten()
        state.keep(keep)
        alive, threshold = alive[keep], threshold[keep]
    return alive, threshold, False
