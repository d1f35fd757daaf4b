"""Shared CLI plumbing: one-line errors with exit code 2, cleanup of half-made output folders."""

from __future__ import annotations

import functools
import shutil
import sys
from pathlib import Path

import typer

from optbench.errors import OptbenchError


def fail(message: str) -> None:
    """Print one line on stderr and exit 2 (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def handle_errors(fn):
    """Turn OptbenchError into a one-line message + exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OptbenchError as err:
            fail(str(err))

    return wrapper


class fresh_out_dir:
    """Context manager: remove ``out`` again if the command fails before writing anything useful.

    Only folders this command created are removed; an existing folder (resume) is never touched.
    """

    def __init__(self, out: Path):
        from optbench.store import require_folder

        self.out = Path(out)
        require_folder(self.out)
        self.created = not self.out.exists()

    def __enter__(self) -> Path:
        return self.out

    def __exit__(self, exc_type, exc, tb):
        # An interrupted command keeps what it committed (it can resume); a failed one leaves nothing.
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        if exc_type is not None and not interrupted and self.created and self.out.exists():
            shutil.rmtree(self.out, ignore_errors=True)
        return False


def echo_err(message: str) -> None:
    print(message, file=sys.stderr)
