"""A grid's results as DataFrames: read back from a results folder (``load``) or made in memory
(``optbench.run_grid(..., out=None)``), the same tables either way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optbench.errors import OptbenchError


@dataclass
class RunTables:
    """``runs``: one row per run (runs.parquet's columns); ``traces``: one row per run and step (the
    traces' columns); joined on ``run_id`` by ``joined()``. ``folder`` and ``manifest``: where they were
    read from (None for a grid run in memory)."""

    runs: Any
    traces: Any
    folder: Path | None = None
    manifest: dict | None = None

    def joined(self):
        """Every trace row with its run's columns. The two config columns whose names a trace column has
        come with a suffix: ``lr_config`` (the configured lr, beside ``lr``, the lr the step used) and
        ``loss_config`` (the loss function, beside ``loss``, the step's value)."""
        return self.traces.merge(self.runs, on="run_id", how="left", suffixes=("", "_config"), validate="m:1")

    def __repr__(self) -> str:
        where = f" from {self.folder}" if self.folder is not None else " (in memory)"
        return f"RunTables({len(self.runs)} runs, {len(self.traces)} trace rows{where})"


def load(folder: str | Path) -> RunTables:
    """The runs and traces of a results folder (grid, lr-sweep, lr-find), through the store's checked
    readers: a damaged file is one warning line and its runs have no trace, never a traceback."""
    from optbench import store

    folder = Path(folder)
    if not folder.is_dir():
        raise OptbenchError(f"results folder {str(folder)!r} does not exist")
    runs = store.read_runs(folder)
    return RunTables(runs, store.read_traces(folder), folder, store.read_manifest(folder))


def in_memory(results: list) -> RunTables:
    """The tables of finished runs (``RunResult``s) as a results folder would hold them."""
    from optbench.spec import runs_schema
    from optbench.store.commit import traces_table
    from optbench.store.files import conform, table_from_rows

    runs = conform(table_from_rows([r.summary_row() for r in results], runs_schema()), runs_schema())
    return RunTables(runs.to_pandas(), traces_table(results).to_pandas())
