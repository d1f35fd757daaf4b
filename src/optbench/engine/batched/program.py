"""One step of a batch as a fixed sequence of tensor operations, run eagerly or replayed from a CUDA graph.

Per step t (the reference engine's order): forward (loss_t) -> backward -> update -> record. A ``Program``
is built once per layout of the batch's rows (again after diverged rows are dropped); every tensor it reads
or writes lives at a fixed address: the parameters and optimizer state, the gradient buffer, the static
buffer of this step's hyperparameters, the trace buffers [T, cells]. Only the step index changes, and
where a CUDA graph replays the program it is a device tensor the program advances itself
(``DeviceStep``), so the host launches one graph per step and syncs only at the divergence checks.

``Runner`` runs the steps: step 0 eagerly (the first-step branches of the rules), then on CUDA a few eager
warm-up steps on a side stream (autograd, cuBLAS and the allocator settle, every buffer exists), then it
captures one step into a ``torch.cuda.CUDAGraph`` and replays it. Should capture fail, it says so in
``notes`` and runs every remaining step eagerly: same operations, same results.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from optbench.engine.batched.cells import CellBatch
from optbench.engine.batched.rules import Block, Rule

WARMUP_STEPS = 3  # eager steps before a capture (torch's docs: warm up on a side stream first)
GRAPH, EAGER = "cuda-graph", "eager"


class HostStep:
    """The step index as a Python int (CPU, eager CUDA): rows by indexing, records by plain copies."""

    def __init__(self, t: int = 0):
        self.t = t

    def row(self, table: torch.Tensor) -> torch.Tensor:
        return table[self.t]

    def copy_row(self, table: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(table[self.t])

    def put(self, buffer: torch.Tensor, values: torch.Tensor, active: torch.Tensor | None, offset: int = 0):
        if active is None:  # every row of the batch is still in it: row t is the batch, in order
            buffer[self.t + offset] = values
        else:
            buffer[self.t + offset].index_copy_(0, active, values)

    def advance(self) -> None:
        self.t += 1


class DeviceStep:
    """The step index as a one-element tensor on the device, advanced by the program itself: what a
    captured graph reads (a Python int would be frozen into the graph at capture)."""

    def __init__(self, device: torch.device, t: int = 0):
        self.t = torch.full((1,), t, dtype=torch.int64, device=device)

    def row(self, table: torch.Tensor) -> torch.Tensor:
        return table.index_select(0, self.t).squeeze(0)

    def copy_row(self, table: torch.Tensor, out: torch.Tensor) -> None:
        torch.index_select(table, 0, self.t, out=out.unsqueeze(0))

    def put(self, buffer: torch.Tensor, values: torch.Tensor, active: torch.Tensor | None, offset: int = 0):
        rows = (self.t + offset).expand(active.numel())
        buffer.index_put_((rows, active), values)

    def advance(self) -> None:
        self.t.add_(1)


class Tables:
    """The rule's tables on the batch's device: constant ones [G, C], per-step ones [T, K, G, C] with a
    static buffer [K, G, C] that holds the current step's row."""

    def __init__(self, tables: dict[str, np.ndarray], device: torch.device):
        def device_table(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device)

        self.constant = {name: device_table(v[0]) for name, v in tables.items() if v.shape[0] == 1}
        self.varying_names = [name for name, v in tables.items() if v.shape[0] > 1]
        self.varying = (
            device_table(np.stack([tables[name] for name in self.varying_names], axis=1))
            if self.varying_names
            else None
        )
        self._current()

    def _current(self) -> None:
        self.current = None if self.varying is None else torch.empty_like(self.varying[0])

    def refresh(self, step) -> None:
        """This step's row of the per-step tables into the static buffer."""
        if self.varying is not None:
            step.copy_row(self.varying, self.current)

    def views(self, g: int, c0: int, c1: int) -> dict[str, torch.Tensor]:
        """Each table's value for cells c0..c1 of param group g, as [cells, 1] views."""
        views = {name: t[g, c0:c1].unsqueeze(1) for name, t in self.constant.items()}
        for k, name in enumerate(self.varying_names):
            views[name] = self.current[k, g, c0:c1].unsqueeze(1)
        return views

    def value(self, name: str, t: int) -> torch.Tensor:
        """Table ``name`` at step t for every (param group, row): [G, rows]."""
        if name in self.constant:
            return self.constant[name]
        return self.varying[t, self.varying_names.index(name)]

    def select(self, keep: torch.Tensor) -> None:
        """Keep these cells (diverged rows leave the batch)."""
        self.constant = {name: t.index_select(1, keep) for name, t in self.constant.items()}
        if self.varying is not None:
            self.varying = self.varying.index_select(3, keep)
        self._current()


