"""``amp_benchmark``: plan, measure the ceiling and the per-step floor, time every size and configuration,
then write amp.parquet, the figures and the manifest (with the summary)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.errors import NotApplicable
from optbench.experiments.amp import table
from optbench.experiments.amp.ceiling import cpu_native, matmul_size, measure_ceiling
from optbench.experiments.amp.plan import (
    AmpPlan,
    Config,
    check_threads,
    fit_to_budget,
    fit_to_memory,
    flops_per_step,
    make_plan,
)
from optbench.experiments.amp.timing import measure, step_floor_s
from optbench.store.layout import AMP_FILE

PLOT_FILE = "amp.png"  # speed-up bars per width
SCALING_PLOT_FILE = "amp_scaling.png"  # speed-up vs width, with the ceiling


@dataclass
class AmpResult:
    """What ``amp_benchmark`` measured and where it wrote it."""

    out: Path
    rows: list[dict[str, Any]]
    device: str
    device_name: str
    torch_version: str
    cuda_version: str | None
    num_threads: int
    tf32_modes: tuple[bool, ...]
    ceiling_n: int = 0
    ceiling_tflops: dict[str, float] = field(default_factory=dict)  # fp32, tf32, fp16, bf16
    summary: list[str] = field(default_factory=list)  # the answer, a few lines
    targets: dict[str, Any] = field(default_factory=dict)  # the numbers behind the summary
    warnings: list[str] = field(default_factory=list)  # each message once, naming its rows
    elapsed_s: float = 0.0

    @property
    def parquet(self) -> Path:
        return self.out / AMP_FILE

    @property
    def plot(self) -> Path:
        return self.out / PLOT_FILE

    @property
    def scaling_plot(self) -> Path:
        return self.out / SCALING_PLOT_FILE

    def frame(self):
        """The rows as a pandas DataFrame with the Parquet's dtypes."""
        from optbench.store import table_from_rows

        return table_from_rows(self.rows, table.amp_schema()).to_pandas()


def amp_benchmark(
    device: str = "auto",
    widths: Sequence[int] | None = None,
    depth: int | None = None,
    batch: int | None = None,
    precisions: Sequence[str] | None = None,
    tf32: str = "auto",
    optimizer: str = "adamw",
    min_run_time_s: float = 0.5,
    warmup_steps: int = 3,
    num_threads: int | None = None,
    cuda_graphs: bool = False,
    budget_s: float | None = None,
    out: Path | str | None = None,
    plot: bool = True,
    progress: Callable[[str], None] | None = None,
) -> AmpResult:
    """Time one MLP training step per size x configuration; write Parquet, figures and the manifest.

    Args:
        device: ``auto|cpu|cuda|cuda:N`` (``optbench.registry.precision.resolve_device``).
        widths: hidden widths, each layer ``Linear(width, width)``. None: the device's sweep (CUDA
            256..8192, trimmed to memory and ``budget_s``; CPU 256, 512, 1024).
        depth: Linear layers (None: 4 on CUDA, 3 on CPU).
        batch: rows per step (None: 2 x width on CUDA, 512 on CPU).
        precisions: subset of fp32, fp16, bf16 (None: fp32 plus the device's fast ones, see
            ``plan.default_precisions``). fp32 is always added: it is the baseline. A precision the device
            cannot really run gets a row with null timings and the reason.
        tf32: which fp32 baselines: ``off``, ``on``, ``both`` or ``auto`` (both on CUDA, off on CPU).
        optimizer: ``adamw`` (lr 1e-4, default) or ``sgd`` (lr 1e-3, momentum 0.9); fused on CUDA.
        min_run_time_s: timed seconds per configuration, in at least 7 blocks (default 0.5).
        warmup_steps: untimed steps first (optimizer state, the scaler's scale, cuBLAS/oneDNN setup).
        num_threads: torch intra-op threads for the whole benchmark (default: torch's own).
        cuda_graphs: also replay the step captured as one CUDA graph and time that (CUDA only).
        budget_s: predicted seconds the default sweep may take (60 on CUDA, 30 on CPU).
        out: results folder (default ``results/amp-<time>``).
        plot: write amp.png and amp_scaling.png.
        progress: called with one line per phase and configuration.
    """
    from optbench import store
    from optbench.engine.runtime import torch_threads

    plan = make_plan(
        device, widths, depth, batch, precisions, tf32, optimizer, min_run_time_s, warmup_steps,
        cuda_graphs, budget_s,
    )  # fmt: skip
    check_threads(num_threads)
    plan, memory_notes = fit_to_memory(plan)
    out = Path(out) if out is not None else store.default_out("amp")
    with torch_threads(num_threads):
        return _run(plan, out, plot, progress or (lambda line: None), memory_notes)


def _device_facts(plan: AmpPlan) -> dict[str, Any]:
    """The evidence every row carries (versions from ``store.environment``) and what the warnings need."""
    import torch

    from optbench import store

    env = store.environment()
    facts = {
        "torch_version": env["torch"],
        "cuda_version": torch.version.cuda,
        "num_threads": torch.get_num_threads(),
        "on_cuda": plan.on_cuda,
    }
    if plan.on_cuda:
        props = torch.cuda.get_device_properties(plan.device)
        facts |= {"device_name": props.name, "tf32_capable": props.major >= 8}
    else:
        native = {p: cpu_native(p) for p in plan.precisions if p != "fp32"}
        facts |= {"device_name": env["cpu"], "tf32_capable": False, "cpu_native": native}
    return facts


