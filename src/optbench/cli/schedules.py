"""`bench schedules`: the lr per step of every scheduler, from the real scheduler objects."""

from __future__ import annotations

from typing import Annotated

import typer

from optbench.cli.allow import AllowImports, allow
from optbench.cli.common import FORMAT_HELP, handle_errors


@handle_errors
def schedules_cmd(
    ctx: typer.Context,
    steps: Annotated[
        int, typer.Option(help="Steps to draw (also the run length the defaults derive from).")
    ] = 100,
    lr: Annotated[float, typer.Option(help="Base learning rate.")] = 0.01,
    schedulers: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated scheduler specs, e.g. "
            "'steplr(step_size=5, gamma=0.8),cosine'. Default: every "
            "registered scheduler."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "png",
    out: Annotated[
        str | None,
        typer.Option(
            help="Output folder: new, empty or a schedules folder (default: a new results/schedules-<time>)."
        ),
    ] = None,
    allow_imports: AllowImports = None,
) -> None:
    """Draw the lr per step of every torch scheduler and our custom ones, from the real scheduler objects.

    Writes schedules.parquet (scheduler, step, lr), schedules.<format> and manifest.json. ReduceLROnPlateau
    is fed a constant loss (it needs a metric), so it cuts the lr every patience + 1 steps.
    """
    from optbench import store
    from optbench.experiments.schedules import schedules_experiment
    from optbench.spec import split_top_level

    allow(ctx, allow_imports)
    names = split_top_level(schedulers) if schedulers else None
    if names:  # a misspelt name or argument is a user error; torch refusing a value gets an empty panel
        from optbench.registry.schedulers import canonical_scheduler
        from optbench.registry.validate import check_scheduler_arguments

        for name in names:
            check_scheduler_arguments(canonical_scheduler(name))
    out = store.default_out("schedules") if out is None else out
    path = schedules_experiment(steps, lr, names, out=out, fmt=fmt)
    typer.echo(f"figure: {path}")
    notes = store.read_manifest(out).get("schedule_notes", {})
    for name, note in notes.items():
        typer.echo(f"note: {name}: {note}")


COMMANDS = {"schedules": schedules_cmd}
