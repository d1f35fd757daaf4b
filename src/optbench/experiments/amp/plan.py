"""What ``bench amp`` times: the validated plan, the default sizes per device, the memory cap and the time
budget that trims the default sweep.

Sizes. On CUDA the default sweep runs from launch-bound to compute-bound: widths 256..8192 with
``batch = 2 * width`` (depth 4), so the smallest step is a few dozen tiny kernels (the host issuing them is
the bottleneck) and the largest is ~26 TFLOP of matmuls (width 8192: 6 * 16384 * 8192**2 * 4 FLOPs).
On CPU the default is today's small sizes: widths 256, 512, 1024 at batch 512, depth 3.

Memory. ``step_bytes`` is an upper estimate of what one configuration holds (weights, gradients, optimizer
state, autocast copies, activations, and a captured graph's own activations); a size the device cannot
hold is refused up front with one line (``--widths 300000`` needs ~4.4 TiB), and the default sweep drops
it.

Time. ``predicted_seconds`` predicts a size's cost from the measured matmul rates and the per-step floor;
the default sweep drops its largest sizes while the prediction exceeds ``budget_s`` (60 s on CUDA: an H200
keeps every width, a smaller GPU fewer). Sizes the user names are never dropped for time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.registry.precision import bf16_native, device_type, resolve_device
from optbench.spec import PRECISIONS

TF32_CHOICES = ("auto", "off", "on", "both")
OPTIMIZERS = ("adamw", "sgd")

CUDA_WIDTHS = (256, 512, 1024, 2048, 4096, 8192)
CUDA_DEPTH = 4
CUDA_BATCH_PER_WIDTH = 2  # batch = 2 * width on CUDA unless --batch is given
CPU_WIDTHS = (256, 512, 1024)
CPU_DEPTH = 3
CPU_BATCH = 512
BUDGET_S = {"cuda": 60.0, "cpu": 30.0}  # the default sweep's predicted timing cost

TARGET_BLOCKS = 7  # blocks per timing; each block runs enough steps to fill min_run_time / TARGET_BLOCKS
MAX_RUN_TIME_FACTOR = 20  # a timing stops after 20 x min_run_time even with fewer blocks (then flagged)
MAX_MIN_RUN_TIME_S = 60.0
MAX_WARMUP_STEPS = 1000
MAX_DEPTH = 256
MAX_THREADS = 4096
MEMORY_SHARE = 0.8  # a size may use at most 80 % of the free device memory


@dataclass(frozen=True)
class Config:
    """One timed configuration of a size: fp32 with TF32 off or on, or an autocast precision.

    ``key`` names its matmul rate in the ceiling: fp32 (strict), tf32, fp16 or bf16.
    """

    precision: str
    tf32: bool

    @property
    def key(self) -> str:
        return "tf32" if self.precision == "fp32" and self.tf32 else self.precision


@dataclass(frozen=True)
class AmpPlan:
    """The validated inputs of one ``amp_benchmark`` call (also written to the manifest)."""

    device: str
    sizes: tuple[tuple[int, int], ...]  # (width, batch), widths ascending
    depth: int
    precisions: tuple[str, ...]  # fp32 first
    tf32_modes: tuple[bool, ...]  # the TF32 settings fp32 is timed under
    optimizer: str
    min_run_time_s: float
    warmup_steps: int
    cuda_graphs: bool
    auto_sizes: bool  # the default sweep: trimmed to the memory and the time budget
    budget_s: float

    @property
    def on_cuda(self) -> bool:
        return device_type(self.device) == "cuda"

    @property
    def configs(self) -> tuple[Config, ...]:
        """fp32 under each TF32 setting, then each autocast precision once.

        fp16 and bf16 run no fp32 matmul (autocast casts every Linear), so the TF32 switch cannot change
        them: they are timed once, with TF32 off when strict fp32 is timed, and compared with both fp32s.
        """
        amp_tf32 = False not in self.tf32_modes
        fp32 = tuple(Config("fp32", t) for t in self.tf32_modes)
        return fp32 + tuple(Config(p, amp_tf32) for p in self.precisions if p != "fp32")

    @property
    def floor_batch(self) -> int:
        return min(batch for _, batch in self.sizes)


def make_plan(
    device: str,
    widths: Sequence[int] | None,
    depth: int | None,
    batch: int | None,
    precisions: Sequence[str] | None,
    tf32: str,
    optimizer: str,
    min_run_time_s: float,
    warmup_steps: int,
    cuda_graphs: bool,
    budget_s: float | None,
) -> AmpPlan:
    """Validate every input (one ``OptbenchError`` line naming the bad value) and fix the sizes.

    ``widths``, ``depth``, ``batch`` or ``budget_s`` None: the device's default (module docstring).
    The memory check is ``fit_to_memory``, the time budget ``fit_to_budget``.
    """
    device = resolve_device(device)
    kind = device_type(device)
    _check_scalars(min_run_time_s, warmup_steps, optimizer, budget_s)
    if cuda_graphs and kind != "cuda":
        raise OptbenchError(f"--cuda-graphs needs a CUDA device; {device} has none")
    depth = _positive("depth", depth, MAX_DEPTH) if depth is not None else _default_depth(kind)
    sizes = _sizes(kind, widths, batch)
    plan = AmpPlan(
        device=device,
        sizes=sizes,
        depth=depth,
        precisions=tuple(_choose_precisions(device, precisions)),
        tf32_modes=_tf32_modes(tf32, device),
        optimizer=optimizer,
        min_run_time_s=float(min_run_time_s),
        warmup_steps=warmup_steps,
        cuda_graphs=cuda_graphs,
        auto_sizes=widths is None,
        budget_s=float(budget_s) if budget_s is not None else BUDGET_S[kind],
    )
    return plan


def _check_scalars(min_run_time_s: float, warmup_steps: int, optimizer: str, budget_s: float | None) -> None:
    if not _finite_number(min_run_time_s) or not 0 < min_run_time_s <= MAX_MIN_RUN_TIME_S:
        raise OptbenchError(
            f"invalid min run time: {min_run_time_s} (must be > 0 and <= {MAX_MIN_RUN_TIME_S:g} seconds)"
        )
    _positive("warm-up steps", warmup_steps, MAX_WARMUP_STEPS)
    if optimizer not in OPTIMIZERS:
        raise OptbenchError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if budget_s is not None and (not _finite_number(budget_s) or budget_s <= 0):
        raise OptbenchError(f"invalid time budget: {budget_s} (must be a positive number of seconds)")


def check_threads(num_threads: int | None) -> None:
    if num_threads is not None:
        _positive("thread count", num_threads, MAX_THREADS)


def _finite_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(what: str, value, cap: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
        raise OptbenchError(f"invalid {what}: {value!r} (must be an integer from 1 to {cap})")
    return value


def _default_depth(kind: str) -> int:
    return CUDA_DEPTH if kind == "cuda" else CPU_DEPTH


def _sizes(kind: str, widths: Sequence[int] | None, batch: int | None) -> tuple[tuple[int, int], ...]:
    """(width, batch) per size, widths ascending; batch None: 2 x width on CUDA, 512 on CPU."""
    if widths is None:
        widths = CUDA_WIDTHS if kind == "cuda" else CPU_WIDTHS
    widths = list(widths)
    if not widths:
        raise OptbenchError("no widths given; e.g. --widths 1024,2048,4096")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise OptbenchError(f"invalid width: {width!r} (must be a positive integer)")
    if len(set(widths)) != len(widths):
        raise OptbenchError(f"duplicate width in {widths}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise OptbenchError(f"invalid batch: {batch!r} (must be a positive integer)")

    def batch_of(width: int) -> int:
        if batch is not None:
            return batch
        return CUDA_BATCH_PER_WIDTH * width if kind == "cuda" else CPU_BATCH

    return tuple((w, batch_of(w)) for w in sorted(widths))


def default_precisions(device: str) -> list[str]:
    """fp32 plus the fast precisions: cuda: fp16, and bf16 where the GPU has it natively; cpu: bf16, and
    fp16 where torch has native fp16 CPU kernels (AVX512-FP16 or AMX-FP16)."""
    if device_type(device) == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if bf16_native(device) else [])
    from optbench.experiments.amp.ceiling import cpu_native

    return ["fp32", "bf16"] + (["fp16"] if cpu_native("fp16")[0] else [])


def _choose_precisions(device: str, precisions: Sequence[str] | None) -> list[str]:
    if not precisions:
        return default_precisions(device)
    for precision in precisions:
        if precision not in PRECISIONS:
            raise OptbenchError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return ["fp32"] + [p for p in dict.fromkeys(precisions) if p != "fp32"]


def _tf32_modes(tf32: str, device: str) -> tuple[bool, ...]:
    if tf32 not in TF32_CHOICES:
        raise OptbenchError(f"unknown TF32 setting {tf32!r}; valid: {', '.join(TF32_CHOICES)}")
    on_cuda = device_type(device) == "cuda"
    if tf32 == "auto":
        return (False, True) if on_cuda else (False,)
    if not on_cuda and tf32 != "off":
        raise OptbenchError(f"--tf32 {tf32}: TF32 is a CUDA matmul mode; on {device} use --tf32 off")
    return {"off": (False,), "on": (True,), "both": (False, True)}[tf32]


# ------------------------------------------------------------------------------------------ memory


def step_bytes(width: int, batch: int, depth: int, optimizer: str, graphs: bool) -> int:
    """Upper estimate of the bytes one configuration holds at its peak.

    P = depth * (width**2 + width) parameters: fp32 weights and gradients (4P each), AdamW's two moments
    (8P; SGD's momentum 4P), autocast's 16-bit weight copies (2P). A = batch * width activations: input,
    target, output and its gradient (4 * 4A), and per layer ~12A (input, pre-activation, ReLU output,
    their gradients, 16-bit copies). A captured CUDA graph keeps its own activations and gradients.
    Width 8192, batch 16384, depth 4, AdamW, with a graph: ~19.5 GiB; width 300000, batch 512, depth 3:
    ~4.4 TiB.
    """
    params = depth * (width * width + width)
    acts = batch * width
    state = 8 if optimizer == "adamw" else 4
    total = (4 + 4 + state + 2) * params + 16 * acts + 12 * acts * depth
    if graphs:
        total += 4 * params + 12 * acts * depth
    return total


def available_bytes(device: str) -> int | None:
    """Free memory on the device: ``torch.cuda.mem_get_info`` on CUDA, MemAvailable on CPU (None: unknown)."""
    if device_type(device) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fit_to_memory(plan: AmpPlan) -> tuple[AmpPlan, list[str]]:
    """Drop default sizes that would not fit (with a note each); refuse a named size that would not."""
    free = available_bytes(plan.device)
    if free is None:
        return plan, []
    graphs = plan.on_cuda  # every CUDA row captures its step once (device time)
    kept, notes = [], []
    for width, batch in plan.sizes:
        need = step_bytes(width, batch, plan.depth, plan.optimizer, graphs)
        if need <= MEMORY_SHARE * free:
            kept.append((width, batch))
            continue
        text = (
            f"width {width} (batch {batch}, depth {plan.depth}) needs ~{_size(need)} (weights, "
            f"{plan.optimizer} state, activations), more than {MEMORY_SHARE:.0%} of the {_size(free)} "
            f"free on {plan.device}"
        )
        if not plan.auto_sizes:
            raise OptbenchError(f"{text}; use a smaller --widths or --batch")
        notes.append(f"{text}: left out of the default sweep")
    if not kept:
        raise OptbenchError(f"no default width fits in the memory of {plan.device}: {notes[0]}")
    return _replace_sizes(plan, kept), notes


def _size(n: float) -> str:
    """Bytes in GiB below 1 TiB, else in TiB: ``4.43 TiB``, ``19.5 GiB``."""
    return f"{n / 2**40:.3g} TiB" if n >= 2**40 else f"{n / 2**30:.3g} GiB"


def _replace_sizes(plan: AmpPlan, sizes) -> AmpPlan:
    from dataclasses import replace

    return replace(plan, sizes=tuple(sizes))


# -------------------------------------------------------------------------------------------- time


def flops_per_step(width: int, batch: int, depth: int) -> int:
    """6 * batch * width**2 * depth: forward 2, backward 4 FLOPs per weight and sample."""
    return 6 * batch * width * width * depth


def predicted_seconds(
    plan: AmpPlan, width: int, batch: int, rates: dict[str, float], floor_s: float
) -> float:
    """Predicted cost of timing one size: per configuration, warm-up plus ``TARGET_BLOCKS`` blocks of at
    least ``min_run_time_s`` in all (plus the graph's capture and replays on CUDA), each step taking
    ``floor_s + flops / rate`` with the matmul rate of the ceiling."""
    flops = flops_per_step(width, batch, plan.depth)
    total = 0.0
    for config in plan.configs:
        rate = rates.get(config.key) or rates.get("fp32")
        step = floor_s + (flops / rate if rate else 0.0)
        steps = plan.warmup_steps + max(plan.min_run_time_s / step, TARGET_BLOCKS)
        if plan.on_cuda:
            steps += 4 + 3  # capture warm-up and capture, the device-time replays
            if plan.cuda_graphs:
                steps += max(plan.min_run_time_s / step, TARGET_BLOCKS)
        total += steps * step + 0.05  # + building the model
    return total


def fit_to_budget(plan: AmpPlan, rates: dict[str, float], floor_s: float) -> tuple[AmpPlan, list[str], float]:
    """Drop the default sweep's largest sizes while its predicted cost exceeds ``plan.budget_s``.

    Returns the plan, a note per dropped size, and the predicted seconds of what is kept. Named sizes
    (``auto_sizes`` False) are kept whatever their cost.
    """
    costs = [predicted_seconds(plan, w, b, rates, floor_s) for w, b in plan.sizes]
    keep = len(costs)
    if plan.auto_sizes:
        while keep > 1 and sum(costs[:keep]) > plan.budget_s:
            keep -= 1
    notes = [
        f"width {w} (batch {b}) left out of the default sweep: timing it would take ~{costs[i]:.0f} s, "
        f"over the {plan.budget_s:g} s budget (raise --budget, or name it with --widths)"
        for i, (w, b) in enumerate(plan.sizes)
        if i >= keep
    ]
    return _replace_sizes(plan, plan.sizes[:keep]), notes, sum(costs[:keep])
