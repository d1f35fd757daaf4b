"""``bench verify DIR --repair``: set damaged files aside and run exactly their cells again.

The cells come from the damaged commit records themselves where they are still readable (a damaged trace
file), else from runs.parquet; each runs again on the engine that ran it first (its ``engine`` column), on
the local pool, under the folder's lock. runs.parquet is rewritten and the manifest records the repair.
A run whose config is known nowhere any more (commit record and runs.parquet both lost) is counted and
named: running its own command again redoes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from optbench.errors import OptbenchError


@dataclass
class Repair:
    """What ``repair`` did."""

    out: Path
    damaged_files: list[str] = field(default_factory=list)  # reasons, one per damaged file (moved aside)
    rerun: int = 0  # cells run again
    unknown: int = 0  # damaged runs whose config is known nowhere: not run again
    removed: int = 0  # orphan trace files and temp files of writes cut short


def repair(out: str | Path, *, workers: int | None = None) -> Repair:
    """Repair the results folder ``out`` (see the module docstring); OptbenchError if it is not ours."""
    from optbench import store
    from optbench.store.folder import folder_kind, our_manifest
    from optbench.store.verify import verify

    out = Path(out)
    if not out.is_dir():
        raise OptbenchError(f"results folder {str(out)!r} does not exist")
    manifest, why_not = our_manifest(out)
    if manifest is None:
        raise OptbenchError(f"{out} is not an optbench results folder ({why_not}); nothing was changed")
    with store.results_folder(out, folder_kind(manifest)):
        checked = verify(out)
        found = checked.found
        cells, unknown = _cells_to_rerun(out, checked)
        store.set_aside(out, found.damaged)
        for path in [*found.orphans, *checked.temps]:
            path.unlink(missing_ok=True)
        _rerun(out, cells, workers)
        if found.run_ids or cells or (out / store.RUNS_FILE).exists():
            store.consolidate_runs(out, _previous_order(out))
        done = Repair(out, [d.reason for d in found.damaged], len(cells), len(unknown))
        done.removed = len(found.orphans) + len(checked.temps)
        store.manifest.append_to_manifest(
            out,
            "repairs",
            {"damaged_files": done.damaged_files, "rerun": done.rerun, "unknown": done.unknown},
        )
    return done


def _cells_to_rerun(out: Path, checked) -> tuple[list[tuple], set[str]]:
    """[(RunConfig, engine)] for the runs of damaged files and runs.parquet's runs without a record; and
    the ids of those whose config is known nowhere."""
    found = checked.found
    wanted = set(found.damaged_run_ids)
    if checked.runs_listed is not None:
        wanted |= checked.runs_listed - found.run_ids
    rows = {}
    for damage in found.damaged:
        if damage.rows is not None:
            rows.update({row["run_id"]: row for row in damage.rows.to_pylist()})
    missing = wanted - set(rows)
    if missing and checked.runs_listed is not None:
        rows.update(_runs_file_rows(out, missing))
    cells = []
    for run_id in sorted(wanted & set(rows)):
        config = _config(rows[run_id])
        if config is not None and config.run_id() == run_id:
            cells.append((config, rows[run_id].get("engine") or "reference"))
    return cells, wanted - {config.run_id() for config, _ in cells}


def _config(row):
    from optbench import store

    try:
        return store.config_of(row)
    except (OptbenchError, TypeError, ValueError):  # a row from an older schema: not rebuilt
        return None


def _runs_file_rows(out: Path, run_ids: set[str]) -> dict[str, dict]:
    import pyarrow.parquet as pq

    from optbench import store

    table = pq.read_table(out / store.RUNS_FILE)
    return {row["run_id"]: row for row in table.to_pylist() if row["run_id"] in run_ids}


def _previous_order(out: Path) -> list[str] | None:
    """The row order of runs.parquet before the repair (None if it is unreadable)."""
    import pyarrow.parquet as pq

    from optbench import store

    try:
        return pq.read_table(out / store.RUNS_FILE, columns=["run_id"]).column("run_id").to_pylist()
    except Exception:  # noqa: BLE001 - absent or damaged: run-id order
        return None


def _rerun(out: Path, cells: list[tuple], workers: int | None) -> None:
    """Run the cells again, each on the engine that ran it first, on the local pool."""
    from optbench.grid.executors import LocalExecutor, Task
    from optbench.grid.runner import plan_tasks

    if not cells:
        return
    executor = LocalExecutor(workers)
    batched = [config for config, engine in cells if engine == "batched"]
    tasks = plan_tasks(batched, "batched", executor.workers)
    tasks += [Task((config,)) for config, engine in cells if engine != "batched"]
    executor.run(tasks, out, lambda row: None)
