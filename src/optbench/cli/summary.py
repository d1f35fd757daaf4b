"""`bench summary DIR`: the compact answer of a results folder, also printed at the end of `bench grid`.

Parses and validates only; the table is ``optbench.summary`` (``grid.summary.settings_table`` sorted). The
printing here is shared with `bench grid`: a one-line shape, the best setting per optimizer with its
stable lr range, the top K settings, and where to read on. Numbers never wrap: number columns are
no-wrap, text columns end in an ellipsis when the terminal is narrow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import fail, handle_errors

FORMATS = ("table", "csv", "json")
TOP_DEFAULT = 10


@handle_errors
def summary_cmd(
    folder: Annotated[
        Path, typer.Argument(help="Results folder (runs.parquet).", metavar="DIR", show_default=False)
    ],
    top: Annotated[
        int | None,
        typer.Option(
            help=f"Settings in the ranked table (default: {TOP_DEFAULT} for table, all for csv/json); in "
            "the table, where problems differ, the best ceil(K/n) of each of the n.",
            metavar="K",
            show_default=False,
        ),
    ] = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Axes the best setting is found per (repeatable, or comma-separated), e.g. "
            "--by optimizer,width. Default: optimizer, plus problem, scheduler and loss where they vary.",
            metavar="AXIS",
            show_default=False,
        ),
    ] = None,
    sort: Annotated[
        str,
        typer.Option(
            help="Column the ranking sorts on: final_loss, best_loss, final_val_loss, final_val_acc "
            "(highest first), wall_time_s, diverged or lr; ties go to the lower final loss. A column no "
            "run in DIR has is refused.",
            metavar="COLUMN",
        ),
    ] = "final_loss",
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="table (for people), csv or json (every column, for programs).", metavar="TEXT"
        ),
    ] = "table",
) -> None:
    """The answer of a grid: per optimizer the best setting (mean ± std over seeds, stable lr range,
    diverged and invalid counts, val accuracy), then the top settings.

    csv and json print the settings table of optbench.summary(DIR): one row per setting, sorted."""
    from optbench.grid.summary import check_sort, load_runs, summary

    if fmt not in FORMATS:
        fail(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
    check_sort(sort, top)  # --top 0 or -1 is refused in every format, as `bench grid` refuses it
    if not folder.is_dir():
        fail(f"results folder {str(folder)!r} does not exist")
    runs = load_runs(folder)
    by = split_commas(by)
    if fmt == "table":
        table = summary(runs, by=by, sort=sort)
        print_summary(_console(), runs, table, folder, top=TOP_DEFAULT if top is None else top, sort=sort)
        return
    table = summary(runs, by=by, sort=sort, top=top)
    text = table.to_csv(index=False) if fmt == "csv" else table.to_json(orient="records", indent=1)
    typer.echo(text.rstrip("\n"))


def split_commas(values: list[str] | None) -> list[str] | None:
    """``--by optimizer,momentum --by width`` -> [optimizer, momentum, width] (None when not given)."""
    if not values:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()] or None


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped: no terminal width to fit; one line per row
        console = Console(width=160)
    return console


# -------------------------------------------------------------------------------------------- printing


def rich_table(text, widths: list[int]):
    """A rich table (without its title: ``fitted_table`` prints that as a line of its own) with these column
    widths: number columns get their widest cell (never cut or wrapped), text columns may be narrower and
    end in an ellipsis."""
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for (name, numeric), width in zip(text.columns, widths, strict=True):
        table.add_column(
            name, justify="right" if numeric else "left", no_wrap=True, overflow="ellipsis", width=width
        )
    for row in text.rows:
        table.add_row(*row)
    return table


# Columns a narrow terminal may lose, the least telling first; the settings and the loss always stay.
DROPPABLE = ("val acc", "invalid", "diverged", "stable lr", "#")
TEXT_FLOOR = 6  # a text column is cut to no fewer characters than this (with its ellipsis)


def fit(text, width: int):
    """(the table, its column widths, the columns left out, the characters it still overflows by) to fit
    ``width`` characters: first text columns are cut (widest first, to ``TEXT_FLOOR``), then whole columns
    of ``DROPPABLE`` are left out; a number is never cut. Past that (a terminal narrower than the settings
    and the loss) the table overflows and the terminal wraps it, numbers whole."""
    left_out: list[str] = []
    while True:
        shown = text.without(left_out)
        widths = [
            max([len(name)] + [len(row[i]) for row in shown.rows])
            for i, (name, _) in enumerate(shown.columns)
        ]
        excess = sum(widths) + 2 * len(widths) - width  # each cell has a space on either side
        for i in sorted(range(len(widths)), key=lambda i: -widths[i]):
            if excess > 0 and not shown.columns[i][1]:
                cut = min(excess, max(widths[i] - TEXT_FLOOR, 0))
                widths[i] -= cut
                excess -= cut
        droppable = [n for n in DROPPABLE if n in [c for c, _ in shown.columns]]
        if excess <= 0 or not droppable:
            return shown, widths, left_out, max(excess, 0)
        left_out.append(droppable[0])


def fitted_table(console, text) -> None:
    """Print ``text`` as a table that fits the terminal, saying which columns it left out. The title is a
    line of its own, cut at the terminal's width: a table's title would wrap at the table's width."""
    width = console.width
    shown, widths, left_out, overflow = fit(text, width)
    console.print(text.title, markup=False, highlight=False, no_wrap=True, overflow="ellipsis")
    console.width = width + overflow  # rich would cut a number to fit; the terminal wraps it whole instead
    try:
        console.print(rich_table(shown, widths))
    finally:
        console.width = width
    if left_out:
        console.print(
            f"(left out to fit {width} columns: {', '.join(left_out)}; --format csv has every column)",
            markup=False,
            highlight=False,
        )


def print_summary(console, runs, table, out: Path, top: int = TOP_DEFAULT, sort: str = "final_loss") -> None:
    """The compact answer: shape, best per group, top ``top`` settings, problems, where to read on."""
    from optbench.report.answer import best_table, shape_line, top_table

    console.print(shape_line(runs, table), markup=False, highlight=False)
    fitted_table(console, best_table(table))
    if len(table) > 1:
        fitted_table(console, top_table(table, top, sort))
    reasons = runs[runs["status"].isin(["invalid", "failed"])]["reason"].value_counts()
    for reason, n in reasons.head(3).items():
        console.print(f"  {n} x {reason}", markup=False, highlight=False, overflow="ellipsis", no_wrap=True)
    warned = int(runs["warnings"].notna().sum()) if "warnings" in runs.columns else 0
    if warned:
        console.print(f"{warned} run(s) raised warnings (the warnings column of runs.parquet)")
    console.print(
        f"all {len(table)} settings: bench summary {out} --top {len(table)}", markup=False, highlight=False
    )
    console.print(f"figures and tables:  bench report {out}", markup=False, highlight=False)


COMMANDS = {"summary": summary_cmd}
