"""`bench summary DIR`: the compact answer of a results folder, also printed at the end of `bench grid`.

Parses and validates only; the table is ``optbench.summary`` (``grid.summary.settings_table`` sorted). The
printing here is shared with `bench grid`: a one-line shape, the best setting per optimizer with its
stable lr range, the top K settings, and where to read on. Numbers never wrap: number columns are
no-wrap, text columns end in an ellipsis when the terminal is narrow.
"""

from __future__ import annotations

import math
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


def num(value, digits: int = 3) -> str:
    """A number in at most ``digits`` significant digits; "-" for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}g}"
    return str(value)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "default"
    return num(value) if isinstance(value, float) else str(value)


def loss_text(row) -> str:
    text = num(row["final_loss"])
    if row["final_loss_std"] == row["final_loss_std"]:  # not NaN: 2+ ok seeds
        text += f" ± {num(row['final_loss_std'], 2)}"
    return text


def shape_line(runs, table) -> str:
    """``500 runs: 4 optimizer x 25 lr x 5 momentum, 1 seed; 482 ok, 18 diverged``."""
    axes = [c for c in table.attrs["axes"] if table[c].astype(object).map(str).nunique() > 1]
    sizes = " x ".join(f"{table[c].astype(object).map(str).nunique()} {c}" for c in axes) or "1 setting"
    seeds = int(runs["seed"].nunique())
    counts = runs["status"].value_counts()
    statuses = ", ".join(
        f"{int(counts[s])} {s}" for s in ("ok", "diverged", "invalid", "failed") if s in counts
    )
    return f"{len(runs)} runs: {sizes}, {seeds} seed{'s' * (seeds != 1)}; {statuses}"


def _table(title: str, columns: list[tuple[str, bool]], rows: list[list[str]]):
    """A rich table whose number columns are never cut or wrapped (their width is their widest cell) and
    whose text columns end in an ellipsis when the terminal is narrow."""
    from rich import box
    from rich.table import Table

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


def _varying(table) -> list[str]:
    return [c for c in table.attrs["axes"] if table[c].astype(object).map(str).nunique() > 1]


def _is_numeric(table, column: str) -> bool:
    return table[column].dtype.kind in "fiu"


def best_table(table):
    """Per ``by`` group: its best setting, loss, stable lr range, diverged (and invalid) runs, val accuracy."""
    by = table.attrs["by"]
    setting = [c for c in _varying(table) if c not in by]
    acc = bool(table["final_val_acc"].notna().any())
    bad = bool((table["invalid"] + table["failed"]).any())
    columns = [(c, False) for c in by] + [(c, _is_numeric(table, c)) for c in setting]
    columns += [("final loss", True), ("stable lr", True), ("diverged", True)]
    columns += [("invalid", True)] * bad + [("val acc", True)] * acc
    rows = []
    for _, group in table.groupby([table[c].astype(object).map(str) for c in by], sort=False):
        best = group[group["best"]]
        row = best.iloc[0] if len(best) else group.iloc[0]
        cells = [_cell(row[c]) for c in by]
        if len(best):
            stable = f"{num(row['stable_lr_min'])}–{num(row['stable_lr_max'])}"
            cells += [_cell(row[c]) for c in setting] + [loss_text(row), stable]
        else:
            cells += ["-"] * len(setting) + ["none finished", "-"]
        cells.append(f"{int(group['diverged'].sum())}/{int(group['seeds'].sum())}")
        cells += [str(int(group[["invalid", "failed"]].sum().sum()))] * bad
        cells += [num(row["final_val_acc"]) if len(best) else "-"] * acc
        rows.append(cells)
    title = f"best per {', '.join(by)} (lowest mean final loss, all seeds ok)"
    return _table(title, columns, rows)


def top_table(table, top: int, sort: str):
    """The first ``top`` settings of the sorted table: rank, the varying axes, loss, diverged seeds."""
    varying = _varying(table)
    acc = bool(table["final_val_acc"].notna().any())
    columns = [("#", True)] + [(c, _is_numeric(table, c)) for c in varying]
    columns += [("final loss", True), ("diverged", True)] + [("val acc", True)] * acc
    shown = table.head(top)
    rows = []
    for rank, (_, row) in enumerate(shown.iterrows(), 1):
        cells = [str(rank)] + [_cell(row[c]) for c in varying]
        cells += [loss_text(row), f"{int(row['diverged'])}/{int(row['seeds'])}"]
        rows.append(cells + [num(row["final_val_acc"])] * acc)
    return _table(f"top {len(shown)} of {len(table)} settings by {sort}", columns, rows)


def print_summary(console, runs, table, out: Path, top: int = TOP_DEFAULT, sort: str = "final_loss") -> None:
    """The compact answer: shape, best per group, top ``top`` settings, problems, where to read on."""
    console.print(shape_line(runs, table), markup=False, highlight=False)
    console.print(best_table(table))
    if len(table) > 1:
        console.print(top_table(table, top, sort))
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
