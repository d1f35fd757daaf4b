"""Grid throughput against a hand-written loop, and the speed-up from 1 to 2 local workers.

All timings of a comparison are taken in this one run; ratios are printed and stored in ``extra_info``,
never asserted (timings belong here, not in tests/).

    pytest bench/test_grid_speed.py --benchmark-only -s

* Toy grid: 200 cells (50 lrs x 4 momenta, SGD on 4x^2, 100 steps each) through ``run_grid`` (every run
  committed to Parquet: trace file + commit record, then runs.parquet) against ``loops.bare_sgd_loop`` doing
  the same 200 runs one by one with ``.item()`` every step and writing nothing.
* MLP grid: 32 cells of mlp-classification (2 optimizers x 4 lrs x 4 seeds, 800 steps) with 1 worker (in
  process) and 2 spawned workers. "end to end" includes the pool's start-up (a fresh interpreter importing
  torch per worker); "steady" is the pace between the first and the last finished run.
"""

from __future__ import annotations

import time

import torch

from loops import bare_sgd_loop
from optbench.grid import GridSpec, run_grid

TOY = GridSpec(lr="linspace(0.01, 0.5, 50)", momentum="0,0.3,0.6,0.9", steps=100)
MLP = GridSpec(
    problem="mlp-classification",
    optimizer="sgd,adamw",
    lr="0.003,0.01,0.03,0.1",
    momentum=0.9,
    seed="0,1,2,3",
    steps=800,
)


def _hand_loop() -> None:
    for lr in TOY.lr:
        for momentum in TOY.momentum:
            bare_sgd_loop(lr, 100, momentum)


def _timed_grid(spec: GridSpec, out, workers: int, engine: str = "reference") -> tuple[float, float]:
    """(end-to-end seconds, seconds from the first to the last finished run). The reference engine by
    default: these benchmarks measure the executors (one task per run); bench/test_batched_speed.py and
    bench/test_process_speed.py measure the batched engine."""
    marks: list[float] = []
    start = time.perf_counter()
    run_grid(
        spec,
        out=out,
        workers=workers,
        engine=engine,
        progress=lambda state: marks.append(time.perf_counter()),
    )
    total = time.perf_counter() - start
    finished = marks[1:]  # the first call is the start-up report
    return total, finished[-1] - finished[0]


def test_toy_grid_throughput_vs_hand_written_loop(benchmark, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _hand_loop()  # warm-up: imports, allocator
        loop_s = min(_timed(_hand_loop) for _ in range(3))
    finally:
        torch.set_num_threads(threads)
    run_grid(TOY.replace(steps=(5,)), out=tmp_path / "warm", workers=1)  # warm-up: torch._dynamo import etc.
    grid1_s, _ = _timed_grid(TOY, tmp_path / "w1", workers=1)
    grid2_s, _ = benchmark.pedantic(_timed_grid, args=(TOY, tmp_path / "w2", 2), rounds=1, iterations=1)
    cells = TOY.size
    info = {
        "cells": cells,
        "hand_loop_s": loop_s,
        "grid_1_worker_s": grid1_s,
        "grid_2_workers_s": grid2_s,
        "grid_1_worker_over_loop_x": grid1_s / loop_s,
        "grid_2_workers_over_loop_x": grid2_s / loop_s,
        "hand_loop_runs_per_s": cells / loop_s,
        "grid_1_worker_runs_per_s": cells / grid1_s,
        "grid_2_workers_runs_per_s": cells / grid2_s,
    }
    benchmark.extra_info.update(info)
    print(
        f"\n{cells} toy runs: hand loop {loop_s:.2f} s ({cells / loop_s:.0f} runs/s); grid 1 worker {grid1_s:.2f} s "
        f"({grid1_s / loop_s:.2f}x the loop); grid 2 workers {grid2_s:.2f} s ({grid2_s / loop_s:.2f}x the loop)"
    )


def test_mlp_grid_speedup_from_one_to_two_workers(benchmark, tmp_path):
    run_grid(MLP.replace(steps=(5,), seed=(0,)), out=tmp_path / "warm", workers=1)  # warm-up in this process
    one_s, one_steady_s = _timed_grid(MLP, tmp_path / "w1", workers=1)
    two_s, two_steady_s = benchmark.pedantic(
        _timed_grid, args=(MLP, tmp_path / "w2", 2), rounds=1, iterations=1
    )
    runs = MLP.size
    # steady pace: seconds per run between the first and the last finished run
    one_pace, two_pace = one_steady_s / (runs - 1), two_steady_s / (runs - 1)
    info = {
        "cells": runs,
        "one_worker_s": one_s,
        "two_workers_s": two_s,
        "speedup_end_to_end_x": one_s / two_s,
        "speedup_steady_x": one_pace / two_pace,
    }
    benchmark.extra_info.update(info)
    print(
        f"\n{runs} MLP runs: 1 worker {one_s:.2f} s, 2 workers {two_s:.2f} s -> end-to-end speed-up "
        f"{one_s / two_s:.2f}x, steady {one_pace / two_pace:.2f}x"
    )


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