@dataclasses.dataclass
class Layout:
    """The batch's rows now: which cells they are and which branches each run of them takes."""

    code: np.ndarray  # [rows] the cell's branches, one bit per (switch, group); rows sorted by it
    switches: dict[str, np.ndarray]  # switch -> [G, rows] bool
    active: torch.Tensor  # [rows] row -> cell of the batch (the trace buffers' column)
    compacted: bool = False  # a row has left: rows are no longer cells 0..C-1 in order

    def blocks(self, columns) -> list[tuple]:
        """(first row, end row, group, first column, end column, switches) for each uniform block."""
        layout = []
        starts = [0, *(np.flatnonzero(np.diff(self.code)) + 1).tolist(), len(self.code)]
        for c0, c1 in zip(starts, starts[1:], strict=False):
            for g, p0, p1 in columns:
                on = {name: bool(v[g, c0]) for name, v in self.switches.items()}
                layout.append((c0, c1, g, p0, p1, on))
        return layout


class Program:
    """One step of the batch for one layout: forward, backward, update, record; callable eagerly or under
    CUDA graph capture (no host sync, no Python value that changes from step to step)."""

    def __init__(self, batch: CellBatch, rule: Rule, flags, tables: Tables, state, recording, layout, step):
        self.batch, self.rule, self.flags, self.tables, self.recording = batch, rule, flags, tables, recording
        self.step = step
        flat = batch.flat
        # MLPs: before, gradient, update (for the norms); toys: the gradient
        self.work = None if batch.coords else torch.empty(3, *flat.shape, device=flat.device)
        self.grad = torch.empty_like(flat) if batch.coords else self.work[1]
        self.active = layout.active if layout.compacted or isinstance(step, DeviceStep) else None
        self.blocks = [
            Block(
                flat[c0:c1, p0:p1],
                self.grad[c0:c1, p0:p1],
                {name: s[c0:c1, p0:p1] for name, s in state.items()},
                tables.views(g, c0, c1),
                on,
                False,
            )
            for c0, c1, g, p0, p1, on in layout.blocks(batch.columns)
        ]
        self.first_blocks = [dataclasses.replace(b, first=True) for b in self.blocks]

    def __call__(self, first: bool = False) -> torch.Tensor:
        """Run (or record) one step; returns this step's losses [rows]."""
        batch, recording, step, active = self.batch, self.recording, self.step, self.active
        self.tables.refresh(step)
        if self.work is not None:
            self.work[0].copy_(batch.flat)
        index = step.row(batch.batch_index) if batch.batch_index is not None else None
        losses = batch.loss_and_grad(index, self.grad)
        step.put(recording.loss, losses, active)
        with torch.no_grad():
            for block in self.first_blocks if first else self.blocks:
                self.rule.step(block, self.flags)
            if batch.coords:
                step.put(recording.grads, self.grad, active)
                step.put(recording.x, batch.flat, active, offset=1)
            else:  # engine._global_norm of the parameters before the update, the gradient and the update
                torch.sub(batch.flat, self.work[0], out=self.work[2])
                parts = [self.work[:, :, a:b] for a, b in zip(batch.offsets, batch.offsets[1:], strict=False)]
                norms = global_norms(parts)
                step.put(recording.param_norm, norms[0], active)
                step.put(recording.grad_norm, norms[1], active)
                step.put(recording.update_norm, norms[2], active)
        step.advance()
        return losses

    def init_state(self) -> None:
        """The rule's initial state (the engine allocates it as zeros), from the first step's values."""
        self.tables.refresh(HostStep(0))
        for block in self.first_blocks:
            self.rule.init_state(block)


def global_norms(parts: list[torch.Tensor]) -> torch.Tensor:
    """engine._global_norm for each row of [..., C, n] parts: one tensor's norm, or the norm of the norms."""
    norms = [torch.linalg.vector_norm(part, dim=-1) for part in parts]
    if len(norms) == 1:
        return norms[0]
    return torch.linalg.vector_norm(torch.stack(norms, -1), dim=-1)


class Runner:
    """Runs a batch's steps through its current program: eagerly, or on CUDA from a captured graph."""

    def __init__(self, device: torch.device, use_graph: bool):
        self.device = device
        self.use_graph = use_graph and device.type == "cuda"
        self.step = DeviceStep(device) if self.use_graph else HostStep()
        self.program: Program | None = None
        self.graph = None
        self.eager_left = WARMUP_STEPS
        self.notes: list[str] = []
        self.captures = 0

    @property
    def mode(self) -> str:
        return GRAPH if self.captures else EAGER

    def load(self, program: Program) -> None:
        """Run this program from now on (a new layout): the old graph goes, a new one is captured after
        one more warm-up step (buffers of the new shapes are made eagerly, outside the capture)."""
        self.program, self.graph = program, None
        self.eager_left = max(1, min(self.eager_left, WARMUP_STEPS))

    def run(self, t: int) -> None:
        if t == 0:
            self.program(first=True)
        elif self.graph is not None:
            self.graph.replay()
        elif not self.use_graph:
            self.program()
        elif self.eager_left > 0:
            self.eager_left -= 1
            self._on_side_stream()
        else:
            self._capture()
            self.graph.replay() if self.graph is not None else self.program()

    def _on_side_stream(self) -> None:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.program()
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.program()
        except Exception as err:  # noqa: BLE001 - the steps run eagerly instead, and say so
            self.use_graph = False
            self.notes.append(f"CUDA graph capture failed ({type(err).__name__}: {err}); ran eagerly")
            torch.cuda.synchronize(self.device)
            return
        self.graph = graph
        self.captures += 1
