"""`bench report`: one HTML or Markdown document from any results folder (reads the Parquet only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import check_results_folder, fail, handle_errors


@handle_errors
def report_cmd(
    folder: Annotated[
        Path, typer.Argument(help="Results folder of any bench command.", metavar="DIR", show_default=False)
    ],
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

    check_results_folder(folder)
    if out is not None and out.is_dir():
        fail(f"--out {out} is a folder; give the report's file name, e.g. {out / 'report.html'}")
    path = report.build_report(folder, fmt=fmt, figure_format=figure_format, compare=compare or [], out=out)
    typer.echo(f"report: {path}")


COMMANDS = {"report": report_cmd}