def _run(plan: AmpPlan, out: Path, plot: bool, say: Callable[[str], None], notes: list[str]) -> AmpResult:
    from optbench import store

    started = time.perf_counter()
    facts = _device_facts(plan)
    record = {**dataclasses.asdict(plan), "device_name": facts["device_name"]}
    manifest = store.start_manifest(out, "amp", extra={"amp": record})

    n = matmul_size(plan.device)
    keys = list(dict.fromkeys(c.key for c in plan.configs))
    say(f"ceiling: {n}x{n} matmuls in {', '.join(keys)}")
    rates, ceiling_notes = measure_ceiling(plan.device, keys, n)
    say(f"overhead floor: width {table.FLOOR_WIDTH}, fp32")
    facts["floor_s"] = step_floor_s(plan, table.FLOOR_WIDTH)
    plan, budget_notes, predicted_s = fit_to_budget(plan, rates, facts["floor_s"])
    say(f"{len(plan.sizes)} sizes x {len(plan.configs)} configurations, predicted ~{predicted_s:.0f} s")
    rows = [_measure(plan, w, b, c, facts, say) for w, b in plan.sizes for c in plan.configs]

    table.discard_wrong_dtypes(rows)
    table.add_ratios(rows, rates)
    table.add_warnings(rows, facts)
    rows, row_warnings = table.finish_rows(rows)
    summary = table.summary(rows, rates)
    result = AmpResult(
        out=out,
        rows=rows,
        device=plan.device,
        device_name=facts["device_name"],
        torch_version=facts["torch_version"],
        cuda_version=facts["cuda_version"],
        num_threads=facts["num_threads"],
        tf32_modes=plan.tf32_modes,
        ceiling_n=n,
        ceiling_tflops={k: v / 1e12 for k, v in rates.items()},
        summary=summary["lines"],
        targets=summary["targets"],
        warnings=notes + budget_notes + ceiling_notes + row_warnings,
    )
    files = _write(result, plot)
    result.elapsed_s = time.perf_counter() - started
    store.finish_manifest(
        out,
        manifest,
        files=files,
        warnings=result.warnings,
        amp_ceiling={"n": n, "tflops": result.ceiling_tflops},
        amp_summary={"lines": result.summary, "targets": result.targets},
        amp_sizes=[list(size) for size in plan.sizes],
        elapsed_s=result.elapsed_s,
    )
    return result


def _measure(
    plan: AmpPlan, width: int, batch: int, config: Config, facts: dict[str, Any], say: Callable[[str], None]
) -> dict[str, Any]:
    """One row: the timing (or why there is none); its notes stay in ``row["notes"]`` for the table."""
    import torch

    row = {
        "width": width,
        "depth": plan.depth,
        "batch": batch,
        "precision": config.precision,
        "tf32": config.tf32,
        "device": plan.device,
        "optimizer": plan.optimizer,
        "flops_per_step": flops_per_step(width, batch, plan.depth),
        "overhead_floor_s": facts["floor_s"],
        "notes": [],
        **{k: facts[k] for k in ("device_name", "num_threads", "torch_version", "cuda_version")},
    }
    tf32 = " (TF32 on)" if config.precision == "fp32" and config.tf32 else ""
    say(f"width {width} (batch {batch}), {config.precision}{tf32}")
    try:
        timing = measure(plan, width, batch, config)
    except NotApplicable as err:
        row["notes"].append(f"{err}; not measured")
        return row
    except torch.OutOfMemoryError:
        row["notes"].append(f"out of memory on {plan.device}; not measured")
        return _after_failure(row, plan)
    except RuntimeError as err:  # a configuration that fails is data, not the end of the benchmark
        first = (str(err).splitlines() or [""])[0][:200]
        row["notes"].append(f"failed ({type(err).__name__}: {first}); not measured")
        return _after_failure(row, plan)
    row["notes"] += timing.pop("notes")
    row.update(timing)
    row["achieved_tflops"] = row["flops_per_step"] / row["median_s"] / 1e12
    return row


def _after_failure(row: dict[str, Any], plan: AmpPlan) -> dict[str, Any]:
    """Free what the failed configuration held (its frames are gone once the exception is handled)."""
    import gc

    import torch

    gc.collect()
    if plan.on_cuda:
        torch.cuda.empty_cache()
    return row


def _write(result: AmpResult, plot: bool) -> list[str]:
    from optbench import store

    store.write_parquet_atomic(store.table_from_rows(result.rows, table.amp_schema()), result.parquet)
    files = [AMP_FILE]
    if plot:
        from optbench.figures.amp import plot_amp, plot_scaling

        frame = result.frame()
        plot_amp(frame, result.plot)
        plot_scaling(frame, result.scaling_plot)
        files += [PLOT_FILE, SCALING_PLOT_FILE]
    return files
