"""Speed and memory of the batched engine, each ratio measured in one run on this machine.

Run with ``.venv/bin/pytest bench/test_batched_speed.py -s`` (``-s`` shows the printed ratios). Nothing here
asserts a timing; the ratios land in ``benchmark.extra_info`` (``--benchmark-json=out.json`` keeps them).
Both sides run with one torch thread, as a grid worker does (executors.py). Targets (the issue):

- toy grid, 1,000 cells (40 lr x 25 momentum) x 200 steps of SGD on (2x)^2: >= 100x the config-steps/s of a
  hand-written one-by-one loop (``.item()`` per step). The loop's rate is constant per step, so it is timed
  on ``OPTBENCH_BENCH_HAND_CELLS`` cells (default 100) of the same grid;
- MLP grid, 64 cells (8 lr x 8 momentum; width 64, depth 3) x 500 steps: >= 5x ``engine.run`` one by one
  (all 64 cells, ~20-40 s);
- toy grid, 10,000 cells (100 lr x 100 momentum) x 200 steps, in-process ``run_batch``: <= 0.4 s, and
  the per-cell work outside the tensor loop (grouping, plans, tables, results) <= 20% of it;
- peak RSS of a 10,000-cell toy batch, in a fresh subprocess: < 2 GB.

The GPU figures are in ``bench/test_batched_gpu.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from loops import bare_sgd_loop
from optbench import engine
from optbench.engine import batched
from optbench.registry.validate import canonical_config
from optbench.spec import RunConfig

TOY_STEPS, MLP_STEPS = 200, 500
MLP_PROBLEM = "mlp-classification(width=64, depth=3)"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _toy_grid(lrs: int, momenta: int, steps: int = TOY_STEPS, device: str = "cpu") -> list[RunConfig]:
    """SGD on (2x)^2: lrs x momenta cells (one canonical config, its lr and momentum replaced per cell)."""
    base = canonical_config(
        RunConfig(problem="quadratic", optimizer="sgd", lr=0.1, momentum=0.0, steps=steps)
    )
    base = base.replace(device=device)
    return [
        base.replace(lr=float(lr), momentum=float(m))
        for lr in np.linspace(0.001, 0.3, lrs)
        for m in np.linspace(0.0, 0.99, momenta)
    ]


def timed_loop(monkeypatch) -> list[float]:
    """Seconds spent in each batch's tensor loop (``run_loop``: every step, the checks, the host copy)."""
    import optbench.engine.batched as package

    spent: list[float] = []
    real = package.run_loop

    def loop(*args, **kwargs):
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    monkeypatch.setattr(package, "run_loop", loop)
    return spent


def materialize(results) -> float:
    """Seconds to read every result's summary and trace, as the store does when it commits the batch."""
    started = time.perf_counter()
    for r in results:
        r.summary, r.trace["loss"]
    return time.perf_counter() - started


def _report(benchmark, **info) -> None:
    benchmark.extra_info.update(info)
    print("\n" + json.dumps(info, indent=2))


