"""`bench grid`: the cartesian product of a few axes, run on all local cores (or Ray), resumable.

Parses and validates only; the work is ``optbench.grid.run_grid``. Nothing heavy is imported until the
command runs, so ``bench --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from optbench.cli import grid_options as opt
from optbench.cli.allow import AllowImports, allow
from optbench.cli.common import echo_err, fail, handle_errors, os_error_code, os_error_line


@handle_errors
def grid_cmd(
    ctx: typer.Context,
    problem: opt.ProblemAxis = None,
    optimizer: opt.OptimizerAxis = None,
    lr: opt.LrAxis = None,
    momentum: opt.MomentumAxis = None,
    scheduler: opt.SchedulerAxis = None,
    init: opt.InitAxis = None,
    loss: opt.LossAxis = None,
    precision: opt.PrecisionAxis = None,
    device: opt.DeviceAxis = None,
    seed: opt.SeedAxis = None,
    seeds: opt.SeedsOption = None,
    steps: opt.StepsAxis = None,
    batch_size: opt.BatchSizeAxis = None,
    width: opt.WidthAxis = None,
    depth: opt.DepthAxis = None,
    activation: opt.ActivationAxis = None,
    head_lr_scale: opt.HeadLrScaleAxis = None,
    freeze: opt.FreezeAxis = None,
    sharpness_every: opt.SharpnessEveryAxis = None,
    spec: opt.SpecOption = None,
    out: opt.OutOption = None,
    force: opt.ForceOption = False,
    workers: opt.WorkersOption = None,
    executor: opt.ExecutorOption = "local",
    address: opt.AddressOption = None,
    gpus_per_run: opt.GpusPerRunOption = 0.25,
    engine: opt.EngineOption = "auto",
    exactness: opt.ExactnessOption = "auto",
    progress: opt.ProgressOption = True,
    max_cells: opt.MaxCellsOption = 1_000_000,
    top: opt.TopOption = 10,
    sort: opt.SortOption = "final_loss",
    allow_imports: AllowImports = None,
) -> None:
    """Run the cartesian product of the given axes, then print the answer: per optimizer the best setting
    (mean ± std over seeds, stable lr range, diverged count) and the top settings.

    Every axis option (VALUES) can be repeated and takes comma-separated values; commas inside (...)
    belong to the spec. Results go to --out (runs.parquet, traces/, manifest.json); re-running the same
    command into the same --out runs only what is missing."""
    from optbench import store
    from optbench.grid import AXES, expand, load_spec_toml, make_spec, run_grid
    from optbench.grid.summary import check_sort

    allow(ctx, allow_imports)
    check_sort(sort, top)  # before the grid runs, not after
    # The axes given on the command line, by name (click holds an axis not given as an empty tuple).
    given = {key: value for key in (*AXES, "seeds") if (value := ctx.params[key]) not in (None, ())}
    grid = make_spec(given, load_spec_toml(spec) if spec is not None else None)
    configs = expand(grid, max_cells)  # every user error surfaces here, before anything is written
    _check_sort_has_values(sort, configs)
    out_given = out is not None
    out = store.check_out(out, "grid") if out_given else store.default_out("grid")

    console = _console()
    tracker = _live_progress(console, enabled=progress)
    try:
        # The folder is held before the progress bar starts: an error about it is one line, no blank above.
        with _sigterm_as_interrupt(), store.results_folder(out, "grid"), tracker:
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
        echo_err(_interrupted_message(out, configs, _again(out, out_given, force)))
        raise typer.Exit(130) from None
    except OSError as err:  # a full disk, a folder made read-only meanwhile: what was committed stays
        fail(
            f"{os_error_line(err)}; {_kept(out, configs, _again(out, out_given, force))}", os_error_code(err)
        )
    print_grid_summary(console, runs, out, top=top, sort=sort, resumed=tracker.resumed or 0)


def _check_sort_has_values(sort: str, configs) -> None:
    """A held-out column to rank on needs a problem with held-out data: toy functions have none. Said
    before the grid runs (the end of the run checks again, on what was measured)."""
    from optbench.registry.problems import is_toy

    if sort.startswith("final_val_") and all(is_toy(c.problem) for c in configs):
        fail(f"--sort {sort}: toy functions have no held-out set; rank on final_loss, best_loss, wall_time_s")


def _console():
    from rich.console import Console

    console = Console()
    # Piped or captured: wide lines beat spec strings folded into 3-letter columns.
    return console if console.is_terminal else Console(width=200)


def _again(out: Path, out_given: bool, force: bool) -> str:
    return ("" if out_given else f" with --out {out}") + (" without --force" if force else "")


def _interrupted_message(out: Path, configs, again: str) -> str:
    if not out.is_dir():
        return "interrupted before any run was committed; nothing was kept"
    return f"interrupted: {_kept(out, configs, again)}"


def _kept(out: Path, configs, again: str) -> str:
    """What a grid that stopped early left: how many runs are committed, how to resume."""
    from optbench import store

    if not out.is_dir():
        return "no run was committed; nothing was kept"
    done = len(store.completed_run_ids(out) & {c.run_id() for c in configs})
    return f"{done} of {len(configs)} runs are in {out}; run the same command again{again} to resume"


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
    """rich progress bar: cells done / total, diverged and invalid counts, elapsed time, the ETA and what
    runs (``ETA 0:00:39 · batches 3, 4 of 8 running``; grid/progress.py makes that text from the tasks'
    start and finish times, and says ``ETA: measuring`` until a task has finished). Also remembers how many
    runs were already in --out (``resumed``) for the closing lines."""

    def __init__(self, console, enabled: bool):
        self.console, self.enabled = console, enabled
        self.bar = self.task = self.resumed = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]grid"),
                BarColumn(bar_width=12),
                MofNCompleteColumn(),
                TextColumn("{task.fields[outcome]}"),
                TimeElapsedColumn(),
                _EtaColumn(),
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
        if self.task is None:  # resumed runs start as done; the ETA counts only this call's tasks
            self.task = self.bar.add_task(
                "grid", total=state.total, completed=state.done, outcome="", pace=state.pace
            )
        outcome = f"cells · {state.diverged} diverged" + (f" · {invalid} invalid" if invalid else "")
        self.bar.update(self.task, completed=state.done, outcome=outcome)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def _EtaColumn():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        def render(self, task):
            pace = task.fields.get("pace")
            if task.finished or pace is None:
                return Text("")
            return Text(pace.text(), style="progress.remaining")

    return EtaColumn()


def print_grid_summary(console, runs, out: Path, *, top: int, sort: str, resumed: int = 0) -> None:
    """The end of `bench grid`: the compact answer (``cli.summary.print_summary``) and the resume line."""
    from optbench.cli.summary import print_summary
    from optbench.grid.summary import summary

    print_summary(console, runs, summary(runs, sort=sort), out, top=top, sort=sort)
    if resumed:
        console.print(
            f"{resumed} of {len(runs)} runs were already in {out} and were not run again (--force reruns)",
            markup=False,
            highlight=False,
        )


COMMANDS = {"grid": grid_cmd}
