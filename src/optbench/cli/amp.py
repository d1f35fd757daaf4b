"""`bench amp`: how much faster is mixed precision here? Time an MLP training step in fp32, fp16 and bf16,
measure the device's matmul ceiling in the same run, print the answer and write Parquet + two figures.

Parses and validates only; the work is ``optbench.experiments.amp.amp_benchmark``. Nothing heavy is
imported until the command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from optbench.cli.common import echo_err, fail, fresh_out_dir, handle_errors
from optbench.spec import split_top_level

TF32_CHOICES = ("auto", "off", "on", "both")  # = experiments.amp.TF32_CHOICES (kept here: no torch import)


def parse_widths(text: str) -> list[int] | None:
    """``"1024,2048,4096"`` -> ``[1024, 2048, 4096]``; ``"auto"`` -> None; anything else one error line."""
    if text.strip().lower() == "auto":
        return None
    widths = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            fail(
                f"invalid --widths {text!r}: {part!r} is not a positive integer (e.g. --widths 1024,2048,4096)"
            )
        widths.append(int(part))
    return widths


def parse_batch(text: str) -> int | None:
    """``"auto"`` -> None (the device's default); a positive integer; else one error line."""
    text = text.strip().lower()
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        fail(f"invalid --batch {text!r}: not a positive integer or 'auto'")
    return int(text)


DeviceOption = Annotated[
    str, typer.Option(help="Where to run: auto (CUDA if available, else CPU), cpu, cuda or cuda:N.")
]

WidthsOption = Annotated[
    str,
    typer.Option(
        help="Comma-separated MLP widths (each layer is Linear(width, width)), or auto: on CUDA a sweep "
        "256..8192 from launch-bound to compute-bound, trimmed to free memory and --budget; on CPU "
        "256,512,1024."
    ),
]

DepthOption = Annotated[
    int | None, typer.Option(help="Number of Linear layers. Default: 4 on CUDA, 3 on CPU.")
]

BatchOption = Annotated[
    str, typer.Option(help="Rows per training step, or auto: 2 x width on CUDA, 512 on CPU.")
]

PrecisionOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Precision to time: fp32, fp16 or bf16; repeat the option or separate with commas. "
        "Default: fp32 and fp16 on CUDA, plus bf16 where the GPU has it natively; fp32 and bf16 on "
        "CPU, plus fp16 where the CPU has native fp16 kernels. fp32 is always timed (the baseline)."
    ),
]

Tf32Option = Annotated[
    str,
    typer.Option(
        help="Which fp32 baselines: TF32 matmuls off, on, both, or auto (both on CUDA, off on CPU). "
        "fp16/bf16 are timed once and compared with each."
    ),
]

OptimizerOption = Annotated[
    str,
    typer.Option(
        help="Optimizer in the step: adamw (lr 1e-4) or sgd (lr 1e-3, momentum 0.9); fused on CUDA."
    ),
]

MinRunTimeOption = Annotated[
    float, typer.Option(help="Seconds of timed steps per configuration, in at least 7 blocks.")
]

CudaGraphsOption = Annotated[
    bool,
    typer.Option(
        "--cuda-graphs",
        help="Also capture the whole step (forward, backward, scaler, optimizer) as one CUDA graph and "
        "time its replay beside the eager step.",
    ),
]

BudgetOption = Annotated[
    float | None,
    typer.Option(help="Seconds the default (auto) sweep may take, predicted; 60 on CUDA, 30 on CPU."),
]

ThreadsOption = Annotated[
    int | None,
    typer.Option(help="torch intra-op threads (CPU). Default: torch's own choice (one per core)."),
]

OutOption = Annotated[
    str | None,  # a str, not a Path: Typer would turn --out '' into '.', the current folder
    typer.Option(help="Results folder. Default: results/amp-<date>-<time>."),
]


@handle_errors
def amp_cmd(
    device: DeviceOption = "auto",
    widths: WidthsOption = "auto",
    depth: DepthOption = None,
    batch: BatchOption = "auto",
    precision: PrecisionOption = None,
    tf32: Tf32Option = "auto",
    optimizer: OptimizerOption = "adamw",
    min_run_time: MinRunTimeOption = 0.5,
    cuda_graphs: CudaGraphsOption = False,
    budget: BudgetOption = None,
    threads: ThreadsOption = None,
    out: OutOption = None,
) -> None:
    """Time a full MLP training step (forward, backward, optimizer, GradScaler for fp16) per size and
    precision; report the speed-up over fp32, the share of the device's matmul ceiling it reaches, where
    AMP starts to pay, and peak memory; write amp.parquet, amp.png and amp_scaling.png."""
    if tf32 not in TF32_CHOICES:
        fail(f"unknown --tf32 {tf32!r}; valid: {', '.join(TF32_CHOICES)}")
    width_list = parse_widths(widths)
    batch_size = parse_batch(batch)
    precisions = [p for value in precision or [] for p in split_top_level(value)]

    from optbench import store
    from optbench.experiments.amp import amp_benchmark

    out = out if out is not None else store.default_out("amp")
    with fresh_out_dir(out) as folder:
        result = amp_benchmark(
            device=device,
            widths=width_list,
            depth=depth,
            batch=batch_size,
            precisions=precisions or None,
            tf32=tf32,
            optimizer=optimizer,
            min_run_time_s=min_run_time,
            num_threads=threads,
            cuda_graphs=cuda_graphs,
            budget_s=budget,
            out=folder,
            progress=lambda line: echo_err(f"amp: {line}"),
        )
    print_result(result)


