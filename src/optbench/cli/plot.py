"""`bench plot`: a faceted comparison from any results folder, or one of the standard figures.

Validates its input (one line on stderr, exit 2) and calls ``facets.facet_plot`` or
``report.standard_figures``; nothing heavy is imported until the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import check_results_folder, fail, handle_errors
from optbench.figures.names import STANDARD_FIGURES

FolderArgument = Annotated[
    Path,
    typer.Argument(help="Results folder (runs.parquet + traces/).", metavar="DIR", show_default=False),
]

YOption = Annotated[
    str,
    typer.Option(
        help="What to plot: a trace column (loss, lr, grad_norm, val_acc, ...) or a "
        "run column (final_loss, best_loss, wall_time_s, ...)."
    ),
]

XOption = Annotated[
    str | None,
    typer.Option(
        help="Horizontal axis. Default: step for trace columns, lr for run columns.", show_default=False
    ),
]

HueOption = Annotated[
    str,
    typer.Option(
        help="Column that colours the lines; auto: the varying axis with the most values; none: one colour."
    ),
]

ColOption = Annotated[
    str,
    typer.Option(help="Column with one panel column per value; auto: optimizer where it varies; none."),
]

RowOption = Annotated[
    str,
    typer.Option(
        help="Column with one panel row per value; auto: problem, scheduler or loss where it varies; none."
    ),
]

LogyOption = Annotated[
    bool | None,
    typer.Option(
        "--logy/--no-logy", help="Log-scale y axis. Default: on for losses and norms.", show_default=False
    ),
]

LogxOption = Annotated[
    bool | None,
    typer.Option(
        "--logx/--no-logx",
        help="Log-scale x axis. Default: on for an lr axis spanning 10x.",
        show_default=False,
    ),
]

BandOption = Annotated[
    str,
    typer.Option(
        help="Band over seeds: std (±1 std; ×/÷ geometric std on a log axis), ci95 (95% interval of "
        "the mean, Student t; of log y on a log axis), range (min to max) or none."
    ),
]

TopOption = Annotated[
    int,
    typer.Option(
        help="Lines in colour per panel: the best by final loss; the others are drawn thin and grey."
    ),
]

WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Keep only runs with COLUMN=VALUE (repeatable), e.g. --where momentum=0.9.",
        metavar="COLUMN=VALUE",
    ),
]

FigureOption = Annotated[
    str | None,
    typer.Option(
        help=f"Draw a standard figure instead: {', '.join(STANDARD_FIGURES)}, or all.",
        metavar="NAME",
    ),
]

FmtOption = Annotated[
    str | None,
    typer.Option("--format", help="Figure format: png, svg or pdf. Default: --out's suffix, else png."),
]

OutOption = Annotated[
    str | None,
    typer.Option(
        help="Output file, or a folder (existing, or ending in /) to write the default name into "
        "(default: DIR/plot_<y>_vs_<x>....<format>; with --figure: the folder, default DIR/figures).",
        metavar="PATH",
        show_default=False,
    ),
]


@handle_errors
def plot_cmd(
    folder: FolderArgument,
    y: YOption = "loss",
    x: XOption = None,
    hue: HueOption = "auto",
    col: ColOption = "auto",
    row: RowOption = "auto",
    logy: LogyOption = None,
    logx: LogxOption = None,
    band: BandOption = "std",
    top: TopOption = 6,
    where: WhereOption = None,
    figure: FigureOption = None,
    fmt: FmtOption = None,
    out: OutOption = None,
) -> None:
    """Faceted comparison from any results folder: aggregate over seeds with a band, one panel per col x row
    value, the best lines per panel in colour; the defaults are chosen from the data.

    Example: bench plot results/grid --y loss --hue lr --col optimizer --row scheduler
    """
    check_results_folder(folder)
    fmt = _format_of(fmt, out if figure is None else None)
    if figure is not None:
        _standard_figures(folder, figure, _figure_folder(out, folder, fmt), fmt)
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
    path = _plot_path(folder, out, fmt, y, x, names)
    _check_overwrite(path)
    result = facets.facet_plot(
        runs,
        traces,
        path,
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
        f"figure: {result.path} ({result.layout}, {result.lines} lines, {result.highlighted} in colour)"
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


def _owner(folder: Path) -> str | None:
    """The command whose results folder ``folder`` is, if it is one."""
    from optbench.store.folder import folder_kind, our_manifest

    manifest, _ = our_manifest(folder)
    return folder_kind(manifest) if manifest else None


def _check_overwrite(path: Path) -> None:
    """`bench plot` writes over a file only if it drew it: a plot_* figure it drew before, never a results
    folder's own files (lr-sweep's loss_vs_step.png) nor a file optbench did not draw."""
    from optbench.figures.stamp import check_overwrite

    owner = None if path.name.startswith("plot_") else _owner(path.parent)
    check_overwrite(path, folder_of=owner)


def _figure_folder(out: str | None, folder: Path, fmt: str) -> Path:
    """``--figure``'s folder: DIR/figures, or --out, which must be a folder (not a file, not a results
    folder whose own figures share the standard names) without figures optbench did not draw."""
    from optbench.figures.stamp import written_by_optbench

    if out is None:
        target = folder / "figures"
    else:
        target = Path(out)
        if target.suffix and not target.is_dir() and not out.endswith(("/", "\\")):
            fail(
                f"--figure writes a folder of figures; --out {out} names a file (give a folder, ending in / if its name has a dot)"
            )
        owner = _owner(target)
        if owner is not None:
            fail(f"--out {out} is the {owner}'s results folder; --figure writes into a folder of its own")
    if target.is_dir():
        alien = [p for p in sorted(target.glob(f"*.{fmt}")) if not written_by_optbench(p)]
        if alien:
            fail(f"{alien[0]} exists and optbench did not draw it; give --out another folder")
    return target


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
    # A figure that does not suit the data is skipped under --figure all (exit 0) and refused when asked
    # for by name (exit 2); one that broke is an error either way (exit 1).
    broken = [item for item in figures if item.path is None and not item.refused]
    if broken:
        fail(f"{len(broken)} of {len(figures)} figure(s) could not be drawn (skipped above)", 1)
    if only is not None and all(item.path is None for item in figures):
        fail(f"figure {figure!r} does not suit the data in {str(folder)!r} (skipped above)")


COMMANDS = {"plot": plot_cmd}
