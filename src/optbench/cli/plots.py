"""`bench plot`, `bench schedules`, `bench lr-find`, `bench report`: figures and the report from results folders.

Nothing heavy is imported at module level; each command validates its input (one line on stderr, exit 2)
and calls a plain function: ``facets.facet_plot``, ``report.standard_figures``,
``experiments.schedules.schedules_experiment``, ``lrfind.lr_find``, ``report.build_report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import fail, handle_errors

_FORMAT_HELP = "Figure format: png, svg or pdf."


def _results_folder(folder: Path) -> None:
    if not folder.exists():
        fail(f"results folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        fail(f"{str(folder)!r} is not a folder")


@handle_errors
def plot_cmd(
    folder: Annotated[
        Path,
        typer.Argument(help="Results folder (runs.parquet + traces/).", metavar="DIR", show_default=False),
    ],
    y: Annotated[
        str,
        typer.Option(
            help="What to plot: a trace column (loss, lr, grad_norm, val_acc, ...) or a "
            "run column (final_loss, best_loss, wall_time_s, ...)."
        ),
    ] = "loss",
    x: Annotated[
        str | None,
        typer.Option(
            help="Horizontal axis. Default: step for trace columns, lr for run columns.", show_default=False
        ),
    ] = None,
    hue: Annotated[
        str,
        typer.Option(
            help="Column that colours the lines; auto: the varying axis with the most values; none: one colour."
        ),
    ] = "auto",
    col: Annotated[
        str,
        typer.Option(help="Column with one panel column per value; auto: optimizer where it varies; none."),
    ] = "auto",
    row: Annotated[
        str,
        typer.Option(
            help="Column with one panel row per value; auto: problem, scheduler or loss where it varies; none."
        ),
    ] = "auto",
    logy: Annotated[
        bool | None,
        typer.Option(
            "--logy/--no-logy", help="Log-scale y axis. Default: on for losses and norms.", show_default=False
        ),
    ] = None,
    logx: Annotated[
        bool | None,
        typer.Option(
            "--logx/--no-logx",
            help="Log-scale x axis. Default: on for an lr axis spanning 10x.",
            show_default=False,
        ),
    ] = None,
    band: Annotated[
        str,
        typer.Option(
            help="Band over seeds: std (±1 std; ×/÷ geometric std on a log axis), ci95 (95% interval of "
            "the mean, Student t; of log y on a log axis), range (min to max) or none."
        ),
    ] = "std",
    top: Annotated[
        int,
        typer.Option(
            help="Lines in colour per panel: the best by final loss; the others are drawn thin and grey."
        ),
    ] = 6,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="Keep only runs with COLUMN=VALUE (repeatable), e.g. --where momentum=0.9.",
            metavar="COLUMN=VALUE",
        ),
    ] = None,
    figure: Annotated[
        str | None,
        typer.Option(
            help="Draw a standard figure instead: loss-vs-step, "
            "sensitivity, heatmap, trajectories, lr-schedules, schedules, "
            "lr-find, init-std, init-gains, amp, or all.",
            metavar="NAME",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="Figure format: png, svg or pdf. Default: --out's suffix, else png."),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            help="Output file, or a folder (existing, or ending in /) to write the default name into "
            "(default: DIR/plot_<y>_vs_<x>....<format>; with --figure: the folder, default DIR/figures).",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Faceted comparison from any results folder: aggregate over seeds with a band, one panel per col x row
    value, the best lines per panel in colour; the defaults are chosen from the data.

    Example: bench plot results/grid --y loss --hue lr --col optimizer --row scheduler
    """
    _results_folder(folder)
    fmt = _format_of(fmt, out if figure is None else None)
    if figure is not None:
        _standard_figures(folder, figure, Path(out) if out is not None else folder / "figures", fmt)
        return
    from optbench import store
    from optbench.figures import facets

    if not (folder / store.RUNS_FILE).exists():
        fail(
            f"no {store.RUNS_FILE} in {str(folder)!r}: bench plot draws run folders (lr-sweep, grid, lr-find)"
        )
    runs = store.read_runs(folder)
    if runs.empty:
        fail(f"{str(folder / store.RUNS_FILE)!r} has no runs")
    names = {k: (None if v == "none" else v) for k, v in (("hue", hue), ("col", col), ("row", row))}
    kind = "trace" if y in facets.TRACE_COLUMNS else "run"
    traces = store.read_traces(folder) if kind == "trace" else None
    result = facets.facet_plot(
        runs,
        traces,
        _plot_path(folder, out, fmt, y, x, names),
        y=y,
        x=x,
        **names,
        logy=logy,
        logx=logx,
        band=band,
        top=top,
        where=where,
    )
    spec = result.spec
    typer.echo(
        f"figure: {result.path} ({len(result.rows)} x {len(result.cols)} panels, {result.lines} lines, "
        f"{result.highlighted} in colour)"
    )
    chosen = ", ".join(f"{k}={v}" for k, v in (("col", spec.col), ("row", spec.row), ("hue", spec.hue)) if v)
    typer.echo(
        f"chosen: {chosen or 'one panel, one colour'}"
        + (f"; line style: {', '.join(spec.style_by)}" if spec.style_by else "")
        + f"; y {'log' if spec.logy else 'linear'}, x {'log' if spec.logx else 'linear'}"
    )


