"""What sharpness tracking costs a run: the reference engine with ``sharpness_every`` = 100 (the cadence the
docs recommend, ``DEFAULT_EVERY``) against the same run without it, on MLP runs.

Target (issue #18): at most 25% more time on the full-batch edge-of-stability run of the README (mlp-regression,
width 32, depth 2, tanh, 256 rows, 2,000 steps: 20 measurements of ~8 warm-started Hessian-vector
products each). A minibatch run pays more per step, since each measurement is on the whole training set
while a step sees one batch: that ratio is measured too, for the docs, not held to the target. Both sides are
timed in this one run, interleaved, best of several repeats; the ratios are printed and kept in
``extra_info``, never asserted (timings belong here, not in tests/).

    pytest bench/test_sharpness_cost.py --benchmark-only -s
"""

from __future__ import annotations

import time

import torch

from optbench.engine.reference import run
from optbench.registry.validate import canonical_config
from optbench.spec import RunConfig

DEFAULT_EVERY = 100
FULL_BATCH = RunConfig(
    problem="mlp-regression(activation='tanh', depth=2, n_train=256, width=32)",
    lr=0.1,
    steps=2000,
    batch_size=256,
)
MINIBATCH = RunConfig(problem="mlp-classification", lr=0.1, steps=1000)  # 1,536 rows, batches of 64


def _best_of_interleaved(a, b, repeats: int = 5) -> tuple[float, float]:
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((a, b)):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def _cost(config: RunConfig) -> tuple[float, float, float]:
    plain = canonical_config(config)
    tracked = plain.replace(sharpness_every=DEFAULT_EVERY)
    run(tracked.replace(steps=DEFAULT_EVERY + 1))  # warm-up: torch.func's first call, allocator
    plain_s, tracked_s = _best_of_interleaved(lambda: run(plain), lambda: run(tracked))
    return plain_s, tracked_s, tracked_s / plain_s - 1


def test_sharpness_tracking_cost_at_the_default_cadence(benchmark):
    torch.set_num_threads(1)
    plain_s, tracked_s, overhead = _cost(FULL_BATCH)
    mb_plain_s, mb_tracked_s, mb_overhead = _cost(MINIBATCH)
    benchmark.extra_info.update(
        full_batch_plain_s=plain_s,
        full_batch_tracked_s=tracked_s,
        full_batch_overhead=overhead,
        full_batch_target=0.25,
        minibatch_plain_s=mb_plain_s,
        minibatch_tracked_s=mb_tracked_s,
        minibatch_overhead=mb_overhead,
    )
    print(
        f"\nfull batch (EoS run, 2000 steps): {plain_s:.3f} s plain, {tracked_s:.3f} s tracked every "
        f"{DEFAULT_EVERY}: +{100 * overhead:.0f}% (target <= 25%)\n"
        f"minibatch (mlp-classification, 1000 steps of 64 rows): {mb_plain_s:.3f} s plain, {mb_tracked_s:.3f} s "
        f"tracked: +{100 * mb_overhead:.0f}%"
    )
    benchmark.pedantic(
        run, args=(canonical_config(FULL_BATCH).replace(sharpness_every=DEFAULT_EVERY),), rounds=1
    )
