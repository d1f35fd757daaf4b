"""`bench amp`: time an MLP training step in fp32, fp16 and bf16; print a table, write Parquet + a plot.

Parses and validates only; the work is ``optbench.amp.amp_benchmark``. Nothing heavy is imported until
the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import echo_err, fail, fresh_out_dir, handle_errors
from optbench.spec import split_top_level

TF32_CHOICES = ("auto", "off", "on", "both")  # = optbench.amp.TF32_CHOICES (kept here: no torch import)


def parse_widths(text: str) -> list[int]:
    """``"1024,2048,4096"`` -> ``[1024, 2048, 4096]``; anything else is a one-line error."""
    widths = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            fail(
                f"invalid --widths {text!r}: {part!r} is not a positive integer (e.g. --widths 1024,2048,4096)"
            )
        widths.append(int(part))
    return widths


@handle_errors
def amp_cmd(
    device: Annotated[
        str, typer.Option(help="Where to run: auto (CUDA if available, else CPU), cpu, cuda or cuda:N.")
    ] = "auto",
    widths: Annotated[
        str, typer.Option(help="Comma-separated MLP widths; each layer is Linear(width, width).")
    ] = "1024,2048,4096",
    depth: Annotated[int, typer.Option(help="Number of Linear layers in the MLP.")] = 3,
    batch: Annotated[int, typer.Option(help="Rows per training step.")] = 512,
    precision: Annotated[
        list[str] | None,
        typer.Option(
            help="Precision to time: fp32, fp16 or bf16; repeat the option or separate with commas. "
            "Default: fp32, fp16, bf16 on CUDA (bf16 where the GPU has it natively); fp32, bf16 on CPU. "
            "fp32 is always timed, it is the speed-up's baseline."
        ),
    ] = None,
    tf32: Annotated[
        str,
        typer.Option(
            help="Allow TF32 for fp32 matmuls: off, on, both, or auto (both on CUDA, off on CPU). "
            "Speed-ups are against fp32 with the same TF32 setting."
        ),
    ] = "auto",
    optimizer: Annotated[
        str, typer.Option(help="Optimizer in the timed step: adamw (lr 1e-4) or sgd (lr 1e-3, momentum 0.9).")
    ] = "adamw",
    min_run_time: Annotated[
        float, typer.Option(help="Seconds of timed steps per configuration (torch.utils.benchmark).")
    ] = 0.5,
    threads: Annotated[
        int | None,
        typer.Option(help="torch intra-op threads (CPU). Default: torch's own choice (one per core)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Results folder. Default: results/amp-<date>-<time>.")
    ] = None,
) -> None:
    """Time a full MLP training step (forward, backward, optimizer, GradScaler for fp16) per width and
    precision, report the speed-up over fp32 and peak memory, and write amp.parquet and amp.png."""
    if tf32 not in TF32_CHOICES:
        fail(f"unknown --tf32 {tf32!r}; valid: {', '.join(TF32_CHOICES)}")
    width_list = parse_widths(widths)
    precisions = [p for value in precision or [] for p in split_top_level(value)]

    from optbench import store
    from optbench.experiments.amp import amp_benchmark

    out = out if out is not None else store.default_out("amp")
    with fresh_out_dir(out):
        result = amp_benchmark(
            device=device,
            widths=width_list,
            depth=depth,
            batch=batch,
            precisions=precisions or None,
            tf32=tf32,
            optimizer=optimizer,
            min_run_time_s=min_run_time,
            num_threads=threads,
            out=out,
            progress=lambda line: echo_err(f"timing {line}"),
        )
    print_result(result)


def print_result(result) -> None:
    """The device header, one table row per (width, TF32, precision), the warnings, the files."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from optbench.experiments.amp import NOISY_IQR_SHARE

    console = Console(highlight=False)
    on_gpu = result.device.startswith("cuda")
    console.print(f"[bold]{'GPU' if on_gpu else 'CPU'}:[/bold] {result.device_name} ({result.device})")
    console.print(
        f"torch {result.torch_version}, CUDA {result.cuda_version or 'none (CPU build)'}, "
        f"{result.num_threads} torch thread(s)"
    )
    tf32_text = " / ".join("allowed" if t else "not allowed" for t in result.tf32_modes)
    console.print(f"TF32 matmuls: {tf32_text}" + ("" if on_gpu else " (TF32 is a CUDA mode)"))

    first = result.rows[0]
    table = Table(
        title=f"Training step, MLP depth {first['depth']}, batch {first['batch']}, {first['optimizer']}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name in ("width", "precision", "TF32", "median ms", "IQR ms", "speedup", "peak MiB", "dtype"):
        table.add_column(name, justify="left" if name in ("precision", "dtype") else "right", no_wrap=True)
    noisy = []
    for row in result.rows:
        median, iqr, speedup = row.get("median_s"), row.get("iqr_s"), row["speedup"]
        peak = row.get("peak_mem_bytes")
        table.add_row(
            str(row["width"]),
            row["precision"],
            "on" if row["tf32"] else "off",
            "-" if median is None else f"{median * 1e3:.3f}",
            "-" if iqr is None else f"{iqr * 1e3:.3f}",
            "-" if speedup is None else f"{speedup:.2f}x",
            "n/a" if peak is None else f"{peak / 2**20:.1f}",
            row.get("compute_dtype") or "not run",
        )
        if median and iqr > NOISY_IQR_SHARE * median:
            noisy.append(f"{row['width']}/{row['precision']} {iqr / median:.0%}")
    console.print(table)
    if not on_gpu:
        console.print("peak MiB: n/a on CPU (torch keeps no CPU allocator statistics)")
    for warning in result.warnings:
        if not warning.startswith("noisy:"):  # summarised below, one line for all rows
            console.print(f"[yellow]warning:[/yellow] {warning}")
    if noisy:
        console.print(
            f"[yellow]warning:[/yellow] noisy timings (IQR > {NOISY_IQR_SHARE:.0%} of the median) in "
            f"{len(noisy)} of {len(result.rows)} rows: {', '.join(noisy)}; raise --min-run-time, use "
            "fewer --threads or quiet the machine"
        )
    console.print(f"wrote {result.parquet}")
    if result.plot.exists():
        console.print(f"wrote {result.plot}")


COMMANDS = {"amp": amp_cmd}
