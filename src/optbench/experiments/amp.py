"""``bench amp``: how much faster is a mixed-precision training step than an fp32 one, on this device?

For every width and precision this times one full training step of an MLP ::

    x (batch, width) -> [Linear(width, width) -> ReLU] x (depth - 1) -> Linear(width, width) -> MSE(., y)
    step = zero_grad; forward under autocast; backward (scaled for fp16); optimizer.step (via the scaler)

with ``torch.utils.benchmark.Timer.blocked_autorange`` (its timer synchronises CUDA before reading the
clock) after ``warmup_steps`` untimed steps, and records the median and interquartile range of the
per-step time. Precision semantics are ``optbench.precision``'s. The optimizer is AdamW (lr 1e-4) by
default: real mixed-precision training mostly uses Adam-type optimizers, and their step over the fp32
master weights is a part of the step autocast does *not* speed up; ``optimizer="sgd"`` (lr 1e-3,
momentum 0.9) is the lighter alternative.

    speedup = median(fp32) / median(precision)      same width, same TF32 setting; fp32 rows are 1.0
    flops_per_step = 6 * batch * width**2 * depth   forward 2, backward 4 FLOPs per weight and sample

"Too small to occupy the device" is measured, not guessed: the same step at width 8 (same depth and
batch, fp32) is timed once as the *overhead floor* -- kernel launches, Python, autocast and optimizer
bookkeeping, none of which shrinks with precision. When the floor is at least ``OVERHEAD_SHARE_LIMIT``
(50 %) of a width's fp32 step, no precision can speed that step up by much (at most 1 / 0.5 = 2x even
with infinitely fast matmuls), and every row of that width carries a warning. Examples on the CPU this
was written on (1 thread, AdamW): depth 3, batch 512: floor 0.39 ms, fp32 step at width 256 5.1 ms
(floor = 8 %) -> no warning; depth 2, batch 32: floor 0.27 ms, width 16 0.27 ms (100 %) -> warned.

Peak memory is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` per configuration
(weights, AdamW state, gradients, activations, the autocast weight-cast cache). On CPU torch keeps no
allocator statistics, so ``peak_mem_bytes`` is null there (process RSS would mix in everything else).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.precision import (
    AUTOCAST_DTYPES,
    bf16_native,
    check_precision,
    device_type,
    resolve_device,
)
from optbench.spec import PRECISIONS
from optbench.store.layout import AMP_FILE

PLOT_FILE = "amp.png"
TF32_CHOICES = ("auto", "off", "on", "both")
OPTIMIZERS = ("adamw", "sgd")
OVERHEAD_SHARE_LIMIT = 0.5  # warn when the width-8 step takes >= 50 % of a width's fp32 step
FLOOR_WIDTH = 8
NOISY_IQR_SHARE = 0.10  # warn when IQR > 10 % of the median (torch.utils.benchmark's own threshold)


def amp_schema():
    """Explicit schema of amp.parquet: one row per (width, tf32, precision)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("width", pa.int64()),
            ("depth", pa.int64()),
            ("batch", pa.int64()),
            ("precision", pa.string()),
            ("tf32", pa.bool_()),  # were TF32 matmuls allowed (torch.backends.cuda.matmul.allow_tf32)
            ("median_s", pa.float64()),  # per training step; null when the precision could not run
            ("iqr_s", pa.float64()),
            ("speedup", pa.float64()),  # median_s(fp32) / median_s, same width and tf32
            ("peak_mem_bytes", pa.int64()),  # CUDA only; null on CPU
            ("device", pa.string()),  # cpu, cuda, cuda:1
            ("device_name", pa.string()),  # GPU name, or the CPU model
            ("compute_dtype", pa.string()),  # dtype of the model output seen during warm-up
            ("optimizer", pa.string()),
            ("flops_per_step", pa.int64()),
            ("achieved_tflops", pa.float64()),
            ("overhead_floor_s", pa.float64()),  # the width-8 step (see module docstring)
            ("number_per_run", pa.int64()),  # steps per timed block
            ("n_blocks", pa.int64()),  # timed blocks behind median and IQR
            ("final_loss_scale", pa.float64()),  # GradScaler scale after timing (fp16 only)
            ("num_threads", pa.int64()),  # torch intra-op threads (what matters on CPU)
            ("torch_version", pa.string()),
            ("cuda_version", pa.string()),
            ("warning", pa.string()),  # one warning per line, null when none
        ]
    )


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
    warnings: list[str] = field(default_factory=list)  # unique, in order of appearance

    @property
    def parquet(self) -> Path:
        return self.out / AMP_FILE

    @property
    def plot(self) -> Path:
        return self.out / PLOT_FILE

    def frame(self):
        """The rows as a pandas DataFrame with the Parquet's dtypes."""
        from optbench.store import table_from_rows

        return table_from_rows(self.rows, amp_schema()).to_pandas()


