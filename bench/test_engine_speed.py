"""Per-step cost of the reference engine vs a bare hand-written SGD loop that calls .item() every step.

Target (Foundation issue): the harness (trace on device, norms, divergence checks, scheduler) costs no
more than the bare loop. Both are timed in this one run, best of several repeats; the ratio is printed
and stored in ``extra_info``, never asserted (timings belong here, not in tests/).

    pytest bench/test_engine_speed.py --benchmark-only -s
"""

from __future__ import annotations

import time

import torch

from loops import bare_sgd_loop
from optbench.engine.reference import run
from optbench.spec import RunConfig

STEPS = 2000


def _best_of_interleaved(a, b, repeats: int = 9) -> tuple[float, float]:
    """Best wall time of each of two functions, timed alternately so that load from other processes
    falls on both sides alike."""
    best_a = best_b = float("inf")
    for _ in range(repeats):
        for fn, which in ((a, "a"), (b, "b")):
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if which == "a":
                best_a = min(best_a, elapsed)
            else:
                best_b = min(best_b, elapsed)
    return best_a, best_b


def test_engine_step_cost_vs_bare_loop(benchmark):
    torch.set_num_threads(1)
    config = RunConfig(problem="quadratic", optimizer="sgd", lr=0.01, steps=STEPS)
    run(config)  # warm-up: imports, allocator
    bare_sgd_loop(0.01, STEPS)
    bare_s, engine_s = _best_of_interleaved(lambda: bare_sgd_loop(0.01, STEPS), lambda: run(config))
    ratio = engine_s / bare_s
    benchmark.extra_info.update(
        bare_us_per_step=1e6 * bare_s / STEPS,
        engine_us_per_step=1e6 * engine_s / STEPS,
        engine_over_bare_x=ratio,
    )
    print(
        f"\nbare loop {1e6 * bare_s / STEPS:.1f} us/step, engine {1e6 * engine_s / STEPS:.1f} us/step, "
        f"engine/bare = {ratio:.2f}x"
    )
    benchmark.pedantic(run, args=(config,), rounds=3, iterations=1)
