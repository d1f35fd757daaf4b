"""The options of `bench grid`, one alias each, so that the command reads as a list of its parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Axis = list[str] | None


def _axis(help_text: str, metavar: str = "VALUES"):
    return typer.Option(help=help_text, metavar=metavar, show_default=False)


ProblemAxis = Annotated[Axis, _axis("Problems, e.g. quadratic, mlp-classification. Default: quadratic.")]
OptimizerAxis = Annotated[
    Axis, _axis("Optimizers, e.g. sgd,adamw or 'adamw(weight_decay=0.1)'. Default: sgd.")
]
LrAxis = Annotated[
    Axis,
    _axis(
        "Learning rates, e.g. 0.003,0.03 or linspace(0.01,0.5,50) or logspace(-4,0,9) "
        "(base-10 exponents). Default: 0.01."
    ),
]
MomentumAxis = Annotated[
    Axis,
    _axis(
        "Momentum values: SGD/RMSprop's momentum, beta1 for the Adam family, e.g. "
        "0,0.9 or linspace(0,0.9,10); 'none' keeps the optimizer's default "
        "(the default)."
    ),
]
SchedulerAxis = Annotated[
    Axis, _axis("LR schedulers, e.g. none, 'steplr(step_size=50, gamma=0.5)'. Default: none.")
]
InitAxis = Annotated[
    Axis, _axis("Weight inits for MLP problems, e.g. default,kaiming_normal. Default: default.")
]
LossAxis = Annotated[Axis, _axis("Losses for MLP problems; auto = the problem's own (the default).")]
PrecisionAxis = Annotated[Axis, _axis("Precisions: fp32, fp16, bf16. Default: fp32.")]
DeviceAxis = Annotated[Axis, _axis("Devices: cpu, cuda, cuda:N or auto. Default: cpu.")]
SeedAxis = Annotated[Axis, _axis("Seeds, e.g. 0,1,2. Default: 0.")]
SeedsOption = Annotated[
    int | None, typer.Option(help="Run seeds 0..N-1 (instead of --seed).", show_default=False)
]
StepsAxis = Annotated[Axis, _axis("Optimizer steps per run. Default: 100.")]
BatchSizeAxis = Annotated[Axis, _axis("Minibatch sizes for MLP problems. Default: the problem's own.")]
WidthAxis = Annotated[Axis, _axis("MLP hidden widths (folded into the problem spec).")]
DepthAxis = Annotated[Axis, _axis("MLP hidden layer counts (folded into the problem spec).")]
ActivationAxis = Annotated[Axis, _axis("MLP activations, e.g. relu,tanh (folded into the problem spec).")]
HeadLrScaleAxis = Annotated[
    Axis, _axis("MLP problems: the last layer's lr is lr x scale, in its own param group. Default: 1.")
]
FreezeAxis = Annotated[
    Axis, _axis("MLP problems: the first k Linear layers get requires_grad=False. Default: 0.")
]
SharpnessEveryAxis = Annotated[
    Axis,
    _axis(
        "Measure the sharpness (top Hessian eigenvalue; Adam/AdamW also preconditioned) every K steps into "
        "the trace columns sharpness, precond_sharpness; e.g. 100. Default: 0 (off).",
        "K",
    ),
]
SpecOption = Annotated[
    Path | None,
    typer.Option(
        help="TOML file describing the grid (axes as lists, fixed "
        "settings as scalars); the options above override it.",
        show_default=False,
    ),
]
OutOption = Annotated[
    str | None,
    typer.Option(
        help="Results folder: new, empty, or a grid's. Runs already in it are skipped (resume). "
        "Default: a new folder under results/.",
        show_default=False,
    ),
]
ForceOption = Annotated[bool, typer.Option(help="Run every cell again, even those already in --out.")]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        help="Local worker processes. Default: the usable cores; 1 runs in this process.",
        show_default=False,
    ),
]
ExecutorOption = Annotated[str, typer.Option(help="Where runs execute: local (a process pool) or ray.")]
AddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster address (default: start a local Ray).", show_default=False)
]
GpusPerRunOption = Annotated[float, typer.Option(help="GPU fraction a CUDA run requests from Ray.")]
EngineOption = Annotated[
    str,
    typer.Option(
        help="auto: batch the cells the batched engine supports, the rest on the "
        "reference engine; batched: batch every supported cell; reference: "
        "run every cell through torch.optim one by one."
    ),
]
ExactnessOption = Annotated[
    str,
    typer.Option(
        help="The batched engine's contract: auto (exact on CPU, fast on CUDA); exact (torch.optim's "
        "float32 bits; CPU only); fast (every product, activation and loss batched; agrees with "
        "torch.optim within the spread of torch's own implementations, docs/batched-engine.md)."
    ),
]
ProgressOption = Annotated[bool, typer.Option(help="Show the live progress bar.")]
MaxCellsOption = Annotated[
    int,
    typer.Option(help="Refuse a grid of more cells than this (a typo in an axis can ask for billions)."),
]
TopOption = Annotated[
    int,
    typer.Option(
        help="Settings in the closing top-K table; where problems differ, the best ceil(K/n) of each of the n "
        "(all: bench summary OUT).",
        metavar="K",
    ),
]
SortOption = Annotated[
    str,
    typer.Option(
        help="Column the closing table ranks on: final_loss, best_loss, final_val_loss, "
        "final_val_acc (highest first), wall_time_s, diverged or lr; ties go to the lower final loss. "
        "A column no run has (val loss and accuracy need a held-out set) is refused when the grid ends; "
        "its runs are kept.",
        metavar="COLUMN",
    ),
]
