"""`bench lr-sweep`: one config at many learning rates, the largest stable lr, the analytic bound, the bound
predicted from the initial sharpness and each lr's regime."""

from __future__ import annotations

from typing import Annotated

import typer

from optbench.cli.allow import AllowImports, allow
from optbench.cli.common import handle_errors

LrMinOption = Annotated[float, typer.Option("--min", help="Smallest learning rate.")]

LrMaxOption = Annotated[float, typer.Option("--max", help="Largest learning rate.")]

NumOption = Annotated[int, typer.Option("--num", help="Number of learning rates.")]

SpacingOption = Annotated[str, typer.Option(help="Spacing of the learning rates: linear or log.")]

StepsOption = Annotated[int, typer.Option(help="Optimizer steps per run.")]

ProblemOption = Annotated[
    str, typer.Option(help="Problem spec, e.g. quadratic or 'rosenbrock(x0=(-1.5, 2))'.")
]

OptimizerOption = Annotated[str, typer.Option(help="Optimizer spec, e.g. sgd, 'adamw(weight_decay=0.1)'.")]

MomentumOption = Annotated[
    float | None, typer.Option(help="Momentum (beta1 for the Adam family); default: the optimizer's own.")
]

SchedulerOption = Annotated[
    str, typer.Option(help="Scheduler spec, e.g. none, 'steplr(step_size=5, gamma=0.8)'.")
]

InitOption = Annotated[str, typer.Option(help="Init scheme for MLP problems (spec syntax).")]

LossOption = Annotated[str, typer.Option(help="Loss for MLP problems; auto = the problem's own.")]

PrecisionOption = Annotated[
    str, typer.Option(help="fp32, fp16 (autocast + GradScaler) or bf16 (autocast); MLP problems.")
]

DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]

SeedOption = Annotated[int, typer.Option(help="Random seed.")]

BatchSizeOption = Annotated[
    int | None,
    typer.Option(
        help="Minibatch size for MLP problems (its n_train: full-batch gradient descent). Default: the "
        "problem's own.",
        show_default=False,
    ),
]

SharpnessEveryOption = Annotated[
    int,
    typer.Option(
        help="Also track the sharpness (top Hessian eigenvalue; Adam/AdamW: preconditioned) every K steps "
        "and draw it against each lr's threshold (sharpness_vs_step.png); 0: only the initial one.",
        metavar="K",
    ),
]

OutOption = Annotated[
    str | None,
    typer.Option(
        help="Output folder: new, empty, or this same sweep's (an interrupted sweep resumes). "
        "Default: a new folder under results/.",
        show_default=False,
    ),
]

PlotsOption = Annotated[bool, typer.Option(help="Draw the two figures.")]


@handle_errors
def lr_sweep_cmd(
    ctx: typer.Context,
    lr_min: LrMinOption = 0.01,
    lr_max: LrMaxOption = 0.5,
    num: NumOption = 10,
    spacing: SpacingOption = "linear",
    steps: StepsOption = 100,
    problem: ProblemOption = "quadratic",
    optimizer: OptimizerOption = "sgd",
    momentum: MomentumOption = None,
    scheduler: SchedulerOption = "none",
    init: InitOption = "default",
    loss: LossOption = "auto",
    precision: PrecisionOption = "fp32",
    device: DeviceOption = "cpu",
    seed: SeedOption = 0,
    batch_size: BatchSizeOption = None,
    sharpness_every: SharpnessEveryOption = 0,
    out: OutOption = None,
    plots: PlotsOption = True,
    allow_imports: AllowImports = None,
) -> None:
    """Sweep the learning rate; print lr, final loss, status and regime (monotone / catapult / no progress /
    diverged); find the largest stable lr and compare it with the analytic bound where one exists (SGD on
    the quadratic: lr < 2(1+m)/L = 0.25) and, for SGD on any problem, with the bound 2(1+m)/lambda_0
    predicted from the initial sharpness lambda_0."""
    from rich.console import Console
    from rich.table import Table

    from optbench import store
    from optbench.experiments.sweep import lr_grid, lr_sweep
    from optbench.registry.validate import canonical_config
    from optbench.spec import RunConfig

    allow(ctx, allow_imports)
    lr_grid(lr_min, lr_max, num, spacing)  # validate before anything is written
    base = canonical_config(
        RunConfig(
            problem=problem,
            optimizer=optimizer,
            momentum=momentum,
            scheduler=scheduler,
            init=init,
            loss=loss,
            precision=precision,
            device=device,
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            sharpness_every=sharpness_every,
        )
    )
    out = store.default_out("lr-sweep") if out is None else out
    result = lr_sweep(lr_min, lr_max, num, spacing=spacing, base=base, out=out, plots=plots)

    console = Console()
    table = Table(title=f"lr sweep: {base.problem}, {base.optimizer}, {base.steps} steps")
    for column in ("lr", "final loss", "status", "stable", "regime"):
        table.add_column(column, justify="left" if column in ("status", "regime") else "right")
    for _, row in result.runs.iterrows():
        status = row["status"] + (
            f" at step {int(row['diverged_step'])}" if row["status"] == "diverged" else ""
        )
        if row["status"] in ("invalid", "failed"):
            status += f": {row['reason']}"
        table.add_row(
            f"{row['lr']:.4g}",
            f"{row['final_loss']:.4g}",
            status,
            "yes" if row["stable"] else "no",
            row["regime"] or "",
        )
    console.print(table)
    largest = f"{result.largest_stable:.4g}" if result.largest_stable is not None else "none"
    console.print(f"largest stable lr: {largest}")
    if result.check is not None:
        console.print(result.check.sentence())
    for line in result.sharpness_lines():
        console.print(line)
    console.print(f"results: {result.out}")
    for figure in result.figures:
        console.print(f"figure:  {figure}")


COMMANDS = {"lr-sweep": lr_sweep_cmd}
