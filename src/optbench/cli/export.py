"""`bench export DIR --to csv|tensorboard|mlflow`: a results folder's runs and traces for other tools
(``optbench.export.export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import check_results_folder, handle_errors

VIEW = {
    "tensorboard": "view: tensorboard --logdir {dest}",
    "mlflow": "view: mlflow ui --backend-store-uri sqlite:///{database}",
    "csv": "read: pandas.read_csv('{dest}/traces.csv')",
}


@handle_errors
def export_cmd(
    folder: Annotated[
        Path, typer.Argument(help="A results folder (grid, lr-sweep, lr-find).", metavar="DIR")
    ],
    to: Annotated[
        str, typer.Option("--to", help="csv, tensorboard (extra: tensorboard) or mlflow (extra: mlflow).")
    ],
    out: Annotated[
        str | None,
        typer.Option(
            help="Destination folder: new, empty or an earlier export of this format (default DIR/<format>)."
        ),
    ] = None,
) -> None:
    """Export a results folder's runs and traces: CSV files, one TensorBoard run per cell (config as
    hparams), or one MLflow run per cell in a local store (no server)."""
    from optbench.export import export

    check_results_folder(folder)
    dest = export(folder, to, out)
    typer.echo(f"exported {folder} to {dest}")
    typer.echo(VIEW[to].format(dest=dest, database=(dest / "mlflow.db").resolve()))


COMMANDS = {"export": export_cmd}
