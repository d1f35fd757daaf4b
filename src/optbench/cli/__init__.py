"""The ``bench`` command line: ``app`` is the Typer app; one thin module per command."""

from optbench.cli.app import app, main

__all__ = ["app", "main"]
