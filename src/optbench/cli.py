"""The ``bench`` command line. Thin: commands live in ``optbench.commands.*``, each parses and validates,
then calls a plain function of the Python API. Nothing heavy (torch, pandas, matplotlib) is imported
until a command runs, so ``bench --help`` answers instantly.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

app = typer.Typer(
    name="bench",
    help="Measure how PyTorch optimizers, LR schedulers, weight inits and mixed precision behave.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines COMMANDS = {"cli-name": function}. One module per concept, one owner per module.
COMMAND_MODULES = (
    "optbench.commands.listing",
    "optbench.commands.sweep",
    "optbench.commands.grid",
    "optbench.commands.init_report",
    "optbench.commands.amp",
    "optbench.commands.plots",
)

for _module_name in COMMAND_MODULES:
    if importlib.util.find_spec(_module_name) is None:  # a command module not written yet
        continue
    for _cli_name, _fn in importlib.import_module(_module_name).COMMANDS.items():
        app.command(_cli_name)(_fn)


def main() -> None:
    app()