# ------------------------------------------------------------------------------------------- the API


@dataclass(frozen=True)
class AmpPlan:
    """The validated inputs of one ``amp_benchmark`` call (also written to the manifest)."""

    device: str
    widths: tuple[int, ...]
    depth: int
    batch: int
    precisions: tuple[str, ...]  # fp32 first
    tf32_modes: tuple[bool, ...]
    optimizer: str
    min_run_time_s: float
    warmup_steps: int


def amp_benchmark(
    device: str = "auto",
    widths: Sequence[int] = (1024, 2048, 4096),
    depth: int = 3,
    batch: int = 512,
    precisions: Sequence[str] | None = None,
    tf32: str = "auto",
    optimizer: str = "adamw",
    min_run_time_s: float = 0.5,
    warmup_steps: int = 5,
    num_threads: int | None = None,
    out: Path | str | None = None,
    plot: bool = True,
    progress: Callable[[str], None] | None = None,
) -> AmpResult:
    """Time one MLP training step per width x precision x TF32 setting; write Parquet, plot, manifest.

    Args:
        device: ``auto|cpu|cuda|cuda:N`` (``optbench.precision.resolve_device``).
        widths: hidden widths; each layer is ``Linear(width, width)``.
        depth: number of Linear layers (default 3).
        batch: rows per step (default 512).
        precisions: subset of fp32, fp16, bf16. Default: cuda -> fp32, fp16 and bf16 where the GPU has
            native bf16; cpu -> fp32, bf16. fp32 is always added (it is the speed-up's baseline).
            A precision the device cannot really run gets a row with null timings and the reason.
        tf32: ``off``, ``on``, ``both`` or ``auto`` (both on CUDA, off on CPU). TF32 is a CUDA matmul
            mode; asking for it on CPU is an error.
        optimizer: ``adamw`` (lr 1e-4, default) or ``sgd`` (lr 1e-3, momentum 0.9).
        min_run_time_s: timed seconds per configuration for ``blocked_autorange`` (default 0.5).
        warmup_steps: untimed steps first (cuBLAS/oneDNN setup, optimizer state, GradScaler's scale).
        num_threads: torch intra-op threads for the whole benchmark (default: ``torch.get_num_threads()``).
            On a CPU shared with other busy processes use fewer threads than cores: each parallel region
            waits for its slowest thread, and a descheduled thread costs milliseconds per op.
        out: results folder (default ``results/amp-<time>``): amp.parquet, amp.png, manifest.json.
        plot: write amp.png.
        progress: called with one line per configuration as it starts.
    """
    from optbench import store

    device = resolve_device(device)
    widths, depth, batch = _check_sizes(widths, depth, batch)
    if min_run_time_s <= 0:
        raise OptbenchError(f"invalid min run time: {min_run_time_s} (must be > 0 seconds)")
    if warmup_steps < 1:
        raise OptbenchError(f"invalid warm-up steps: {warmup_steps} (must be >= 1)")
    if num_threads is not None and (isinstance(num_threads, bool) or num_threads < 1):
        raise OptbenchError(f"invalid thread count: {num_threads!r} (must be >= 1)")
    if optimizer not in OPTIMIZERS:
        raise OptbenchError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    plan = AmpPlan(
        device=device,
        widths=tuple(widths),
        depth=depth,
        batch=batch,
        precisions=tuple(_choose_precisions(device, precisions)),
        tf32_modes=_tf32_modes(tf32, device),
        optimizer=optimizer,
        min_run_time_s=float(min_run_time_s),
        warmup_steps=warmup_steps,
    )
    out = Path(out) if out is not None else store.default_out("amp")
    with torch_threads(num_threads):
        return _run(plan, out, plot, progress or (lambda line: None))


def _run(plan: AmpPlan, out: Path, plot: bool, say: Callable[[str], None]) -> AmpResult:
    from optbench import store

    info = device_info(plan.device)
    manifest = store.start_manifest(out, "amp", extra={"amp": {**dataclasses.asdict(plan), **info}})

    say(f"overhead floor: width {FLOOR_WIDTH}, fp32")
    with tf32_matmuls(False, plan.device):
        floor_s = _time_step(plan, FLOOR_WIDTH, "fp32")["median_s"]
    rows = []
    for allow_tf32 in plan.tf32_modes:
        with tf32_matmuls(allow_tf32, plan.device):
            for width in plan.widths:
                for precision in plan.precisions:
                    say(f"width {width}, {precision}, TF32 {'on' if allow_tf32 else 'off'}")
                    rows.append(_measure(plan, width, precision, allow_tf32, info, floor_s))
    _add_speedups_and_size_warnings(rows, floor_s, plan.device)
    columns = amp_schema().names
    for i, row in enumerate(rows):
        notes = row.pop("notes")
        rows[i] = {name: row.get(name) for name in columns}  # every column, None where not measured
        rows[i]["warning"] = "\n".join(notes) if notes else None

    result = AmpResult(
        out=out,
        rows=rows,
        device=plan.device,
        device_name=info["device_name"],
        torch_version=info["torch_version"],
        cuda_version=info["cuda_version"],
        num_threads=info["num_threads"],
        tf32_modes=plan.tf32_modes,
        warnings=list(dict.fromkeys(n for row in rows if row["warning"] for n in row["warning"].split("\n"))),
    )
    store.write_parquet_atomic(store.table_from_rows(rows, amp_schema()), result.parquet)
    files = [AMP_FILE]
    if plot:
        from optbench.figures.amp import plot_amp

        plot_amp(result.frame(), result.plot)
        files.append(PLOT_FILE)
    store.finish_manifest(out, manifest, files=files, warnings=result.warnings)
    return result


