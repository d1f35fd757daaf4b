"""Reading a results folder for the report: every Parquet file optbench writes, each part None where absent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optbench.errors import OptbenchError
from optbench.store.layout import AMP_FILE, GAINS_FILE, LAYERS_FILE, SCHEDULES_FILE


@dataclass
class Results:
    """What a results folder holds (each part None where absent); traces are read on first use."""

    folder: Path
    manifest: dict
    runs: Any = None
    schedules: Any = None
    layers: Any = None
    gains: Any = None
    amp: Any = None
    _traces: Any = None

    @property
    def traces(self):
        if self._traces is None:
            from optbench import store

            self._traces = store.read_traces(self.folder)
        return self._traces

    @property
    def experiment(self) -> str | None:
        return self.manifest.get("experiment") or self.manifest.get("command")

    def empty(self) -> bool:
        parts = (self.runs, self.schedules, self.layers, self.amp)
        return all(p is None or len(p) == 0 for p in parts)


def load(folder: Path | str) -> Results:
    """Read every Parquet the report knows about; OptbenchError if DIR is missing or holds none."""
    import pandas as pd

    from optbench import store

    folder = Path(folder)
    if not folder.is_dir():
        raise OptbenchError(f"results folder {str(folder)!r} does not exist")
    results = Results(folder, store.read_manifest(folder))
    if (folder / store.RUNS_FILE).exists():
        results.runs = store.read_runs(folder)
    if (folder / SCHEDULES_FILE).exists():
        results.schedules = pd.read_parquet(folder / SCHEDULES_FILE)
    for kind in ("layers", "gains", "amp"):
        path = folder / {"layers": LAYERS_FILE, "gains": GAINS_FILE, "amp": AMP_FILE}[kind]
        if path.exists():
            setattr(results, kind, pd.read_parquet(path))
    if results.empty():
        raise OptbenchError(
            f"no results in {str(folder)!r}: expected {store.RUNS_FILE}, {SCHEDULES_FILE}, "
            f"{LAYERS_FILE} or {AMP_FILE}"
        )
    return results


def config_of(row) -> Any:
    """The RunConfig of a runs.parquet row (nulls back to None): ``store.config_of`` (one home)."""
    from optbench import store

    return store.config_of(row)
