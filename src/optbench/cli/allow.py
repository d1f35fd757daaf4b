"""``--allow-imports``: the option of every command that takes spec strings (grid, lr-sweep, lr-find,
schedules). Without it no ``package.module:Name`` in a spec or a grid file is imported."""

from __future__ import annotations

import os
from typing import Annotated

import typer

AllowImports = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-imports",
        metavar="PKG[,PKG...]",
        help="Top-level packages whose import paths specs may name (mypkg for 'mypkg.optim:Lion' or "
        "lr_lambda='mypkg.sched:warmup'): their code runs. Repeatable or comma-separated. Never the "
        "standard library; a grid file cannot allow anything. Default: none.",
        show_default=False,
    ),
]


def allow(context: typer.Context, packages: list[str] | None) -> None:
    """Allow ``packages`` for this command: in this process and the workers it spawns (the environment
    variable OPTBENCH_ALLOW_IMPORTS), restored when the command ends (an in-process caller keeps its own)."""
    if not packages:
        return
    from optbench.registry.imports import ENV_VAR, allow_imports

    before = os.environ.get(ENV_VAR)
    allow_imports(*packages)
    context.call_on_close(lambda: _restore(ENV_VAR, before))


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
