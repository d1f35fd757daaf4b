"""The ``bench`` command line. Thin: commands live in ``optbench.cli.*``, each parses and validates,
then calls a plain function of the Python API. Nothing heavy (torch, pandas, matplotlib) is imported
until a command runs, so ``bench --help`` answers instantly.
"""

from __future__ import annotations

import typer

from optbench.cli import amp, grid, init_report, listing, plots, summary, sweep

app = typer.Typer(
    name="bench",
    help="Measure how PyTorch optimizers, LR schedulers, weight inits and mixed precision behave.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each command module defines COMMANDS = {"cli-name": function}: one module per command.
for _module in (listing, sweep, grid, summary, init_report, amp, plots):
    for _cli_name, _fn in _module.COMMANDS.items():
        app.command(_cli_name)(_fn)


def main() -> None:
    app()