def _measure(
    plan: AmpPlan, width: int, precision: str, allow_tf32: bool, info: dict[str, Any], floor_s: float
) -> dict[str, Any]:
    """One row: the timing (or why there is none) and its warnings, kept in ``row["notes"]`` for now."""
    import torch

    row = {
        "width": width,
        "depth": plan.depth,
        "batch": plan.batch,
        "precision": precision,
        "tf32": allow_tf32,
        "device": plan.device,
        "optimizer": plan.optimizer,
        "flops_per_step": 6 * plan.batch * width * width * plan.depth,
        "overhead_floor_s": floor_s,
        **{k: v for k, v in info.items() if k != "tf32_capable"},
    }
    notes = []
    try:
        check_precision(precision, plan.device)
    except NotApplicable as err:
        notes.append(f"{err}; not measured")
    else:
        try:
            timing = _time_step(plan, width, precision)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            notes.append(f"width {width}, {precision}: out of memory on {plan.device}; not measured")
        else:
            row.update(timing)
            notes += _timing_notes(precision, timing)
    if allow_tf32 and not info["tf32_capable"]:
        notes.append(
            f"TF32 was allowed, but {info['device_name']} has no TF32 tensor cores "
            "(needs compute capability 8.0+): TF32 on and off measure the same fp32"
        )
    if width % 8 or plan.batch % 8:
        notes.append(
            f"width {width} / batch {plan.batch}: not multiples of 8; fp16/bf16 tensor-core (GPU) and AMX "
            "(CPU) kernels want multiples of 8 and may fall back to slower ones"
        )
    row["notes"] = notes
    return row


# ---------------------------------------------------------------------------------------- validation


def _check_sizes(widths: Sequence[int], depth: int, batch: int) -> tuple[list[int], int, int]:
    widths = list(widths)
    if not widths:
        raise OptbenchError("no widths given; e.g. --widths 1024,2048,4096")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise OptbenchError(f"invalid width: {width!r} (must be a positive integer)")
    if len(set(widths)) != len(widths):
        raise OptbenchError(f"duplicate width in {widths}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise OptbenchError(f"invalid depth: {depth!r} (must be a positive integer)")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise OptbenchError(f"invalid batch: {batch!r} (must be a positive integer)")
    return widths, depth, batch


def default_precisions(device: str) -> list[str]:
    """cuda: fp32, fp16, plus bf16 where the GPU supports it natively; cpu: fp32, bf16."""
    if device_type(device) == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if bf16_native(device) else [])
    return ["fp32", "bf16"]


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


# ------------------------------------------------------------------------------------ device and TF32


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Run the block with ``torch.set_num_threads(num_threads)`` (None: leave as is); restores after."""
    import torch

    before = torch.get_num_threads()
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        yield
    finally:
        torch.set_num_threads(before)


def device_info(device: str) -> dict[str, Any]:
    """Name, versions and thread count: the evidence every row carries."""
    import torch

    info = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "num_threads": torch.get_num_threads(),
    }
    if device_type(device) == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_name"] = props.name
        info["tf32_capable"] = props.major >= 8
    else:
        info["device_name"] = cpu_name()
        info["tf32_capable"] = False
    return info


def cpu_name() -> str:
    """The CPU model ("Intel(R) Xeon(R) Processor"); ``platform.processor()`` is often empty on Linux."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


@contextlib.contextmanager
def tf32_matmuls(allow: bool, device: str):
    """Allow (or forbid) TF32 for fp32 matmuls inside the block; restores the previous setting.

    Forbidding uses ``torch.set_float32_matmul_precision("highest")``, which also keeps oneDNN on CPU
    from using reduced precision for fp32 matmuls. Allowing only flips
    ``torch.backends.cuda.matmul.allow_tf32`` ("high" would switch CPU matmuls to TF32 as well).
    """
    import torch

    before_precision = torch.get_float32_matmul_precision()
    before_cuda = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        if allow:
            torch.backends.cuda.matmul.allow_tf32 = True
        yield
    finally:
        torch.set_float32_matmul_precision(before_precision)
        torch.backends.cuda.matmul.allow_tf32 = before_cuda


# ------------------------------------------------------------------------------------------ the step


def build_step(device: str, width: int, depth: int, batch: int, precision: str, optimizer: str):
    """Model, data and a ``step()`` closure for one configuration. ``step()`` returns the model output's
    dtype, so callers can check the precision that really ran. Returns (step, scaler)."""
    import torch
    import torch.nn.functional as F

    from optbench.registry.precision import autocast_context, make_scaler

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for i in range(depth):
        layers.append(torch.nn.Linear(width, width))
        if i < depth - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = make_scaler(precision, device)
    autocast_context(precision, device)  # checked once here; the step builds its own cheap context
    kind = device_type(device)
    dtype_name = AUTOCAST_DTYPES[precision]
    autocast_dtype = getattr(torch, dtype_name) if dtype_name else None
    x = torch.randn(batch, width, device=device)
    y = torch.randn(batch, width, device=device)

    def context():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(kind, dtype=autocast_dtype)

    def step():
        opt.zero_grad(set_to_none=True)
        with context():
            out = model(x)
            loss = F.mse_loss(out, y)  # autocast runs mse_loss in fp32
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return out.dtype

    return step, scaler


def _time_step(plan: AmpPlan, width: int, precision: str) -> dict[str, Any]:
    """Warm up, then ``blocked_autorange``; median/IQR per step, peak CUDA memory, the dtype that ran."""
    import torch
    from torch.utils import benchmark

    device, depth, batch = plan.device, plan.depth, plan.batch
    on_cuda = device_type(device) == "cuda"
    if on_cuda:
        gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step, scaler = build_step(device, width, depth, batch, precision, plan.optimizer)
    dtypes = {step() for _ in range(plan.warmup_steps)}
    timer = benchmark.Timer(
        stmt="step()",
        globals={"step": step},
        num_threads=torch.get_num_threads(),  # Timer's default is 1 thread
        label="bench amp",
        sub_label=f"width={width}",
        description=precision,
    )
    measurement = timer.blocked_autorange(min_run_time=plan.min_run_time_s)
    peak = None
    if on_cuda:
        torch.cuda.synchronize(device)
        peak = int(torch.cuda.max_memory_allocated(device))
    median = float(measurement.median)
    return {
        "median_s": median,
        "iqr_s": float(measurement.iqr),
        "peak_mem_bytes": peak,
        "compute_dtype": ",".join(sorted(str(d).removeprefix("torch.") for d in dtypes)),
        "achieved_tflops": 6 * batch * width * width * depth / median / 1e12,
        "number_per_run": int(measurement.number_per_run),
        "n_blocks": len(measurement.times),
        "final_loss_scale": float(scaler.get_scale()) if scaler is not None else None,
    }


def _timing_notes(precision: str, timing: dict[str, Any]) -> list[str]:
    """Warnings about one measurement; nulls the timing if the wrong precision ran."""
    notes = []
    expected = AUTOCAST_DTYPES[precision] or "float32"
    if timing["compute_dtype"] != expected:
        notes.append(
            f"{precision}: the model output was {timing['compute_dtype']}, not {expected}; "
            "autocast did not take effect, timing discarded"
        )
        timing.update(median_s=None, iqr_s=None, achieved_tflops=None)
        return notes
    if timing["iqr_s"] > NOISY_IQR_SHARE * timing["median_s"]:
        share = timing["iqr_s"] / timing["median_s"]
        notes.append(
            f"noisy: IQR is {share:.0%} of the median ({timing['n_blocks']} blocks); "
            "raise --min-run-time, use fewer threads or quiet the machine"
        )
    return notes


def _add_speedups_and_size_warnings(rows: list[dict[str, Any]], floor_s: float, device: str) -> None:
    """speedup = fp32 median / median within (width, tf32); the overhead-floor warning per width."""
    what = "GPU" if device_type(device) == "cuda" else "CPU"
    baselines = {(r["width"], r["tf32"]): r.get("median_s") for r in rows if r["precision"] == "fp32"}
    for row in rows:
        base = baselines.get((row["width"], row["tf32"]))
        median = row.get("median_s")
        row["speedup"] = base / median if base and median else None
        if base and floor_s >= OVERHEAD_SHARE_LIMIT * base:
            row["notes"].append(
                f"width {row['width']}: too small to occupy the {what} -- the fixed per-step overhead "
                f"(the width-{FLOOR_WIDTH} step, {floor_s * 1e3:.3g} ms) is {floor_s / base:.0%} of the "
                f"fp32 step ({base * 1e3:.3g} ms); expect little or no speed-up"
            )