def print_result(result) -> None:
    """The device header, the ceiling, one table row per timed configuration, the answer, the warnings."""
    from rich.console import Console

    console = Console(highlight=False)
    on_gpu = result.device.startswith("cuda")
    console.print(f"[bold]{'GPU' if on_gpu else 'CPU'}:[/bold] {result.device_name} ({result.device})")
    console.print(
        f"torch {result.torch_version}, CUDA {result.cuda_version or 'none (CPU build)'}, "
        f"{result.num_threads} torch thread(s)"
    )
    _print_ceiling(console, result)
    for table in _tables(result):
        console.print(table)
    has = {name for name in result.rows[0] if any(r.get(name) is not None for r in result.rows)}
    meanings = [f"{h}: {m}" for h, c, _, _, m in RATIO_COLUMNS if c in has]
    console.print("; ".join(meanings) + (". tf32 = fp32 with TF32 matmuls." if on_gpu else "."))
    if not on_gpu:
        console.print("peak memory: n/a on CPU (torch keeps no CPU allocator statistics)")
    for line in result.summary:
        console.print(f"[bold]answer:[/bold] {line}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"took {result.elapsed_s:.0f} s")
    for path in (result.parquet, result.plot, result.scaling_plot):
        if path.exists():
            console.print(f"wrote {path}")


def _print_ceiling(console, result) -> None:
    rates = result.ceiling_tflops
    if not rates:
        console.print("ceiling: not measured")
        return
    names = {"fp32": "fp32 (TF32 off)", "tf32": "fp32 with TF32", "fp16": "fp16", "bf16": "bf16"}
    unit = "TFLOP/s" if max(rates.values()) >= 1 else "GFLOP/s"
    scale = 1 if unit == "TFLOP/s" else 1e3
    parts = ", ".join(f"{names[k]} {v * scale:.3g}" for k, v in rates.items())
    console.print(f"ceiling ({result.ceiling_n}^3 matmul, torch.utils.benchmark), {unit}: {parts}")


def _fmt(value, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    return "-" if value is None or value != value else f"{value * scale:{spec}}{suffix}"


def _config(row) -> str:
    return "tf32" if row["precision"] == "fp32" and row["tf32"] else row["precision"]


TIME_COLUMNS = (  # (header, column, format, scale): times in ms
    ("ms", "median_s", ".4g", 1e3),
    ("IQR", "iqr_s", ".2g", 1e3),
    ("blocks", "n_blocks", ".0f", 1),
    ("device ms", "device_s", ".4g", 1e3),
    ("graph ms", "graph_median_s", ".4g", 1e3),
    ("peak MiB", "peak_mem_bytes", ".0f", 2**-20),
)
RATIO_COLUMNS = (  # (header, column, format, suffix, meaning)
    ("vs fp32", "speedup", ".2f", "x", "wall-time speed-up over fp32 (TF32 off)"),
    ("vs TF32", "speedup_tf32", ".2f", "x", "over fp32 with TF32"),
    ("ceiling", "ceiling_share", ".0%", "", "share of the matmul ceiling reached (over fp32)"),
    ("ceil. TF32", "ceiling_share_tf32", ".0%", "", "the same over fp32 with TF32"),
    ("device", "device_speedup", ".2f", "x", "device-time speed-up over fp32"),
    ("graph", "graph_over_eager", ".2f", "x", "eager step time / graph replay time"),
    ("memory", "peak_mem_ratio", ".2f", "x", "peak memory / fp32's"),
)


def _tables(result):
    """Two tables that each fit 80 columns: times per step, then the ratios; only columns with data."""
    from rich import box
    from rich.table import Table

    rows, first = result.rows, result.rows[0]
    has = {name for name in first if any(r.get(name) is not None for r in rows)}
    times = [(h, lambda r, c=c, f=f, k=k: _fmt(r[c], f, k)) for h, c, f, k in TIME_COLUMNS if c in has]
    ratios = [
        (h, lambda r, c=c, f=f, x=x: _fmt(r[c], f, suffix=x)) for h, c, f, x, _ in RATIO_COLUMNS if c in has
    ]
    width = ("width", lambda r: str(r["width"]))
    config = ("config", _config)
    out = []
    for name, cells in (
        (f"Training step (MLP depth {first['depth']}, {first['optimizer']}): times", [width, ("batch", lambda r: str(r["batch"])), config, *times]),
        ("Speed-ups", [width, config, *ratios]),
    ):  # fmt: skip
        table = Table(title=name, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for header, _ in cells:
            table.add_column(header, justify="left" if header == "config" else "right", no_wrap=True)
        for row in rows:
            table.add_row(*(cell(row) for _, cell in cells))
        out.append(table)
    return out


COMMANDS = {"amp": amp_cmd}
