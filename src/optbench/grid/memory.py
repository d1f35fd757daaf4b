"""A grid run in memory (``run_grid(..., out=None)``): the same cells, engines and plan as a grid into a
folder, run in this process, returned as DataFrames; nothing is written anywhere."""

from __future__ import annotations

from collections.abc import Callable

from optbench.errors import OptbenchError
from optbench.spec import RunConfig


def run_in_memory(
    configs: list[RunConfig],
    *,
    engine: str,
    exactness: str,
    workers: int | None,
    executor: str,
    state,
    progress: Callable | None,
):
    """The grid's ``RunTables`` (runs in expansion order). One process: worker processes and Ray commit
    into a folder (give ``out=`` for them). ``state``: the ``GridProgress`` that ``progress`` is called
    with, at the start and after every run."""
    from optbench.engine.runtime import one_torch_thread
    from optbench.grid.executors import run_task
    from optbench.grid.plan import plan_tasks
    from optbench.store.results import in_memory

    if executor != "local" or workers not in (None, 1):
        raise OptbenchError(
            "a grid run in memory (out=None) runs in this process: give out=FOLDER to use workers or Ray"
        )
    if progress is not None:
        progress(state)
    results = {}
    with one_torch_thread():
        for task in plan_tasks(configs, engine, 1, exactness):
            for result in run_task(task):
                results[result.run_id] = result
                state.done += 1
                state.counts[result.summary.status] = state.counts.get(result.summary.status, 0) + 1
                state.last = result.summary_row()
                if progress is not None:
                    progress(state)
    return in_memory([results[c.run_id()] for c in configs])
