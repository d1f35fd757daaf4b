"""Repair, resume and purge: set damaged files aside, remove cut commits, drop runs that must re-run.

Nothing here deletes a file optbench did not write: damaged files move into ``DIR/_damaged/``, and only
trace files of ours (by name and content) whose commit record never landed are removed.
"""

from __future__ import annotations

from pathlib import Path

from optbench.store.check import SHOWN_REASONS, Damage, Say, Scan, scan, warn
from optbench.store.commit import write_record, write_trace
from optbench.store.layout import COMMITS_DIR, DAMAGED_DIR, TRACES_DIR


def set_aside(out: Path, damaged: list[Damage]) -> Path:
    """Move the damaged files into ``DIR/_damaged/`` (same sub-folder, a numbered suffix where a name is
    taken): nothing is deleted, and no reader or resume sees them again. Returns the folder."""
    target = Path(out) / DAMAGED_DIR
    for damage in damaged:
        for path in damage.paths:
            if not path.exists():
                continue
            folder = target / path.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            moved, n = folder / path.name, 0
            while moved.exists():
                n += 1
                moved = folder / f"{path.name}.{n}"
            path.replace(moved)
    return target


def prepare(out: Path, say: Say = warn) -> Scan:
    """Before a command writes into a folder it holds (``store.results_folder``): move damaged files aside
    (``set_aside``; the caller says which runs it re-runs: ``repair_line``), remove trace files whose commit
    record never landed (ours by name and content), name the files optbench did not write (one line; left
    alone). Returns the scan: what stays committed, and what was damaged."""
    out = Path(out)
    found = scan(out)
    if found.damaged:
        set_aside(out, found.damaged)
    for path in found.orphans:
        path.unlink(missing_ok=True)
    if found.foreign:
        names = ", ".join(f"{p.parent.name}/{p.name}" for p in found.foreign[:SHOWN_REASONS])
        more = len(found.foreign) - SHOWN_REASONS
        say(
            f"note: {len(found.foreign)} file(s) in {out} were not written by optbench and are left alone: "
            f"{names}{f' and {more} more' if more > 0 else ''}"
        )
    return found


def repair_line(found: Scan, redo: set[str]) -> str:
    """One line for damaged files set aside: how many runs this command runs again, and from which files."""
    ids = found.damaged_run_ids
    again = len(ids & redo) if ids else "their"
    text = (
        f"repairing: {again} run(s) from {len(found.damaged)} damaged file(s) run again "
        f"({found.damage_text()}); the damaged files are kept in {found.out / DAMAGED_DIR}"
    )
    others = len(ids - redo)
    if others:
        text += f"; {others} other run(s) of theirs are not in this command: run their own command again"
    return text


def completed_run_ids(out: Path) -> set[str]:
    """Runs whose commit record and trace file passed ``scan``'s cheap check."""
    return scan(out).run_ids


def drop_uncommitted(out: Path) -> None:
    """Remove trace files whose commit record never landed (a process killed between the two writes), so
    that a re-run duplicates no trace rows. Only files of ours (by name and content) are removed."""
    for path in scan(out).orphans:
        path.unlink(missing_ok=True)


def purge_runs(out: Path, run_ids: set[str]) -> None:
    """Remove these runs' rows from every commit record and trace file (``--force``).

    Per pair: a record left empty goes first (its runs re-run), then its trace file; otherwise the trace
    file is rewritten, then the record with the new file's facts. A process killed between the two writes
    leaves a record whose facts no longer match: the next ``prepare`` sets the pair aside and its runs re-run.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = Path(out)
    value_set = pa.array(sorted(run_ids), pa.string())
    for name, record in scan(out, rows=True).records.items():
        if not run_ids.intersection(record.run_ids):
            continue
        record_path, trace_path = out / COMMITS_DIR / f"{name}.parquet", out / TRACES_DIR / f"{name}.parquet"
        rows = record.rows.filter(pc.invert(pc.is_in(record.rows.column("run_id"), value_set=value_set)))
        if not rows.num_rows:
            record_path.unlink()
            trace_path.unlink(missing_ok=True)
            continue
        trace = pq.read_table(trace_path)
        kept = trace.filter(pc.invert(pc.is_in(trace.column("run_id"), value_set=value_set)))
        write_record(record_path, rows, write_trace(trace_path, kept))


# ------------------------------------------------------------------------------------------- read back
