"""The ``bench`` command line. Thin: commands live in ``optbench.cli.*``, each parses and validates,
then calls a plain function of the Python API. Nothing heavy (torch, pandas, matplotlib) is imported
until a command runs, so ``bench --help`` answers instantly.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Annotated

import typer

from optbench.cli import (
    amp,
    export,
    grid,
    init_report,
    listing,
    plot,
    plots,
    report,
    schedules,
    summary,
    sweep,
    verify,
)

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

# Metavars as people know them from click and Typer (FLOAT, TEXT), not the type names (<float>, <str>)
# this Typer prints by default; a flag shows none.
_METAVARS = {str: "TEXT", int: "INTEGER", float: "FLOAT", Path: "PATH", bool: ""}


def classic_metavar(annotation) -> str | None:
    """``float`` -> FLOAT, ``list[str] | None`` -> TEXT, ``bool`` -> "" (a flag); None for anything else."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is not None and args:  # list[X], X | None
        return classic_metavar(args[0])
    return _METAVARS.get(annotation)


def flowing(text: str | None) -> str | None:
    """Help text whose paragraphs flow: the line breaks of a docstring are not kept inside a paragraph
    (Typer's rich mode keeps them in every paragraph but a command's first, so a wide terminal showed
    lines broken mid-sentence). A paragraph that starts with \\b (click's "keep as written") is kept."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def _usage_name(argument) -> str:
    """An argument as click writes it in the usage line: DIR, [DIR] when optional (Typer 0.29 writes a
    required one as {DIR})."""
    name = argument.metavar or argument.name.upper()
    name = name if argument.required else f"[{name}]"
    return name + "..." * (argument.nargs != 1)


class _ClassicMetavars:
    """Help pages as click writes them: classic metavars (every parameter without a metavar of its own gets
    one), arguments without braces in the usage line, paragraphs that flow."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.help = flowing(self.help)

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            descriptor = getattr(param, "type_descriptor", None)
            metavar = classic_metavar(descriptor.annotation) if descriptor is not None else None
            if getattr(param, "is_flag", False):
                metavar = ""
            if isinstance(param, typer.core.TyperArgument):
                param.metavar = param.metavar or param.name.upper()  # Usage: bench list [OPTIONS] KIND
                param._usage_display_name = lambda param=param: _usage_name(param)
                if metavar is not None:
                    param.display_type_rich = lambda ctx, text=metavar: text
            elif param.metavar is None and metavar is not None:
                param.metavar = metavar
        return params


class ClassicCommand(_ClassicMetavars, typer.core.TyperCommand):
    pass


class ClassicGroup(_ClassicMetavars, typer.core.TyperGroup):
    pass


app = typer.Typer(
    name="bench",
    help="Measure how PyTorch optimizers, LR schedulers, weight inits and mixed precision behave.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
    cls=ClassicGroup,
)


def _version(value: bool) -> None:
    if value:
        from optbench import __version__

        typer.echo(f"optbench {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Measure how PyTorch optimizers, LR schedulers, weight inits and mixed precision behave."""


# Each command module defines COMMANDS = {"cli-name": function}: one module per command.
for _module in (
    listing,
    sweep,
    grid,
    summary,
    init_report,
    amp,
    plot,
    schedules,
    plots,
    report,
    verify,
    export,
):
    for _cli_name, _fn in _module.COMMANDS.items():
        app.command(_cli_name, context_settings=HELP_OPTIONS, cls=ClassicCommand)(_fn)


def main() -> None:
    app()
