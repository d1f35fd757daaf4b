"""``bench verify DIR``: check every byte of a results folder and say, one line per problem, what is wrong.

What it checks (``verify``): the manifest is ours; every commit record and its trace file
(``runs.scan(full=True)``: readable, our schema, sizes, row counts, run-id ranges and sha256 as the record
says, every trace row's run id in its record, no (run_id, step) row twice, no run in two records);
runs.parquet readable and listing exactly the committed runs; no temp file left by a killed write; no
trace file without its commit record; the other experiments' Parquet files readable. Files optbench did
not write are named (notes, not problems). Changes nothing: ``grid.repair`` does the repairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.store.check import Scan, scan
from optbench.store.files import TEMP_NAME
from optbench.store.folder import folder_kind, our_manifest
from optbench.store.layout import (
    AMP_FILE,
    COMMITS_DIR,
    DAMAGED_DIR,
    GAINS_FILE,
    LAYERS_FILE,
    RUNS_FILE,
    SCHEDULES_FILE,
    TRACES_DIR,
)

EXPERIMENT_FILES = (SCHEDULES_FILE, LAYERS_FILE, GAINS_FILE, AMP_FILE)


@dataclass
class Verification:
    """What ``verify`` found. ``problems`` and ``notes`` are one line each; ``ok`` when there is no problem."""

    out: Path
    kind: str | None
    found: Scan
    runs_listed: set[str] | None = None  # run ids in runs.parquet (None: absent or unreadable)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    temps: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """The closing line: how many runs are committed and sound, what is not."""
        out, found = self.out, self.found
        text = f"{out}: {len(found.run_ids)} committed run(s) verified"
        if self.ok:
            return text + ", no problem found"
        damaged = found.damaged_run_ids
        text += f", {len(self.problems)} problem(s)"
        if found.damaged:
            text += f": {len(found.damaged)} damaged file(s) ({len(damaged)} run(s))"
        return text + f"; bench verify {out} --repair moves damaged files to {out / DAMAGED_DIR} and re-runs"


def verify(out: str | Path) -> Verification:
    """Check the results folder ``out`` (see the module docstring); OptbenchError if it is not a folder."""
    out = Path(out)
    if not out.is_dir():
        raise OptbenchError(f"results folder {str(out)!r} does not exist")
    manifest, why_not = our_manifest(out)
    result = Verification(out, folder_kind(manifest) if manifest else None, scan(out, full=True))
    if manifest is None:
        result.problems.append(f"{out} is not an optbench results folder ({why_not})")
    result.problems += [f"damaged: {damage.reason}" for damage in result.found.damaged]
    result.problems += [
        f"uncommitted: {TRACES_DIR}/{path.name} has no commit record (a write cut short; removed by a repair)"
        for path in result.found.orphans
    ]
    _check_runs_file(result)
    _check_experiment_files(result)
    result.temps = [p for p in _dot_files(out) if TEMP_NAME.match(p.name)]
    if result.temps:
        result.problems.append(
            f"{len(result.temps)} temp file(s) of writes cut short (e.g. {_relative(out, result.temps[0])})"
        )
    result.notes += [
        f"not written by optbench (left alone): {_relative(out, p)}" for p in result.found.foreign
    ]
    return result


def _check_runs_file(result: Verification) -> None:
    import pyarrow.parquet as pq

    out, committed = result.out, result.found.run_ids | result.found.damaged_run_ids
    path = out / RUNS_FILE
    if not path.exists():
        if committed:
            result.problems.append(
                f"{RUNS_FILE}: missing ({len(committed)} committed run(s)); a repair writes it"
            )
        return
    try:
        result.runs_listed = set(pq.read_table(path, columns=["run_id"]).column("run_id").to_pylist())
    except Exception as err:  # noqa: BLE001 - named as a problem, never a traceback
        result.problems.append(f"{RUNS_FILE}: unreadable ({type(err).__name__}); a repair rewrites it")
        return
    missing = result.found.run_ids - result.runs_listed
    unrecorded = result.runs_listed - result.found.run_ids - result.found.damaged_run_ids
    if missing:
        result.problems.append(f"{RUNS_FILE}: lacks {len(missing)} committed run(s); a repair rewrites it")
    if unrecorded:
        result.problems.append(
            f"{RUNS_FILE}: lists {len(unrecorded)} run(s) with no commit record (deleted?); a repair re-runs them"
        )


def _check_experiment_files(result: Verification) -> None:
    import pyarrow.parquet as pq

    for name in EXPERIMENT_FILES:
        path = result.out / name
        if path.exists():
            try:
                pq.read_table(path)
            except Exception as err:  # noqa: BLE001
                result.problems.append(
                    f"{name}: unreadable ({type(err).__name__}); run bench {result.kind or '...'} again to "
                    "write it"
                )


def _dot_files(out: Path) -> list[Path]:
    folders = (out, out / TRACES_DIR, out / COMMITS_DIR)
    return sorted(
        p for folder in folders if folder.is_dir() for p in folder.iterdir() if p.name.startswith(".")
    )


def _relative(out: Path, path: Path) -> str:
    return str(path.relative_to(out))