def test_toy_grid_vs_hand_written_loop(benchmark):
    cells = _toy_grid(40, 25)
    batched.run_batch(cells[:4])  # warm-up: first optimizer build imports torch._dynamo (seconds)
    results = benchmark.pedantic(batched.run_batch, args=(cells,), rounds=3, iterations=1)
    assert {r.summary.engine for r in results} == {"batched"}
    batched_s = benchmark.stats.stats.min

    hand_cells = int(os.environ.get("OPTBENCH_BENCH_HAND_CELLS", "100"))
    sample = cells[:: max(1, len(cells) // hand_cells)][:hand_cells]
    started = time.perf_counter()
    for cfg in sample:
        bare_sgd_loop(cfg.lr, TOY_STEPS, cfg.momentum)
    hand_s = time.perf_counter() - started

    batched_rate = len(cells) * TOY_STEPS / batched_s
    hand_rate = len(sample) * TOY_STEPS / hand_s
    _report(
        benchmark,
        cells=len(cells),
        steps=TOY_STEPS,
        batched_s=round(batched_s, 4),
        batched_config_steps_per_s=round(batched_rate),
        hand_loop_cells_timed=len(sample),
        hand_loop_steps_per_s=round(hand_rate),
        speedup_x=round(batched_rate / hand_rate, 1),
        target_x=100,
    )


def test_toy_grid_of_10000_cells_in_process(benchmark, monkeypatch):
    """run_batch on 10,000 cells x 200 steps, best of 5; the loop's share from the same rounds."""
    cells = _toy_grid(100, 100)
    batched.run_batch(cells[:4])  # warm-up: torch._dynamo on the first optimizer, caches
    spent = timed_loop(monkeypatch)
    results = benchmark.pedantic(batched.run_batch, args=(cells,), rounds=5, iterations=1)
    assert {r.summary.engine for r in results} == {"batched"}
    times = benchmark.stats.stats.data
    best = min(range(len(times)), key=times.__getitem__)
    total_s, loop_s = times[best], spent[best]
    _report(
        benchmark,
        cells=len(cells),
        steps=TOY_STEPS,
        run_batch_s=round(total_s, 4),
        loop_s=round(loop_s, 4),
        outside_loop_share=round((total_s - loop_s) / total_s, 3),
        config_steps_per_s=round(len(cells) * TOY_STEPS / total_s),
        results_read_s=round(materialize(results), 4),
        target_s=0.4,
        target_outside_loop_share=0.2,
    )


def test_mlp_grid_vs_reference_engine(benchmark):
    cells = [
        canonical_config(RunConfig(problem=MLP_PROBLEM, optimizer="sgd", lr=lr, momentum=m, steps=MLP_STEPS))
        for lr in (0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
        for m in (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
    ]
    batched.run_batch(cells[:2])
    engine.run(cells[0].replace(steps=20))
    results = benchmark.pedantic(batched.run_batch, args=(cells,), rounds=1, iterations=1)
    assert {r.summary.engine for r in results} == {"batched"}
    batched_s = benchmark.stats.stats.min

    started = time.perf_counter()
    reference = [engine.run(cfg) for cfg in cells]
    reference_s = time.perf_counter() - started
    worst = max(
        float(np.max(np.abs(a.trace["loss"] - b.trace["loss"]) / np.abs(b.trace["loss"])))
        for a, b in zip(results, reference, strict=True)
    )
    _report(
        benchmark,
        cells=len(cells),
        steps=MLP_STEPS,
        problem=MLP_PROBLEM,
        batched_s=round(batched_s, 3),
        reference_s=round(reference_s, 3),
        speedup_x=round(reference_s / batched_s, 2),
        target_x=5,
        max_rel_loss_difference=worst,
    )


_MEMORY_SCRIPT = """
import json, resource, time
import numpy as np, torch
torch.set_num_threads(1)
from optbench.engine import batched
from optbench.spec import RunConfig
from optbench.registry.validate import canonical_config
cells = [canonical_config(RunConfig(problem="quadratic", optimizer="sgd", lr=float(lr), momentum=float(m),
                                    steps={steps}))
         for lr in np.linspace(0.001, 0.3, 100) for m in np.linspace(0.0, 0.99, 100)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
results = batched.run_batch(cells)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({{"cells": len(results), "run_s": seconds, "rss_before_mb": before / 1024,
                  "peak_rss_mb": peak / 1024, "engines": sorted({{r.summary.engine for r in results}})}}))
"""


def test_toy_grid_of_10000_cells_peak_memory(benchmark):
    def measure():
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT.format(steps=TOY_STEPS)],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    info = benchmark.pedantic(measure, rounds=1, iterations=1)
    assert info["engines"] == ["batched"]
    _report(
        benchmark,
        steps=TOY_STEPS,
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in info.items()},
        target_peak_rss_mb=2048,
    )
