"""Running a grid: every cell not yet committed in the results folder, planned into executor tasks
(batches for the batched engine, single cells for the reference engine), resumably."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.grid.axes import GridSpec
from optbench.grid.expand import _as_configs
from optbench.grid.plan import ENGINES, check_exactness, plan_tasks, ship_problems
from optbench.grid.progress import Pace
from optbench.spec import RunConfig

CONSOLIDATE_EVERY_S = 30.0


@dataclass
class GridProgress:
    """What a progress callback sees: after the start (``last`` None) and after every finished run."""

    total: int  # runs in the grid
    done: int  # finished, including those already done before this call (resume)
    resumed: int  # already done before this call, not run again
    counts: dict[str, int] = field(default_factory=dict)  # status -> runs (ok, diverged, invalid, failed)
    last: dict | None = None  # the summary row of the run that just finished
    pace: Pace | None = None  # this call's tasks and their times: ``pace.eta()``, ``pace.text()`` (ETA)

    @property
    def diverged(self) -> int:
        return self.counts.get("diverged", 0)


def run_grid(
    spec: GridSpec | Mapping | str | Path | Sequence[RunConfig],
    *,
    out: str | Path | None = None,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    gpus_per_run: float = 0.25,
    force: bool = False,
    engine: str = "auto",
    progress: Callable[[GridProgress], None] | None = None,
    command: str = "grid",
    max_cells: int | None = None,
    say: Callable[[str], None] | None = None,
    exactness: str = "auto",
):
    """Run every cell of a grid not yet committed in ``out``; return the runs table (a DataFrame, one row
    per cell, in expansion order). With ``out=None`` the grid runs in memory, in this process, writes
    nothing anywhere and returns its ``RunTables`` (``.runs``, ``.traces``, ``.joined()``; what
    ``optbench.load`` reads back from a folder).

    Args:
        spec: a GridSpec, a dict of axes (``make_spec``), a TOML file (``load_spec_toml``) or RunConfigs.
        out: results folder (``bench grid``'s default: a new ``results/grid-<time>``): new, empty, or a
            grid's (another kind of folder, or a non-empty one optbench did not make, is refused). Runs
            already committed there are skipped; ``force=True`` runs everything again (each commit replaces
            the old one). Damaged files are moved to ``out/_damaged/`` and their runs run again.
        workers: local processes (default: the usable cores); 1 runs in this process, and so does a
            script that calls run_grid outside ``if __name__ == "__main__":`` (with one line on ``say``).
        executor: ``local`` or ``ray``; ``address``: a Ray cluster (default: start a local Ray).
        gpus_per_run: GPU fraction each CUDA run requests from Ray (0.25: four runs share a GPU).
        engine: ``auto`` (cells the batched engine supports run batched, in groups of at least
            ``MIN_BATCH``; the rest on the reference engine), ``batched`` (every supported cell batched)
            or ``reference`` (every cell through ``engine.run``). The ``engine`` column records which ran.
        progress: called with a ``GridProgress`` at the start and after every run.
        max_cells: refuse a GridSpec of more cells than this (default ``MAX_CELLS``) before building any.
        say: where the one-line notes go (damaged files repaired, files optbench did not write); default stderr.
        exactness: the batched engine's contract, ``auto`` (exact on CPU, fast on CUDA), ``exact`` or
            ``fast`` (grid/plan.py); the ``exactness`` column records what each run kept.
    """
    from optbench import store
    from optbench.grid.executors import make_executor, refuse_in_worker_bootstrap

    refuse_in_worker_bootstrap()  # first: a worker re-running the caller's script ends before any work
    configs, description = _as_configs(spec, max_cells)
    if engine not in ENGINES:
        raise OptbenchError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    check_exactness(exactness, configs, engine)
    if out is None:
        from optbench.grid.memory import run_in_memory

        state = GridProgress(total=len(configs), done=0, resumed=0)
        return run_in_memory(
            configs,
            engine=engine,
            exactness=exactness,
            workers=workers,
            executor=executor,
            state=state,
            progress=progress,
        )
    out = store.check_out(out, "grid")
    runner = make_executor(executor, workers=workers, address=address, gpus_per_run=gpus_per_run)
    _in_process_if_unguarded(runner, say or store.warn)
    settings = {"executor": executor, "workers": runner.workers, "address": address, "force": force}
    return _run_into(
        out, configs, runner, say or store.warn, progress, settings, command, description, engine, exactness
    )


def _in_process_if_unguarded(runner, say) -> None:
    """Spawned workers run the ``__main__`` script again: one that calls run_grid outside its main guard
    would start a grid in every worker. Such a grid runs in this process instead, with one line."""
    from optbench.grid.executors import unguarded_main_script

    if runner.workers is None or runner.workers <= 1 or (where := unguarded_main_script()) is None:
        return
    say(
        f"note: run_grid is called at the top level of your script ({where}), which worker processes would "
        f'run again: the grid runs in this process; put the call under `if __name__ == "__main__":` to use '
        f"{runner.workers} workers"
    )
    runner.workers = 1


def _run_into(out, configs, runner, say, progress, settings, command, description, engine, exactness):
    """``run_grid`` into a results folder: hold it, skip what is committed, run the rest, consolidate."""
    from optbench import store

    force = settings["force"]
    shipped = ship_problems(configs, runner, say)
    order = [c.run_id() for c in configs]
    with store.results_folder(out, "grid"):  # one writer per folder; removed again if nothing is committed
        todo, state = _pending(out, configs, order, force, say)
        tasks = [
            replace(t, problems=shipped) for t in plan_tasks(todo, engine, runner.workers or 1, exactness)
        ]
        state.pace = Pace(tasks, runner.workers)
        manifest = store.start_manifest(
            out,
            command,
            {
                "experiment": "grid",
                "grid": description,
                "runs": len(configs),
                "already_done": state.resumed,
                **settings,
                "engine": engine,
                "exactness": exactness,
            },
        )
        try:
            _execute(runner, tasks, out, order, state, progress)
        except BaseException:
            if (out / store.COMMITS_DIR).exists():
                with contextlib.suppress(OSError):  # a full disk: the original error is the one to show
                    store.consolidate_runs(out, order)  # keep what was committed readable; a re-run resumes
            raise
        return _finish(out, order, manifest)


def _pending(
    out: Path, configs: list[RunConfig], order: list[str], force: bool, say
) -> tuple[list, GridProgress]:
    """(cells to run, the progress so far) in a folder this process holds: damaged files set aside (their
    runs are not done), runs committed before skipped unless ``force`` (then purged, to leave no stale row)."""
    from optbench import store

    found = store.prepare(out, say)
    wanted = set(order)
    if found.damaged:
        say(store.repair_line(found, wanted))
    done_ids = set() if force else found.run_ids & wanted
    counts: dict[str, int] = {}
    if done_ids:
        previous = store.consolidate_runs(out, order).to_pandas()
        counts = previous[previous["run_id"].isin(done_ids)]["status"].value_counts().to_dict()
    todo = [c for c, run_id in zip(configs, order, strict=True) if run_id not in done_ids]
    if force and found.records:
        store.purge_runs(out, {c.run_id() for c in todo})  # no stale rows beside the new ones
    progress = GridProgress(total=len(configs), done=len(done_ids), resumed=len(done_ids), counts=counts)
    return todo, progress


def _execute(runner, tasks: list, out: Path, order: list[str], state: GridProgress, progress) -> None:
    """Run the tasks, updating ``state`` after every run and keeping runs.parquet roughly current."""
    from optbench import store

    last_consolidated = time.monotonic()

    def on_result(row: dict) -> None:
        nonlocal last_consolidated
        if state.pace is not None:
            state.pace.finished_run(row["run_id"])
        state.done += 1
        state.counts[row["status"]] = state.counts.get(row["status"], 0) + 1
        state.last = row
        if progress is not None:
            progress(state)
        if time.monotonic() - last_consolidated > CONSOLIDATE_EVERY_S:
            store.consolidate_runs(out, order)
            last_consolidated = time.monotonic()

    if state.pace is not None:
        runner.on_start = state.pace.started
    if progress is not None:
        progress(state)
    runner.run(tasks, out, on_result)


def _finish(out: Path, order: list[str], manifest: dict):
    """runs.parquet rewritten, the manifest's counts (resumed runs included), this grid's rows."""
    from optbench import store

    table = store.consolidate_runs(out, order)
    runs = table.to_pandas()
    runs = runs[runs["run_id"].isin(set(order))].reset_index(drop=True)
    store.finish_manifest(
        out,
        manifest,
        status_counts=runs["status"].value_counts().to_dict(),
        engine_counts=runs["engine"].value_counts().to_dict(),
    )
    runs.attrs["out"] = str(out)
    return runs