def _plot_path(folder: Path, out: str | None, fmt: str, y: str, x: str | None, names: dict) -> Path:
    """``--out``: a file, or a folder (existing, or written with a trailing /) that gets the default name."""
    from optbench.figures import facets

    x = x or ("step" if y in facets.TRACE_COLUMNS else "lr")
    name = f"{facets.default_name(y, x, names['hue'], names['col'], names['row'])}.{fmt}"
    if out is None:
        return folder / name
    if out.endswith(("/", "\\")) or Path(out).is_dir():
        return Path(out) / name
    path = Path(out)
    return path if path.suffix else path.with_suffix(f".{fmt}")


def _format_of(fmt: str | None, out: str | None) -> str:
    """The figure format: --format, else --out's suffix, else png; an --out whose suffix says another
    format than --format is refused (one line), never written in the wrong format."""
    from optbench.figures.style import check_format

    is_file = out is not None and not out.endswith(("/", "\\")) and not Path(out).is_dir()
    suffix = Path(out).suffix.lstrip(".").lower() if is_file else ""
    if fmt is not None and suffix and suffix != fmt:
        fail(f"--out {out} ends in .{suffix} but --format is {fmt}; give one of them, or both alike")
    return check_format(fmt or suffix or "png")


def _standard_figures(folder: Path, figure: str, target: Path, fmt: str) -> None:
    """``--figure NAME|all``: draw into ``target`` (default DIR/figures/, never over files of DIR that another
    command wrote, such as lr-sweep's own loss_vs_step.png); a figure that fails is named and the exit is 1."""
    from optbench import report, store

    store.files.check_writable(target)  # one line for a read-only folder, not one skipped line per figure
    only = None if figure == "all" else {figure}
    figures = report.standard_figures(report.load(folder), target, fmt, only=only)
    if not figures:
        fail(f"figure {figure!r} does not apply to the data in {str(folder)!r}")
    for item in figures:
        typer.echo(f"figure: {item.path}" if item.path is not None else f"skipped: {item.caption}")
    failed = [item for item in figures if item.path is None]
    if failed:
        fail(f"{len(failed)} of {len(figures)} figure(s) could not be drawn (skipped above)", 1)


@handle_errors
def schedules_cmd(
    steps: Annotated[
        int, typer.Option(help="Steps to draw (also the run length the defaults derive from).")
    ] = 100,
    lr: Annotated[float, typer.Option(help="Base learning rate.")] = 0.01,
    schedulers: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated scheduler specs, e.g. "
            "'steplr(step_size=5, gamma=0.8),cosine'. Default: every "
            "registered scheduler."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=_FORMAT_HELP)] = "png",
    out: Annotated[
        str | None,
        typer.Option(
            help="Output folder: new, empty or a schedules folder (default: a new results/schedules-<time>)."
        ),
    ] = None,
) -> None:
    """Draw the lr per step of every torch scheduler and our custom ones, from the real scheduler objects.

    Writes schedules.parquet (scheduler, step, lr), schedules.<format> and manifest.json. ReduceLROnPlateau
    is fed a constant loss (it needs a metric), so it cuts the lr every patience + 1 steps.
    """
    from optbench import store
    from optbench.experiments.schedules import schedules_experiment
    from optbench.spec import split_top_level

    names = split_top_level(schedulers) if schedulers else None
    if names:  # a misspelt name or argument is a user error; torch refusing a value gets an empty panel
        from optbench.registry.schedulers import canonical_scheduler
        from optbench.registry.validate import check_scheduler_arguments

        for name in names:
            check_scheduler_arguments(canonical_scheduler(name))
    out = store.default_out("schedules") if out is None else out
    path = schedules_experiment(steps, lr, names, out=out, fmt=fmt)
    typer.echo(f"figure: {path}")
    notes = store.read_manifest(out).get("schedule_notes", {})
    for name, note in notes.items():
        typer.echo(f"note: {name}: {note}")


