"""`bench lr-find`: the learning-rate range test (``experiments.lrfind.lr_find``)."""

from __future__ import annotations

from typing import Annotated

import typer

from optbench.cli.allow import AllowImports, allow
from optbench.cli.common import FORMAT_HELP, handle_errors


@handle_errors
def lr_find_cmd(
    ctx: typer.Context,
    problem: Annotated[
        str, typer.Option(help="Problem spec (an MLP problem is the usual target).")
    ] = "mlp-classification",
    optimizer: Annotated[
        str, typer.Option(help="Optimizer spec, e.g. sgd, adam, 'adamw(weight_decay=0.01)'.")
    ] = "sgd",
    momentum: Annotated[
        float | None, typer.Option(help="Momentum (beta1 for the Adam family); default: the optimizer's own.")
    ] = None,
    start: Annotated[float, typer.Option(help="First learning rate.")] = 1e-7,
    end: Annotated[float, typer.Option(help="Last learning rate (reached at the last step).")] = 10.0,
    steps: Annotated[
        int, typer.Option(help="Steps; the lr grows by (end/start)^(1/(steps-1)) per step.")
    ] = 100,
    beta: Annotated[float, typer.Option(help="EMA smoothing factor of the loss (bias-corrected).")] = 0.98,
    stop_factor: Annotated[
        float, typer.Option(help="Stop where the smoothed loss exceeds this times its minimum.")
    ] = 4.0,
    init: Annotated[str, typer.Option(help="Init scheme for MLP problems (spec syntax).")] = "default",
    loss: Annotated[str, typer.Option(help="Loss for MLP problems; auto = the problem's own.")] = "auto",
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size (MLP problems).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "png",
    out: Annotated[
        str | None,
        typer.Option(
            help="Output folder: new, empty or this same run's (default: a new results/lr-find-<time>)."
        ),
    ] = None,
    allow_imports: AllowImports = None,
) -> None:
    """Learning-rate range test: grow the lr exponentially, smooth the loss, suggest an lr.

    Prints three suggestions: valley (fastai's default rule), steepest descent, minimum/10; writes a
    normal results folder plus lr_find.<format>.
    """
    from optbench import store
    from optbench.experiments import lrfind
    from optbench.figures.style import check_format

    allow(ctx, allow_imports)
    lrfind.check_range(start, end, steps)
    check_format(fmt)
    out = store.default_out("lr-find") if out is None else out
    result = lrfind.lr_find(
        problem,
        optimizer,
        start=start,
        end=end,
        steps=steps,
        momentum=momentum,
        init=init,
        loss=loss,
        batch_size=batch_size,
        device=device,
        seed=seed,
        beta=beta,
        stop_factor=stop_factor,
        out=out,
        fmt=fmt,
    )
    analysis = result.analysis
    typer.echo(
        f"lr-find: {result.config.problem}, {result.config.optimizer}, lr {start:g} -> {end:g} over "
        f"{steps} steps; stopped: {analysis.stopped_because} after {analysis.stop} steps"
    )
    for label, (value, _) in analysis.suggestions().items():
        typer.echo(f"  {label:<11} lr = {value:.3g}" if value is not None else f"  {label:<11} none")
    typer.echo(
        f"suggested lr (valley): {result.suggested_lr:.3g}" if result.suggested_lr else "no suggestion"
    )
    typer.echo(f"results: {result.out}")
    for figure in result.figures:
        typer.echo(f"figure:  {figure}")


COMMANDS = {"lr-find": lr_find_cmd}
