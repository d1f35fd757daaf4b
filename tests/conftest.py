"""Shared fixtures. Keep this small: one test module per src module holds its own helpers."""

from __future__ import annotations

import pytest


@pytest.fixture
def cli():
    """Invoke the ``bench`` app in-process: ``cli("lr-sweep", "--num", "3")`` -> click Result.

    stdout and stderr are kept apart (``result.stdout`` / ``result.stderr``), as a terminal sees them.
    """
    from typer.testing import CliRunner

    from optbench.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke
