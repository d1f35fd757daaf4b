"""The batched engine: many grid cells that share a problem and a step count, run as one tensor program.

A grid of tiny runs spends nearly all its time in Python and dispatch overhead (~200 µs a step for a few
FLOPs). Here the parameters of C cells are stacked along a leading config dimension and advanced together
(docs/batched-engine.md has the whole story):

- ``cells``: the cells' parameters as one [C, N] tensor; toy problems use the problem's own function (written
  over the last dimension), MLPs run layer by layer on [C, rows, width] activations;
- ``kernels``: the exactness switch. ``exact`` (the CPU default): the reference's float32 bits, each product
  or activation batched only where a probe shows it rounds like the per-cell call; ``fast`` (the CUDA
  default): everything batched, agreement with the reference within torch's own implementation spread;
- ``rules``: the torch optimizer's own single-tensor formula with per-cell hyperparameters as tensors;
- ``plans``: lr (and momentum/betas where a scheduler cycles them) of every step, from real torch
  optimizers and schedulers, one per distinct setting, stepped ahead of the run;
- ``program`` / ``loop``: the step as a fixed tensor program (a CUDA graph on CUDA), divergence checks;
- ``results``: all cells summarized at once, per-cell RunResults cut from the batch on first use.

API (the grid runner's)::

    unsupported_reason(cfg) -> str | None    None: this canonical config can run batched
    batch_key(cfg) -> tuple                  configs with equal keys may share one run_batch call
    run_batch(cfgs, exactness) -> list       RunResults in the same order; summary.engine == "batched"
    cells_per_program(cfg) -> int            most cells of this kind one tensor program holds here

``run_batch`` never raises for a bad cell: a config that cannot run batched after all (it fails to build,
or a scheduler moves a setting the rule cannot follow) is run by ``engine.run`` and comes back with
``engine == "reference"``. ``wall_time_s`` of a batched cell is its batch's wall time divided evenly over
the batch's cells: each cell's share of the machine, not the latency a single run would have.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from optbench import engine
from optbench.engine.batched import kernels
from optbench.engine.batched.cells import Fallback, MLPBatch, ToyBatch, factory_kwargs
from optbench.engine.batched.kernels import EXACT, FAST, MODES, Kernels
from optbench.engine.batched.loop import run_loop
from optbench.engine.batched.plans import Plans, factorize, make_plans
from optbench.engine.batched.program import Layout, Tables
from optbench.engine.batched.results import ENGINE, BatchOutcome, CellResult
from optbench.engine.batched.rules import RULES, Rule
from optbench.engine.batched.support import batch_key, triage, unsupported_reason
from optbench.engine.reference import RunResult
from optbench.errors import OptbenchError
from optbench.registry.problems import is_toy
from optbench.spec import RunConfig, parse_spec

__all__ = [
    "ENGINE",
    "EXACT",
    "FAST",
    "MODES",
    "batch_key",
    "cells_per_program",
    "resolve_exactness",
    "run_batch",
    "unsupported_reason",
]

# Run the steps of a CUDA batch from a captured CUDA graph (else eagerly; the results are the same).
CUDA_GRAPHS = True

# Most cells one tensor program holds on the CPU; on CUDA, what fits in DEVICE_MEMORY_SHARE of the free
# memory (``cells_per_program``). MLP chunks are sized from the activation memory.
MAX_TOY_CELLS = 50_000
MLP_CHUNK_FLOATS = 32_000_000
DEVICE_MEMORY_SHARE = 0.5
MAX_DEVICE_CELLS = 1_000_000


def resolve_exactness(exactness: str, device: str) -> str:
    """``exact`` or ``fast`` for a batch on ``device`` (``auto``: exact on CPU, fast elsewhere); a mode the
    device cannot keep (exact on CUDA) or an unknown one is an ``OptbenchError`` naming it."""
    try:
        return kernels.resolve(exactness, device)
    except ValueError as err:
        raise OptbenchError(str(err)) from None


def run_batch(cfgs: list[RunConfig], exactness: str = "auto") -> list[RunResult]:
    """Run configs (normally of one ``batch_key``) as batched tensor programs; results in the same order.

    Configs outside the batched subset, or that fail to build, are run by ``engine.run``. ``exactness``:
    ``auto``, ``exact`` or ``fast`` (see ``kernels``); the mode each cell ran is in ``summary.exactness``.
    """
    results: list[RunResult | None] = [None] * len(cfgs)
    reasons, groups = triage(cfgs)
    for i, reason in enumerate(reasons):
        if reason is not None:
            results[i] = engine.run(cfgs[i])
    for group in groups:
        indices = group.tolist()
        first = cfgs[indices[0]]
        mode = resolve_exactness(exactness, first.device)
        size = cells_per_program(first)
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            if len(chunk) == len(cfgs):  # the usual call: one batch, every cell, in order
                return _run_chunk(cfgs, mode)
            for i, result in zip(chunk, _run_chunk([cfgs[i] for i in chunk], mode), strict=True):
                results[i] = result
    return results  # type: ignore[return-value]


def cells_per_program(cfg: RunConfig) -> int:
    """The most cells like ``cfg`` that one tensor program holds: on CUDA what fits in a share of the free
    device memory (an estimate per cell of every buffer the batch keeps), on CPU a fixed budget."""
    toy = is_toy(cfg.problem)
    if torch.device(cfg.device).type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(cfg.device))
        per_cell = _device_bytes_per_cell(cfg, toy)
        return int(max(1, min(MAX_DEVICE_CELLS, DEVICE_MEMORY_SHARE * free // per_cell)))
    if toy:
        return MAX_TOY_CELLS
    kw = factory_kwargs(cfg.problem)
    rows = max(cfg.batch_size or 64, kw.get("n_val", 256))
    per_cell = rows * kw.get("width", 64) * (kw.get("depth", 2) + 1) * 4  # floats in flight per cell
    return max(1, MLP_CHUNK_FLOATS // per_cell)


def _device_bytes_per_cell(cfg: RunConfig, toy: bool) -> int:
    """Bytes one cell keeps on the device: its traces and per-step tables (8 per step, the most a rule
    has), and for MLPs its parameters x 10 (flat, gradient, state, norm work), activations forward and
    backward, the validation pass and the minibatch indices (int64)."""
    steps = cfg.steps
    if toy:
        dims = 2
        return 4 * steps * (8 + 8 + 4 * dims)
    kw = factory_kwargs(cfg.problem)
    width, depth = kw.get("width", 64), kw.get("depth", 2)
    inputs, outputs = kw.get("in_dim", 2), kw.get("classes", 1)
    batch = min(cfg.batch_size or 64, kw.get("n_train", 1024))
    params = (inputs + 1) * width + depth * (width + 1) * width + (width + 1) * outputs
    activations = (batch * 6 + kw.get("n_val", 256) * 2) * width * (depth + 1)
    floats = 10 * params + activations + steps * (8 + 8)
    return 4 * floats + 8 * steps * batch


def _run_chunk(cfgs: list[RunConfig], mode: str) -> list[RunResult]:
    """One batch; should it break (a bug, memory), its cells run on the reference engine and say so."""
    try:
        return _run_group(cfgs, mode)
    except Exception as err:  # noqa: BLE001 - the grid must go on; the warning keeps the failure visible
        note = f"RuntimeWarning: batched engine failed ({type(err).__name__}: {err}); ran on the reference engine"
        results = [engine.run(cfg) for cfg in cfgs]
        for result in results:
            result.summary.warnings = "\n".join(filter(None, [result.summary.warnings, note]))
        return results


def _run_group(cfgs: list[RunConfig], mode: str) -> list[RunResult]:
    started = time.perf_counter()
    first = cfgs[0]
    rule = RULES[parse_spec(first.optimizer, what="optimizer").name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            batch = ToyBatch(cfgs) if is_toy(first.problem) else MLPBatch(cfgs, Kernels(exact=mode == EXACT))
        except Fallback:
            return [engine.run(cfg) for cfg in cfgs]
        build_warnings = _messages(caught)
    candidates = [i for i in range(len(cfgs)) if i not in batch.failed] if batch.failed else range(len(cfgs))
    plans = make_plans(
        [cfgs[i] for i in candidates] if batch.failed else cfgs, rule, batch.group_lrs, first.steps
    )
    order, tables, layout = _arrange(plans, rule, first.steps, batch.device)
    results: list[RunResult | None] = [None] * len(cfgs)
    if order.size:
        keep = [candidates[j] for j in order.tolist()]
        batch.select_cells(keep)
        cell_plans = plans.plan_of_cell[order]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            traces = run_loop(
                batch,
                rule,
                plans.flags,
                Tables(tables, batch.flat.device),
                layout,
                first.steps,
                CUDA_GRAPHS,
                first.sharpness_every,
            )
            loop_warnings = _messages(caught)
        share = (time.perf_counter() - started) / len(keep)
        per_plan, per_cell = _warnings(batch, keep, cell_plans, plans, build_warnings, loop_warnings)
        outcome = BatchOutcome(
            traces,
            plans.values["lr"][:, 0, cell_plans],
            cell_plans,
            plans.knob,
            per_plan,
            per_cell,
            mode,
            share,
        )
        for j, i in enumerate(keep):
            results[i] = CellResult(cfgs[i], outcome, j)
    return [r if r is not None else engine.run(cfg) for r, cfg in zip(results, cfgs, strict=True)]


def _arrange(plans: Plans, rule: Rule, steps: int, device) -> tuple[np.ndarray, dict, Layout]:
    """The cells that run batched (indices into the candidates), sorted so that each run of cells takes one
    branch of the rule; their tables [T or 1, G, C] and the layout of their branches.

    Branches torch takes per group (momentum on/off, ...) must hold for the whole run, as torch's optimizer
    state does; a cell whose scheduler would switch one, or whose per-step scalars leave float32's range,
    goes to the reference engine.
    """
    plan_tables = rule.tables(plans.values, steps)  # per plan: [T or 1, G, P]
    switches = rule.switches(plans.values)
    runs = np.ones(len(plans.knob), dtype=bool)
    for table in switches.values():
        runs &= (table == table[:1]).all(axis=(0, 1))
    runs &= _fits_float32(plan_tables)
    code = np.zeros(len(plans.knob), dtype=np.int64)  # the plan's branches, one bit per (switch, group)
    bits = [table[0, g] for _, table in sorted(switches.items()) for g in range(table.shape[1])]
    for bit, on in enumerate(bits):
        code |= on.astype(np.int64) << bit
    cell_plan = plans.plan_of_cell
    candidates = np.flatnonzero((cell_plan >= 0) & runs[np.maximum(cell_plan, 0)])
    order = candidates[np.argsort(code[cell_plan[candidates]], kind="stable")]
    picked = cell_plan[order]
    tables = {name: table[:, :, picked] for name, table in plan_tables.items()}
    layout = Layout(
        code[picked],
        {name: table[0][:, picked] for name, table in switches.items()},
        torch.arange(order.size, device=device),
    )
    return order, tables, layout


def _fits_float32(tables: dict[str, np.ndarray]) -> np.ndarray:
    """Per plan: does every per-step value [T, G, P] convert to float32? Torch refuses a Python scalar
    beyond float32's range ("value cannot be converted to type float without overflow", e.g. Adam's step
    size at lr=1e38) and the reference run fails there; such cells are left to the reference engine."""
    fits = True
    for table in tables.values():
        beyond = np.isfinite(table) & (np.abs(table) > np.finfo(np.float32).max)
        fits = fits & ~beyond.any(axis=(0, 1))
    return fits


def _warnings(batch, keep: list[int], cell_plans: np.ndarray, plans: Plans, built, ran):
    """The warnings column: per plan (the batch build's, the optimizer's and scheduler's, the loop's: none
    are known, they would go to every cell), and for the cells whose own problem warned (MLPs), theirs
    first; joined as engine.run joins them."""

    def joined(cell: list[str], plan_warnings: tuple) -> str | None:
        return "\n".join(dict.fromkeys([*cell, *built, *plan_warnings, *ran])) or None

    warning_of_plan, distinct = factorize(plans.warnings)  # plans mostly share theirs (often none)
    texts = np.empty(len(distinct), dtype=object)
    texts[:] = [joined([], w) for w in distinct]
    per_plan = texts[warning_of_plan].tolist()
    warned = batch.warned_cells()
    per_cell = {
        j: joined(warned[i], plans.warnings[cell_plans[j]]) for j, i in enumerate(keep) if i in warned
    }
    return per_plan, per_cell


def _messages(caught) -> list[str]:
    return list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
