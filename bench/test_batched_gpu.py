"""The batched engine on a CUDA GPU: rates and ratios, each measured in one run (skipped without CUDA).

``scripts/gpu-check`` runs this file with ``--benchmark-json`` and collects every ``extra_info``. Targets
(issue #15, on an H200-class GPU; fast mode, the CUDA default, steps replayed from a CUDA graph):

- toy grid, 100,000 cells (1,000 lr x 100 momentum) x 200 steps of SGD on (2x)^2, in-process
  ``run_batch``: >= 20 M config-steps/s; beside it a hand-written loop on the same GPU (``.item()`` per step);
- MLP grid (mlp-classification width 64, depth 3, 500 steps; lr x momentum x seed): 4,096 cells in <= 60 s,
  and the per-cell cost at 512 cells <= 1/10 of the per-cell cost at 16 cells.

Every figure is wall time of ``run_batch`` (building the cells' problems, plans, the loop, the host copy);
reading every result back (summaries and traces, what the store does) is reported beside it.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from loops import bare_sgd_loop
from optbench.engine import batched
from optbench.registry.validate import canonical_config
from optbench.spec import RunConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

TOY_STEPS, MLP_STEPS = 200, 500
MLP_PROBLEM = "mlp-classification(width=64, depth=3)"


def _report(benchmark, **info) -> None:
    benchmark.extra_info.update(info)
    print("\n" + json.dumps(info, indent=2))


def _toy_cells(lrs: int, momenta: int) -> list[RunConfig]:
    base = canonical_config(
        RunConfig(problem="quadratic", optimizer="sgd", lr=0.1, momentum=0.0, steps=TOY_STEPS)
    )
    base = base.replace(device="cuda")
    return [
        base.replace(lr=float(lr), momentum=float(m))
        for lr in np.linspace(0.001, 0.3, lrs)
        for m in np.linspace(0.0, 0.99, momenta)
    ]


def _mlp_cells(count: int) -> list[RunConfig]:
    """lr x momentum x seed, in that order, the first ``count``: 16 lrs x 4 momenta x 64 seeds = 4,096."""
    base = canonical_config(
        RunConfig(problem=MLP_PROBLEM, optimizer="sgd", lr=0.1, momentum=0.0, steps=MLP_STEPS)
    )
    base = base.replace(device="cuda")
    cells = [
        base.replace(lr=float(lr), momentum=m, seed=seed)
        for seed in range(64)
        for lr in np.geomspace(0.003, 0.3, 16)
        for m in (0.0, 0.5, 0.9, 0.95)
    ]
    return cells[:count]


def _read_back(results) -> float:
    started = time.perf_counter()
    for r in results:
        r.summary, r.trace["loss"]
    return time.perf_counter() - started


def _timed(cells: list[RunConfig]) -> tuple[float, list]:
    torch.cuda.synchronize()
    started = time.perf_counter()
    results = batched.run_batch(cells)
    return time.perf_counter() - started, results


def _programs(results) -> dict:
    return {
        "engines": sorted({r.summary.engine for r in results}),
        "exactness": sorted({r.summary.exactness for r in results}),
        "step_program": sorted({r.summary.extras.get("step_program", "?") for r in results}),
        "notes": sorted({n for r in results for n in r.summary.extras.get("notes", [])})[:3],
        "statuses": {s: sum(r.summary.status == s for r in results) for s in ("ok", "diverged")},
    }


def test_toy_grid_of_100000_cells_on_cuda(benchmark):
    cells = _toy_cells(1000, 100)
    batched.run_batch(cells[:1000])  # warm-up: CUDA context, cuBLAS, torch._dynamo, a first capture
    results = benchmark.pedantic(batched.run_batch, args=(cells,), rounds=3, iterations=1)
    seconds = benchmark.stats.stats.min
    hand_cells = 5
    started = time.perf_counter()
    for cfg in cells[:: len(cells) // hand_cells][:hand_cells]:
        bare_sgd_loop(cfg.lr, TOY_STEPS, cfg.momentum, device="cuda")
    hand_rate = hand_cells * TOY_STEPS / (time.perf_counter() - started)
    rate = len(cells) * TOY_STEPS / seconds
    _report(
        benchmark,
        cells=len(cells),
        steps=TOY_STEPS,
        run_batch_s=round(seconds, 3),
        config_steps_per_s=round(rate),
        results_read_s=round(_read_back(results), 3),
        hand_loop_steps_per_s=round(hand_rate),
        speedup_x=round(rate / hand_rate, 1),
        target_config_steps_per_s=20_000_000,
        **_programs(results),
    )


def test_mlp_grid_on_cuda_scales_with_cells(benchmark):
    """16, 512 and 4,096 cells, one batch each, in one run (a warm-up batch first)."""
    batched.run_batch([c.replace(steps=40) for c in _mlp_cells(16)])  # warm-up: kernels, capture
    times, programs = {}, {}
    for count in (16, 512):
        times[count], results = _timed(_mlp_cells(count))
        programs[count] = _programs(results)
    results = benchmark.pedantic(batched.run_batch, args=(_mlp_cells(4096),), rounds=1, iterations=1)
    times[4096] = benchmark.stats.stats.min
    per_cell = {count: seconds / count for count, seconds in times.items()}
    _report(
        benchmark,
        problem=MLP_PROBLEM,
        steps=MLP_STEPS,
        seconds={str(k): round(v, 3) for k, v in times.items()},
        per_cell_ms={str(k): round(1e3 * v, 2) for k, v in per_cell.items()},
        per_cell_512_over_16=round(per_cell[512] / per_cell[16], 4),
        results_read_4096_s=round(_read_back(results), 3),
        target_4096_s=60,
        target_per_cell_512_over_16=0.1,
        programs_4096=_programs(results),
        programs_512=programs[512],
    )
