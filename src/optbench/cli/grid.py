"""`bench grid`: the cartesian product of a few axes, run on all local cores (or Ray), resumable.

Parses and validates only; the work is ``optbench.grid.run_grid``. Nothing heavy is imported until the
command runs, so ``bench --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import echo_err, handle_errors

SUMMARY_ROWS = 60  # groups shown in the summary table; all of them are in runs.parquet

Axis = list[str] | None


def _axis(help_text: str, metavar: str = "VALUES"):
    return typer.Option(help=help_text, metavar=metavar, show_default=False)


@handle_errors
def grid_cmd(
    problem: Annotated[
        Axis, _axis("Problems, e.g. quadratic, mlp-classification. Default: quadratic.")
    ] = None,
    optimizer: Annotated[
        Axis, _axis("Optimizers, e.g. sgd,adamw or 'adamw(weight_decay=0.1)'. Default: sgd.")
    ] = None,
    lr: Annotated[
        Axis,
        _axis(
            "Learning rates, e.g. 0.003,0.03 or linspace(0.01,0.5,50) or logspace(-4,0,9) "
            "(base-10 exponents). Default: 0.01."
        ),
    ] = None,
    momentum: Annotated[
        Axis,
        _axis(
            "Momentum values: SGD/RMSprop's momentum, beta1 for the Adam family, e.g. "
            "0,0.9 or linspace(0,0.9,10); 'none' keeps the optimizer's default "
            "(the default)."
        ),
    ] = None,
    scheduler: Annotated[
        Axis, _axis("LR schedulers, e.g. none, 'steplr(step_size=50, gamma=0.5)'. Default: none.")
    ] = None,
    init: Annotated[
        Axis, _axis("Weight inits for MLP problems, e.g. default,kaiming_normal. Default: default.")
    ] = None,
    loss: Annotated[Axis, _axis("Losses for MLP problems; auto = the problem's own (the default).")] = None,
    precision: Annotated[Axis, _axis("Precisions: fp32, fp16, bf16. Default: fp32.")] = None,
    device: Annotated[Axis, _axis("Devices: cpu, cuda, cuda:N or auto. Default: cpu.")] = None,
    seed: Annotated[Axis, _axis("Seeds, e.g. 0,1,2. Default: 0.")] = None,
    seeds: Annotated[
        int | None, typer.Option(help="Run seeds 0..N-1 (instead of --seed).", show_default=False)
    ] = None,
    steps: Annotated[Axis, _axis("Optimizer steps per run. Default: 100.")] = None,
    batch_size: Annotated[
        Axis, _axis("Minibatch sizes for MLP problems. Default: the problem's own.")
    ] = None,
    width: Annotated[Axis, _axis("MLP hidden widths (folded into the problem spec).")] = None,
    depth: Annotated[Axis, _axis("MLP hidden layer counts (folded into the problem spec).")] = None,
    activation: Annotated[
        Axis, _axis("MLP activations, e.g. relu,tanh (folded into the problem spec).")
    ] = None,
    head_lr_scale: Annotated[
        Axis, _axis("MLP problems: the last layer's lr is lr x scale, in its own param group. Default: 1.")
    ] = None,
    freeze: Annotated[
        Axis, _axis("MLP problems: the first k Linear layers get requires_grad=False. Default: 0.")
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            help="TOML file describing the grid (axes as lists, fixed "
            "settings as scalars); the options above override it.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Results folder. Runs already in it are skipped (resume). "
            "Default: a new folder under results/.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Run every cell again, even those already in --out.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Local worker processes. Default: the usable cores; 1 runs in this process.",
            show_default=False,
        ),
    ] = None,
    executor: Annotated[
        str, typer.Option(help="Where runs execute: local (a process pool) or ray.")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray).", show_default=False)
    ] = None,
    gpus_per_run: Annotated[float, typer.Option(help="GPU fraction a CUDA run requests from Ray.")] = 0.25,
    engine: Annotated[
        str,
        typer.Option(
            help="auto: batch the cells the batched engine supports, the rest on the "
            "reference engine; batched: batch every supported cell; reference: "
            "run every cell through torch.optim one by one."
        ),
    ] = "auto",
    exactness: Annotated[
        str,
        typer.Option(
            help="The batched engine's contract: auto (exact on CPU, fast on CUDA); exact (torch.optim's "
            "float32 bits; CPU only); fast (every product, activation and loss batched; agrees with "
            "torch.optim within the spread of torch's own implementations, docs/batched-engine.md)."
        ),
    ] = "auto",
    progress: Annotated[bool, typer.Option(help="Show the live progress bar.")] = True,
    max_cells: Annotated[
        int,
        typer.Option(help="Refuse a grid of more cells than this (a typo in an axis can ask for billions)."),
    ] = 1_000_000,
) -> None:
    """Run the cartesian product of the given axes and print, per group of seeds, the final loss
    mean ± std, the diverged count and the best cell per optimizer.

    Every axis option (VALUES) can be repeated and takes comma-separated values; commas inside (...)
    belong to the spec. Results go to --out (runs.parquet, traces/, manifest.json); re-running the same
    command into the same --out runs only what is missing."""
    from optbench import store
    from optbench.grid import expand, load_spec_toml, make_spec, run_grid

    given = {
        "problem": problem,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": momentum,
        "scheduler": scheduler,
        "init": init,
        "loss": loss,
        "precision": precision,
        "device": device,
        "seed": seed,
        "seeds": seeds,
        "steps": steps,
        "batch_size": batch_size,
        "width": width,
        "depth": depth,
        "activation": activation,
        "head_lr_scale": head_lr_scale,
        "freeze": freeze,
    }
    given = {key: value for key, value in given.items() if value is not None}
    grid = make_spec(given, load_spec_toml(spec) if spec is not None else None)
    configs = expand(grid, max_cells)  # every user error surfaces here, before anything is written
    out_given = out is not None
    out = out or store.default_out("grid")
    store.require_folder(out)  # here, before the progress bar starts and leaves a blank line above the error

    from rich.console import Console

    console = Console()
    if (
        not console.is_terminal
    ):  # piped or captured: wide lines beat spec strings folded into 3-letter columns
        console = Console(width=200)
    tracker = _live_progress(console, enabled=progress)
    try:
        with _sigterm_as_interrupt(), tracker:
            runs = run_grid(
                configs,
                out=out,
                workers=workers,
                executor=executor,
                address=address,
                gpus_per_run=gpus_per_run,
                force=force,
                engine=engine,
                exactness=exactness,
                progress=tracker,
            )
    except KeyboardInterrupt:  # run_grid has stopped the workers and rewritten runs.parquet
        echo_err(
            _interrupted_message(
                out,
                configs,
                again=("" if out_given else f" with --out {out}") + (" without --force" if force else ""),
            )
        )
        raise typer.Exit(130) from None
    _print_summary(console, runs, out, resumed=tracker.resumed or 0)


def _interrupted_message(out: Path, configs, again: str) -> str:
    from optbench import store

    if not out.is_dir():
        return "interrupted before any run was committed; nothing was kept"
    done = len(store.completed_run_ids(out) & {c.run_id() for c in configs})
    return f"interrupted: {done} of {len(configs)} runs are in {out}; run the same command again{again} to resume"


class _sigterm_as_interrupt:
    """``kill`` (SIGTERM) stops a grid as Ctrl-C does: workers stopped, committed runs kept and readable."""

    def __enter__(self):
        import signal
        import threading

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        self.previous = None
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self.previous = signal.signal(signal.SIGTERM, interrupt)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


class _live_progress:
    """rich progress bar: done / total, diverged count, elapsed, ETA. Also remembers how many runs were
    already in --out (``resumed``) for the closing lines."""

    def __init__(self, console, enabled: bool):
        self.console, self.enabled = console, enabled
        self.bar = self.task = self.resumed = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]grid"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("diverged {task.fields[diverged]}  invalid {task.fields[invalid]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.start()
        return self

    def __call__(self, state) -> None:
        if self.resumed is None:
            self.resumed = state.resumed
        if self.bar is None:
            return
        invalid = state.counts.get("invalid", 0) + state.counts.get("failed", 0)
        if self.task is None:  # resumed runs start as done; the ETA follows this call's own pace
            self.task = self.bar.add_task(
                "grid", total=state.total, completed=state.done, diverged=0, invalid=0
            )
        self.bar.update(self.task, completed=state.done, diverged=state.diverged, invalid=invalid)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def _fmt(x) -> str:
    return "-" if x is None or x != x else f"{x:.4g}"


def _print_summary(console, runs, out: Path, resumed: int = 0) -> None:  # noqa: C901 - to split (#13)
    from rich.table import Table

    from optbench.grid import GROUP_COLUMNS, summarize

    summary = summarize(runs)
    varying = [c for c in GROUP_COLUMNS if summary[c].nunique(dropna=False) > 1] or ["optimizer"]
    seeds = int(runs["seed"].nunique())
    table = Table(title=f"grid: {len(runs)} runs, {len(summary)} groups x {seeds} seed{'s' * (seeds != 1)}")
    for column in varying:
        table.add_column(
            column.replace("_", " "),
            justify="right" if summary[column].dtype.kind in "fi" else "left",
            overflow="fold",
        )
    table.add_column("final loss", justify="right", no_wrap=True)
    for column in ("diverged", "invalid", "best"):
        table.add_column(column, justify="right" if column != "best" else "left", no_wrap=True)
    for _, row in summary.head(SUMMARY_ROWS).iterrows():
        loss = _fmt(row["final_loss_mean"])
        if row["final_loss_std"] == row["final_loss_std"]:  # not NaN: 2+ ok runs
            loss += f" ± {row['final_loss_std']:.2g}"
        cells = [_fmt(row[c]) if isinstance(row[c], float) else str(row[c]) for c in varying]
        bad = int(row["invalid"] + row["failed"])
        table.add_row(
            *cells, loss, str(int(row["diverged"])), str(bad) if bad else "", "*" if row["best"] else ""
        )
    console.print(table)
    if len(summary) > SUMMARY_ROWS:
        console.print(
            f"... {len(summary) - SUMMARY_ROWS} more groups (optbench.grid.summarize(runs) has all)"
        )

    best = summary[summary["best"]]
    if len(best):
        console.print(
            "[bold]best cell per optimizer[/bold] (per problem and loss; lowest mean final loss, no "
            "divergence):"
        )
        for _, row in best.iterrows():
            settings = ", ".join(
                f"{c}={_fmt(row[c]) if isinstance(row[c], float) else row[c]}"
                for c in varying
                if c != "optimizer"
            )
            console.print(
                f"  {row['optimizer']}: {settings or '(single cell)'} -> final loss "
                f"{_fmt(row['final_loss_mean'])}"
            )
    counts = runs["status"].value_counts()
    console.print(
        "status: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "diverged", "invalid", "failed"))
    )
    reasons = runs[runs["status"].isin(["invalid", "failed"])]["reason"].value_counts()
    for reason, n in reasons.head(10).items():
        console.print(f"  {n} x {reason}", markup=False, highlight=False)
    warned = int(runs["warnings"].notna().sum())
    if warned:
        console.print(f"{warned} run(s) raised warnings (see the warnings column)")
    if resumed:
        console.print(
            f"{resumed} of {len(runs)} runs were already in {out} and were not run again (--force reruns)"
        )
    console.print(f"results: {out}")


COMMANDS = {"grid": grid_cmd}
