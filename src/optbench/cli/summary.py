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
            help=f"Settings in the ranked table (default: {TOP_DEFAULT} for table, all for csv/json).",
            metavar="K",
            show_default=False,
        ),
    ] = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Axis the best setting is found per (repeatable), e.g. --by optimizer --by width. "
            "Default: optimizer, plus problem, scheduler and loss where they vary.",
            metavar="AXIS",
            show_default=False,
        ),
    ] = None,
    sort: Annotated[
        str,
        typer.Option(
            help="Column the ranking sorts on: final_loss, best_loss, final_val_loss, final_val_acc "
            "(highest first), wall_time_s, diverged or lr.",
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
    from optbench.grid.summary import load_runs, summary

    if fmt not in FORMATS:
        fail(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not folder.is_dir():
        fail(f"results folder {str(folder)!r} does not exist")
    runs = load_runs(folder)
    if fmt == "table":
        table = summary(runs, by=by, sort=sort)
        print_summary(_console(), runs, table, folder, top=top or TOP_DEFAULT, sort=sort)
        return
    table = summary(runs, by=by, sort=sort, top=top)
    text = table.to_csv(index=False) if fmt == "csv" else table.to_json(orient="records", indent=1)
    typer.echo(text.rstrip("\n"))


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped: no terminal width to fit; one line per row
        console = Console(width=160)
    return console


# -------------------------------------------------------------------------------------------- printing


def rich_table(text):
    """A rich table whose number columns are never cut or wrapped (their width is their widest cell) and
    whose text columns end in an ellipsis when the terminal is narrow."""
    from rich import box
    from rich.table import Table

    title, columns, rows = text.title, text.columns, text.rows
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for i, (name, numeric) in enumerate(columns):
        widest = max([len(name)] + [len(row[i]) for row in rows])
        table.add_column(
            name,
            justify="right" if numeric else "left",
            no_wrap=True,
            overflow="ellipsis",
            min_width=widest if numeric else min(widest, 6),
        )
    for row in rows:
        table.add_row(*row)
    return table


def print_summary(console, runs, table, out: Path, top: int = TOP_DEFAULT, sort: str = "final_loss") -> None:
    """The compact answer: shape, best per group, top ``top`` settings, problems, where to read on."""
    from optbench.report.answer import best_table, shape_line, top_table

    console.print(shape_line(runs, table), markup=False, highlight=False)
    console.print(rich_table(best_table(table)))
    if len(table) > 1:
        console.print(rich_table(top_table(table, top, sort)))
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
