"""Shared CLI plumbing: one-line errors (exit 2 for bad input, 1 for a full disk), the results folder a
command writes into."""

from __future__ import annotations

import contextlib
import errno
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from optbench.errors import OptbenchError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # the run, not the input, is at fault: exit 1
_running: list[str] = []  # the command being run (its CLI name), innermost last


def fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit ``code`` (2: bad input; no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def os_error_line(err: OSError) -> str:
    """A file-system error as one phrase: the file (the final name, not our temp name) and the reason."""
    from optbench.store.files import TEMP_NAME

    reason = err.strerror or str(err)
    if not err.filename:
        return reason
    path = Path(err.filename)
    temp = TEMP_NAME.match(path.name)
    return f"{path.parent / temp['name'] if temp else path}: {reason}"


def os_error_code(err: OSError) -> int:
    return 1 if err.errno in DISK_FULL else 2


def handle_errors(fn):
    """Turn OptbenchError, and any file-system error that reaches a command, into one line: exit 2
    (exit 1 for a full disk)."""

    name = fn.__name__.removesuffix("_cmd").replace("_", "-")  # init_report_cmd -> init-report

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _running.append(name)
        try:
            return fn(*args, **kwargs)
        except OptbenchError as err:
            fail(str(err), getattr(err, "exit_code", 2))  # 1 where the run, not the input, failed
        except OSError as err:
            fail(os_error_line(err), os_error_code(err))
        finally:
            _running.pop()

    return wrapper


@contextlib.contextmanager
def fresh_out_dir(out: str | Path, kind: str | None = None) -> Iterator[Path]:
    """Hold the results folder ``out`` for this command (``store.results_folder``): refused if it is not
    ours or another command's kind; removed again if the command fails before it committed a run.

    ``kind`` defaults to the name of the running command (``init-report``, ``amp``, ...).
    """
    from optbench import store

    kind = kind or _running[-1]
    with store.results_folder(out, kind) as folder:
        yield folder


def echo_err(message: str) -> None:
    print(message, file=sys.stderr)


FORMAT_HELP = "Figure format: png, svg or pdf."


def check_results_folder(folder: Path) -> None:
    """A folder argument that names no folder is one line (exit 2), before anything is read."""
    if not folder.exists():
        fail(f"results folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        fail(f"{str(folder)!r} is not a folder")
