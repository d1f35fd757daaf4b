"""`bench verify DIR`: check every file of a results folder; with --repair, set damaged files aside and
re-run exactly their cells.

Parses only; the work is ``optbench.store.verify.verify`` and ``optbench.grid.repair.repair``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import handle_errors


@handle_errors
def verify_cmd(
    folder: Annotated[
        Path, typer.Argument(help="Results folder of any bench command.", metavar="DIR", show_default=False)
    ],
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Move damaged files to DIR/_damaged/ (nothing is deleted), re-run their cells, rewrite "
            "runs.parquet, remove temp files of writes cut short.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Local worker processes for the re-runs. Default: the usable cores.", show_default=False
        ),
    ] = None,
) -> None:
    """Check a results folder: every commit record and trace file (sizes, row counts, checksums, run ids,
    duplicate rows), runs.parquet, the manifest, leftovers of killed writes. One line per problem; exit 0
    when the folder is sound, 1 when it is not (after --repair: when something could not be repaired)."""
    from optbench.store.verify import verify

    checked = verify(folder)
    for line in checked.notes:
        typer.echo(f"note: {line}")
    for line in checked.problems:
        typer.echo(f"problem: {line}")
    if not repair:
        typer.echo(checked.summary())
        raise typer.Exit(0 if checked.ok else 1)
    if checked.ok:
        typer.echo(f"{checked.summary()}; nothing to repair")
        return
    _repair(folder, workers)


def _repair(folder: Path, workers: int | None) -> None:
    from optbench.grid.repair import repair
    from optbench.store.verify import verify

    done = repair(folder, workers=workers)
    typer.echo(
        f"repaired {folder}: {len(done.damaged_files)} damaged file(s) moved to {folder / '_damaged'}, "
        f"{done.rerun} run(s) run again, {done.removed} leftover file(s) removed"
    )
    if done.unknown:
        typer.echo(
            f"{done.unknown} run(s) of damaged files could not be run again: their configs are lost with their "
            "commit record and runs.parquet; run their own command again to redo them",
            err=True,
        )
    after = verify(folder)
    typer.echo(after.summary())
    if done.unknown or not after.ok:
        raise typer.Exit(1)


COMMANDS = {"verify": verify_cmd}