@handle_errors
def lr_find_cmd(
    problem: Annotated[
        str, typer.Option(help="Problem spec (an MLP problem is the usual target).")
    ] = "mlp-classification",
    optimizer: Annotated[
        str, typer.Option(help="Optimizer spec, e.g. sgd, adam, 'adamw(weight_decay=0.01)'.")
    ] = "sgd",
    momentum: Annotated[
        float | None, typer.Option(help="Momentum (beta1 for the Adam family); default: the optimizer's own.")
    ] = None,
    start: Annotated[float, typer.Option(help="First learning rate.")] = 1e-7,
    end: Annotated[float, typer.Option(help="Last learning rate (reached at the last step).")] = 10.0,
    steps: Annotated[
        int, typer.Option(help="Steps; the lr grows by (end/start)^(1/(steps-1)) per step.")
    ] = 100,
    beta: Annotated[float, typer.Option(help="EMA smoothing factor of the loss (bias-corrected).")] = 0.98,
    stop_factor: Annotated[
        float, typer.Option(help="Stop where the smoothed loss exceeds this times its minimum.")
    ] = 4.0,
    init: Annotated[str, typer.Option(help="Init scheme for MLP problems (spec syntax).")] = "default",
    loss: Annotated[str, typer.Option(help="Loss for MLP problems; auto = the problem's own.")] = "auto",
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size (MLP problems).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help=_FORMAT_HELP)] = "png",
    out: Annotated[
        str | None,
        typer.Option(
            help="Output folder: new, empty or this same run's (default: a new results/lr-find-<time>)."
        ),
    ] = None,
) -> None:
    """Learning-rate range test: grow the lr exponentially, smooth the loss, suggest an lr.

    Prints three suggestions: valley (fastai's default rule), steepest descent, minimum/10; writes a
    normal results folder plus lr_find.<format>.
    """
    from optbench import store
    from optbench.experiments import lrfind
    from optbench.figures.style import check_format

    lrfind.check_range(start, end, steps)
    check_format(fmt)
    out = store.default_out("lr-find") if out is None else out
    result = lrfind.lr_find(
        problem,
        optimizer,
        start=start,
        end=end,
        steps=steps,
        momentum=momentum,
        init=init,
        loss=loss,
        batch_size=batch_size,
        device=device,
        seed=seed,
        beta=beta,
        stop_factor=stop_factor,
        out=out,
        fmt=fmt,
    )
    analysis = result.analysis
    typer.echo(
        f"lr-find: {result.config.problem}, {result.config.optimizer}, lr {start:g} -> {end:g} over "
        f"{steps} steps; stopped: {analysis.stopped_because} after {analysis.stop} steps"
    )
    for label, (value, _) in analysis.suggestions().items():
        typer.echo(f"  {label:<11} lr = {value:.3g}" if value is not None else f"  {label:<11} none")
    typer.echo(
        f"suggested lr (valley): {result.suggested_lr:.3g}" if result.suggested_lr else "no suggestion"
    )
    typer.echo(f"results: {result.out}")
    for figure in result.figures:
        typer.echo(f"figure:  {figure}")


@handle_errors
def report_cmd(
    folder: Annotated[Path, typer.Argument(help="Results folder of any bench command.", show_default=False)],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="html (one self-contained file) or md (Markdown with the figure files beside it).",
        ),
    ] = "html",
    figure_format: Annotated[
        str, typer.Option(help="Figure format: png or svg (html); png, svg or pdf (md).")
    ] = "png",
    compare: Annotated[
        list[Path] | None,
        typer.Option(
            help="Another results folder to compare lr-find "
            "suggestions with (repeatable); folders beside DIR are "
            "searched too."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: DIR/report.html or DIR/report.md).")
    ] = None,
) -> None:
    """Write DIR/report.html: command, environment, summary tables and every figure that applies to DIR.

    Reads the Parquet only; never re-runs anything. The HTML embeds its figures and opens offline.
    """
    from optbench import report

    _results_folder(folder)
    if out is not None and out.is_dir():
        fail(f"--out {out} is a folder; give the report's file name, e.g. {out / 'report.html'}")
    path = report.build_report(folder, fmt=fmt, figure_format=figure_format, compare=compare or [], out=out)
    typer.echo(f"report: {path}")


COMMANDS = {"plot": plot_cmd, "schedules": schedules_cmd, "lr-find": lr_find_cmd, "report": report_cmd}
