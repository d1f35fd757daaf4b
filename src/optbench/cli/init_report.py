"""`bench init-report`: std of each layer's output in a deep MLP, per init scheme and activation."""

from __future__ import annotations

from typing import Annotated

import typer

from optbench.cli.common import fresh_out_dir, handle_errors

SUMMARY_LAYERS = (0, 9, 49, 99)  # the columns of the terminal table (clipped to the depth)


@handle_errors
def init_report_cmd(
    init: Annotated[
        list[str] | None,
        typer.Option(
            "--init",
            metavar="SPEC",
            help="Init scheme in spec syntax, e.g. kaiming_normal or 'normal(std=0.0625)'. Repeatable, or "
            "comma-separated. Default: the ten classic schemes plus normal(std=1/sqrt(width)).",
        ),
    ] = None,
    activation: Annotated[
        list[str] | None,
        typer.Option(
            "--activation",
            metavar="NAME",
            help="Activation after each layer: none, relu, leaky_relu, tanh, sigmoid, selu, gelu, silu, elu. "
            "Repeatable, or comma-separated. Default: none, relu, tanh.",
        ),
    ] = None,
    depth: Annotated[int, typer.Option(help="Number of Linear layers in the stack.")] = 100,
    width: Annotated[int, typer.Option(help="Width of every layer (square weights, no bias).")] = 256,
    batch: Annotated[int, typer.Option(help="Rows of N(0,1) input in the batch.")] = 16,
    seeds: Annotated[int, typer.Option(help="Number of seeds (0..seeds-1) per init and activation.")] = 1,
    out: Annotated[
        str | None,  # a str, not a Path: Typer would turn --out '' into '.', the current folder
        typer.Option(help="Results folder. Default: a new results/init-report-<time> folder."),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Draw std_vs_layer.png and gain_table.png.")] = True,
) -> None:
    """Show how the std of each layer's output evolves with depth for each init and activation.

    Writes layers.parquet (one row per init, activation, seed and layer), gains.parquet, std_vs_layer.png,
    gain_table.png and manifest.json, and prints a one-screen summary.
    """
    from optbench.experiments import initprobe
    from optbench.store import default_out

    initprobe.check_sizes(depth, width, batch, seeds)
    inits = initprobe.resolve_inits(init, width)  # bad names fail here, before a folder is made
    activations = initprobe.resolve_activations(activation)
    out = out if out is not None else default_out("init-report")
    with fresh_out_dir(out) as folder:
        report = initprobe.init_report(
            inits, activations, depth=depth, width=width, batch=batch, seeds=seeds, out=folder, plots=plots
        )
    typer.echo(summary_text(report))


def summary_text(report) -> str:
    """The terminal summary: std at a few layers, the first non-finite layer, the gain table."""
    import pandas as pd

    layers = report.layers
    shown = sorted({min(k, report.depth - 1) for k in SUMMARY_LAYERS})
    mean_std = layers.groupby(["init", "activation", "layer"], sort=False)["act_std"].mean()  # over seeds
    first = {(i, a): v for i, a, v in report.first_nonfinite.itertuples(index=False)}
    name_width = max(len("init"), *(len(i) for i in report.inits))
    seeds = f", mean of {report.seeds} seeds" if report.seeds > 1 else ""

    lines = [
        f"Std of each layer's output: {report.depth} layers of width {report.width}, batch {report.batch} "
        f"of N(0,1) inputs{seeds}",
        f"{'init':<{name_width}}  {'activation':<10}"
        + "".join(f"  {f'layer {k}':>9}" for k in shown)
        + "  first non-finite",
    ]
    for activation in report.activations:
        for init in report.inits:
            stds = "".join(f"  {_num(mean_std.get((init, activation, k))):>9}" for k in shown)
            bad = first.get((init, activation))
            bad_text = "-" if bad is None or pd.isna(bad) else f"layer {int(bad)}"
            lines.append(f"{init:<{name_width}}  {activation:<10}{stds}  {bad_text}")
    lines += ["", f"{'activation':<12}{'calculate_gain':>16}{'measured std':>14}{'measured rms':>14}"]
    for row in report.gains.itertuples(index=False):
        lines.append(
            f"{row.activation:<12}{row.calculate_gain:>16.4f}{row.measured_gain:>14.4f}{row.measured_rms_gain:>14.4f}"
        )
    lines += ["", f"results: {report.out}"]
    lines += [
        f"figure:  {path}" for key, path in report.paths.items() if key in ("std_vs_layer", "gain_table")
    ]
    return "\n".join(lines)


def _num(value) -> str:
    import pandas as pd

    return "nan" if pd.isna(value) else f"{value:.3g}"


COMMANDS = {"init-report": init_report_cmd}
