"""Timing one configuration: wall time per step in blocks, peak memory, and on CUDA the device time of the
step's kernels and (``--cuda-graphs``) the wall time of replaying the captured step.

Wall time. ``time_blocks`` runs the step in ``TARGET_BLOCKS`` (7) blocks of ``number`` steps, with
``number`` chosen from a warm-up step so that the blocks fill ``min_run_time_s``, and reads the clock after
synchronising the device at both ends of a block (as ``torch.utils.benchmark.Timer`` does). Median and IQR
are over the blocks' per-step times. Fixing the block count is why it is not ``blocked_autorange``: that
picks powers of ten steps per block and can stop after one block, which reports an IQR of 0.000.

Device time (CUDA). The step is captured once as a CUDA graph; ``count`` back-to-back replays are timed
with CUDA events, after ``torch.cuda._sleep`` has given the host a head start so that the queue never runs
dry: the events then see only the kernels. A step whose device time is well under its wall time is bound
by the host issuing kernels (launch-bound), not by the GPU.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass
from typing import Any

from optbench.experiments.amp.plan import MAX_RUN_TIME_FACTOR, TARGET_BLOCKS, AmpPlan, Config
from optbench.experiments.amp.step import TrainingStep, tf32_matmuls

DEVICE_REPEATS = 3  # device time = median of 3 event-timed runs of `count` replays
DEVICE_RUN_S = 0.02  # each of those runs lasts about this long
HEAD_START_CYCLES = 10_000_000  # torch.cuda._sleep before the events: ~5 ms at 2 GHz


@dataclass(frozen=True)
class Blocks:
    """Per-step times of one timing: median and IQR over ``n_blocks`` blocks of ``number`` steps."""

    median_s: float
    iqr_s: float
    number: int
    n_blocks: int


def _sync(device: str):
    import torch

    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_blocks(fn, device: str, min_run_time_s: float, step_estimate_s: float) -> Blocks:
    """Time ``fn`` (one step) in at least ``TARGET_BLOCKS`` blocks filling ``min_run_time_s``; stops after
    ``MAX_RUN_TIME_FACTOR * min_run_time_s`` even with fewer blocks (then ``n_blocks`` says so)."""
    import numpy as np

    sync = _sync(device)
    number = max(1, int(min_run_time_s / (TARGET_BLOCKS * max(step_estimate_s, 1e-9))))
    limit = MAX_RUN_TIME_FACTOR * min_run_time_s
    times, total = [], 0.0
    while (len(times) < TARGET_BLOCKS or total < min_run_time_s) and not (times and total >= limit):
        sync()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        elapsed = time.perf_counter() - start
        times.append(elapsed / number)
        total += elapsed
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return Blocks(float(median), float(q3 - q1), number, len(times))


def _timed_once(fn, device: str) -> tuple[Any, float]:
    sync = _sync(device)
    sync()
    start = time.perf_counter()
    value = fn()
    sync()
    return value, time.perf_counter() - start


def step_floor_s(plan: AmpPlan, width: int) -> float:
    """Median wall time of the fp32 step (TF32 off) at ``width`` and the sweep's smallest batch."""
    with tf32_matmuls(False, plan.device):
        step = TrainingStep(plan.device, width, plan.depth, plan.floor_batch, "fp32", plan.optimizer)
        step.warm_up(plan.warmup_steps)
        _, estimate = _timed_once(step.eager, plan.device)
        return time_blocks(step.eager, plan.device, plan.min_run_time_s, estimate).median_s


def measure(plan: AmpPlan, width: int, batch: int, config: Config) -> dict[str, Any]:
    """Time one configuration; returns the measured columns and ``notes`` about the measurement."""
    import torch

    on_cuda = plan.on_cuda
    if on_cuda:
        gc.collect()
        torch.cuda.synchronize(plan.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(plan.device)
    with tf32_matmuls(config.tf32, plan.device):
        step = TrainingStep(plan.device, width, plan.depth, batch, config.precision, plan.optimizer)
        dtypes = step.warm_up(plan.warmup_steps)
        _, estimate = _timed_once(step.eager, plan.device)
        wall = time_blocks(step.eager, plan.device, plan.min_run_time_s, estimate)
        row = {
            "median_s": wall.median_s,
            "iqr_s": wall.iqr_s,
            "number_per_run": wall.number,
            "n_blocks": wall.n_blocks,
            "compute_dtype": ",".join(sorted(str(d).removeprefix("torch.") for d in dtypes)),
            "notes": [],
        }
        if on_cuda:
            torch.cuda.synchronize(plan.device)
            row["peak_mem_bytes"] = int(torch.cuda.max_memory_allocated(plan.device))
            graph = _graph_times(plan, step, wall.median_s)
            row["notes"] += graph.pop("notes", [])
            row.update(graph)
        if step.scaler is not None:
            row["final_loss_scale"] = float(step.scaler.get_scale())
    del step
    if on_cuda:
        gc.collect()
        torch.cuda.empty_cache()
    return row


def _graph_times(plan: AmpPlan, step: TrainingStep, wall_s: float) -> dict[str, Any]:
    """Capture the step; device time of its replays, and with --cuda-graphs the replays' wall time.

    A step that cannot be captured or replayed keeps its eager timing; the row says why (``graph_status``).
    """
    try:
        graph = step.capture()
    except Exception as err:  # noqa: BLE001 - any capture failure falls back to the eager timing
        return _graph_failure("capture", err, plan.device)
    try:
        count = max(1, min(100, round(DEVICE_RUN_S / max(wall_s, 1e-9))))
        out: dict[str, Any] = {
            "graph_status": "captured",
            "device_s": device_time_s(graph, plan.device, count),
        }
        if plan.cuda_graphs:
            _, estimate = _timed_once(graph.replay, plan.device)
            replay = time_blocks(graph.replay, plan.device, plan.min_run_time_s, estimate)
            out.update(
                graph_median_s=replay.median_s, graph_iqr_s=replay.iqr_s, graph_n_blocks=replay.n_blocks
            )
        return out
    except Exception as err:  # noqa: BLE001 - as above: the eager timing stands
        return _graph_failure("replay", err, plan.device)
    finally:
        step.opt.zero_grad(set_to_none=True)  # the gradients live in the graph's memory pool
        del graph


def _graph_failure(what: str, err: Exception, device: str) -> dict[str, Any]:
    """The row's graph columns after a failed capture or replay: the reason, and a note."""
    _recover(device)
    reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
    return {
        "graph_status": f"{what} failed: {reason}",
        "notes": [f"CUDA graph {what} failed ({reason}); eager timing only, no device time"],
    }


def device_time_s(graph, device: str, count: int) -> float:
    """Seconds of GPU time per replay: CUDA events around ``count`` replays queued behind a sleep kernel."""
    import numpy as np
    import torch

    sleep = getattr(torch.cuda, "_sleep", None)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    with torch.cuda.device(device):
        torch.cuda.synchronize()
        for _ in range(DEVICE_REPEATS):
            if sleep is not None:
                sleep(HEAD_START_CYCLES)  # the GPU waits here while the host queues the replays
            start.record()
            for _ in range(count):
                graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / count)
    return float(np.median(times))


def _recover(device: str) -> None:
    """After a failed capture: wait for the device and free the half-captured graph's memory."""
    import torch

    gc.collect()
    with contextlib.suppress(RuntimeError):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
