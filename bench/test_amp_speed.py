"""``bench amp``'s targets, each measured in one run of the command on this machine (issue #16).

Run with ``python -m pytest bench/test_amp_speed.py --benchmark-only -s``. Nothing here asserts a timing;
the numbers are printed and kept in ``benchmark.extra_info`` (``--benchmark-json=out.json`` keeps them).
Targets:

- CPU: ``bench amp`` with no options finishes in under a minute, and every fp16/bf16 row slower than fp32
  carries a warning that explains it (``unexplained_rows`` = 0).
- CUDA (H200-class GPU), ``bench amp`` with no options: under 2 minutes; at the largest width fp16 and bf16
  reach >= 80 % of the ceiling over fp32 with TF32 off and over fp32 with TF32 (``share_*``).
- CUDA, ``bench amp --cuda-graphs``: at the smallest width the replayed step is >= 3x faster than the eager
  one (``graph_over_eager_smallest``).
"""

from __future__ import annotations

import time

import pytest
import torch

from optbench.experiments.amp import amp_benchmark

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _run_once(benchmark, **kwargs):
    """Run the benchmark command once (no options beyond ``kwargs``), timed end to end."""
    holder = {}

    def run():
        started = time.perf_counter()
        holder["result"] = amp_benchmark(**kwargs)
        holder["elapsed_s"] = time.perf_counter() - started

    benchmark.pedantic(run, rounds=1, iterations=1)
    return holder["result"], holder["elapsed_s"]


def _unexplained(result) -> list[str]:
    return [
        f"width {r['width']}, {r['precision']}"
        for r in result.rows
        if r["precision"] != "fp32" and r["speedup"] is not None and r["speedup"] < 1 and not r["warning"]
    ]


def _report(benchmark, result, elapsed_s: float) -> None:
    benchmark.extra_info.update(
        elapsed_s=elapsed_s,
        device=result.device_name,
        ceiling_tflops=result.ceiling_tflops,
        targets=result.targets,
        unexplained_rows=_unexplained(result),
        rows=[
            {k: r[k] for k in ("width", "batch", "precision", "tf32", "median_s", "device_s", "speedup")}
            for r in result.rows
        ],
    )
    print(f"\n{result.device_name}: bench amp took {elapsed_s:.1f} s")
    for line in result.summary:
        print(f"  {line}")
    print(f"  rows slower than fp32 without an explanation: {_unexplained(result) or 'none'}")


def test_amp_on_cpu_with_no_options(benchmark, tmp_path):
    result, elapsed_s = _run_once(benchmark, device="cpu", out=tmp_path / "amp")
    _report(benchmark, result, elapsed_s)
    print(f"  target: under 60 s -> {elapsed_s:.1f} s")


@pytest.mark.cuda
@cuda
def test_amp_on_cuda_with_no_options(benchmark, tmp_path):
    result, elapsed_s = _run_once(benchmark, device="cuda", out=tmp_path / "amp")
    _report(benchmark, result, elapsed_s)
    shares = {
        f"share_{precision}_over_{base}": numbers["share"]
        for precision, by_base in result.targets["largest"].items()
        for base, numbers in by_base.items()
        if numbers
    }
    benchmark.extra_info.update(shares)
    print(
        f"  target: under 120 s -> {elapsed_s:.1f} s; >= 80 % of the ceiling at the largest width -> {shares}"
    )


@pytest.mark.cuda
@cuda
def test_amp_on_cuda_with_graphs(benchmark, tmp_path):
    result, elapsed_s = _run_once(benchmark, device="cuda", cuda_graphs=True, out=tmp_path / "amp")
    _report(benchmark, result, elapsed_s)
    ratios = result.targets["graph_over_eager_smallest"]
    benchmark.extra_info["graph_over_eager_smallest"] = ratios
    print(f"  target: the smallest width's step >= 3x faster replayed than eager -> {ratios}")
