"""Run results in a results folder: commit a batch of runs (trace file, then commit record), check what is
committed, set damaged files aside, purge what must be re-run, consolidate runs.parquet, read it all back.

A commit record says what its trace file holds: its Parquet key-value metadata ``TRACE_FACTS`` carries the
trace file's rows, bytes, sha256 and smallest and largest run id (its run ids are its rows). ``scan``
checks every record cheaply (readable, our schema, its trace file present with the recorded size, row count
and run-id range, all from the file system and the Parquet footer: ~0.15 ms per record); ``scan(full=True)``
(``bench verify``) also reads every byte: checksums, every row's run id, duplicate (run_id, step) rows.
A record that fails, or whose trace file fails, is *damaged*: its runs are not committed any more, and
``set_aside`` moves both files into ``DIR/_damaged/`` (nothing is deleted, nothing hidden). Records written
before the facts existed are checked for what they can show (readable, schema, trace file present).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.store.files import FileFacts, run_id_range, sha256_of, table_from_rows, write_parquet_atomic
from optbench.store.layout import COMMITS_DIR, DAMAGED_DIR, RUN_FILE_NAME, RUNS_FILE, TRACES_DIR

# Trace columns whose values repeat (the run id on every row; lr, validation and scaler values that change
# rarely). Dictionary-encoding the per-step floats as well triples the write time of a large batch and
# makes the file bigger, as their values rarely repeat.
TRACE_DICTIONARY_COLUMNS = ("run_id", "lr", "val_loss", "val_acc", "loss_scale", "skipped_step")
TRACE_FACTS = b"optbench.trace"  # key of the trace file's facts in a commit record's Parquet metadata
SHOWN_REASONS = 3  # a one-line message names this many damaged files, then counts the rest

Say = Callable[[str], None]


def warn(text: str) -> None:
    """The default for ``say``: one line on stderr."""
    print(text, file=sys.stderr)


# ------------------------------------------------------------------------------------------------ commit


def commit_run(out: Path, result) -> None:
    """Persist one finished run: its trace file first, then its commit record (what resume trusts)."""
    commit_runs(out, [result], name=result.run_id)


def commit_runs(out: Path, results: list, name: str | None = None) -> None:
    """Persist finished runs as one unit: one trace file, then one commit record holding all their rows.

    A batch of a thousand tiny runs thus costs two file writes, not two thousand. The file name is a hash
    of the batch's run ids, so re-running the same batch replaces its files instead of duplicating rows.
    """
    import hashlib

    from optbench.spec import runs_schema, traces_schema

    out = Path(out)
    if name is None:
        ids = ",".join(sorted(r.run_id for r in results))
        name = "batch-" + hashlib.sha256(ids.encode()).hexdigest()[:16]
    facts = _write_trace(out / TRACES_DIR / f"{name}.parquet", _traces_table(results, traces_schema()))
    rows = table_from_rows([r.summary_row() for r in results], runs_schema())
    _write_record(out / COMMITS_DIR / f"{name}.parquet", rows, facts)


def _write_trace(path: Path, table) -> FileFacts:
    return write_parquet_atomic(table, path, dictionary_columns=list(TRACE_DICTIONARY_COLUMNS))


def _write_record(path: Path, rows, facts: FileFacts) -> None:
    metadata = {**(rows.schema.metadata or {}), TRACE_FACTS: json.dumps(facts.__dict__).encode()}
    write_parquet_atomic(rows.replace_schema_metadata(metadata), path)


def _traces_table(results: list, schema):
    """All the runs' traces as one table: columns concatenated once (a table per run costs ~0.5 ms each)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = [len(r.trace["step"]) for r in results]
    run_of_row = pa.array(
        np.repeat(np.arange(len(results)), lengths)
    )  # a string per row made in C++, not numpy
    columns = {"run_id": pc.take(pa.array([r.run_id for r in results], pa.string()), run_of_row)}
    for name in schema.names[1:]:
        values = np.concatenate([np.asarray(r.trace[name]) for r in results]) if results else np.empty(0)
        if pa.types.is_floating(schema.field(name).type):  # NaN (not measured, or a non-finite loss) -> null
            values = values.astype(np.float64, copy=False)
            columns[name] = pa.array(values, schema.field(name).type, mask=np.isnan(values))
        else:
            columns[name] = pa.array(values, schema.field(name).type)
    return pa.Table.from_pydict(columns, schema=schema)


# -------------------------------------------------------------------------------------------------- scan


@dataclass
class Record:
    """A commit record that passed the check: its name (the same in traces/ and _runs/) and run ids."""

    name: str
    run_ids: list[str]
    facts: dict | None  # None: written before commit records described their trace file
    rows: object = None  # the record's table (pyarrow, with the runs schema), when scanned with rows=True


@dataclass
class Damage:
    """A damaged record or trace file: why, which files to set aside, and what is known of its runs."""

    name: str
    reason: str  # one phrase naming the file, e.g. "traces/batch-….parquet: missing"
    paths: list[Path]
    run_ids: list[str] = field(default_factory=list)  # known from the record or the trace file
    rows: object = None  # the record's table when it is readable (the configs to re-run)


@dataclass
class Scan:
    """What ``scan`` found in a results folder."""

    out: Path
    records: dict[str, Record] = field(default_factory=dict)
    damaged: list[Damage] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)  # our trace files with no record: a cut commit
    foreign: list[Path] = field(default_factory=list)  # files optbench did not write (left alone)

    @property
    def run_ids(self) -> set[str]:
        return {run_id for record in self.records.values() for run_id in record.run_ids}

    @property
    def damaged_run_ids(self) -> set[str]:
        return {run_id for damage in self.damaged for run_id in damage.run_ids}

    def damage_text(self) -> str:
        """The damaged files in one phrase: the first few reasons, then a count."""
        reasons = [d.reason for d in self.damaged]
        more = len(reasons) - SHOWN_REASONS
        return "; ".join(reasons[:SHOWN_REASONS]) + (f"; and {more} more" if more > 0 else "")


class _Damaged(Exception):
    def __init__(self, reason: str, run_ids: list[str] | None = None, rows=None):
        super().__init__(reason)
        self.reason, self.run_ids, self.rows = reason, run_ids or [], rows


def _ours(folder: Path) -> tuple[list[Path], list[Path]]:
    """(files named as optbench names them, other files) in ``folder``; dot files (temps, locks) are neither."""
    if not folder.is_dir():
        return [], []
    named, foreign = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        (named if RUN_FILE_NAME.match(path.name) and path.is_file() else foreign).append(path)
    return named, foreign


def scan(out: Path, *, full: bool = False, rows: bool = False) -> Scan:
    """Check every commit record and its trace file (see the module docstring); nothing is changed.

    ``full``: also read every byte (checksums, run ids of every row, duplicate rows). ``rows``: keep each
    record's table (what ``consolidate_runs`` needs) instead of reading only its footer.
    """
    out = Path(out)
    found = Scan(out)
    records, foreign_records = _ours(out / COMMITS_DIR)
    traces, foreign_traces = _ours(out / TRACES_DIR)
    found.foreign = foreign_records + foreign_traces
    owners: dict[str, str] = {}  # run id -> the record that holds it
    for path in records:
        try:
            record = _checked_record(path, out / TRACES_DIR / path.name, full, rows)
            _check_unique(record, owners)
        except _Damaged as err:
            trace = out / TRACES_DIR / path.name
            paths = [path] + ([trace] if trace.exists() else [])
            run_ids = err.run_ids or _run_ids_in(trace)  # an unreadable record: its trace file may say
            found.damaged.append(Damage(path.stem, err.reason, paths, run_ids, err.rows))
            continue
        owners.update(dict.fromkeys(record.run_ids, path.name))
        found.records[path.stem] = record
    recorded = {path.name for path in records}
    for path in traces:
        if path.name not in recorded:
            _sort_orphan(path, found)
    return found


# Records that passed the cheap check in this process, by path: (the two files' identities, the record). A
# grid consolidates runs.parquet every 30 s and a plot reads runs and traces: each pair is read once. A file
# changed less than RACY_NS ago is not cached: a change within the file system's clock tick (a few ms) can
# leave size and mtime as they were (git's "racily clean" rule).
_checked: dict[Path, tuple[tuple, Record]] = {}
RACY_NS = 2_000_000_000


def _identity(path: Path) -> tuple | None:
    """What changes when a file is replaced or rewritten: inode, size, modification time (ns)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _checked_record(path: Path, trace: Path, full: bool, rows: bool) -> Record:
    """The record at ``path`` once its check passed (``_Damaged`` otherwise); the cheap check is cached
    for files that did not change since (``full`` reads every byte, every time)."""
    key = (_identity(path), _identity(trace))
    cached = _checked.get(path)
    if not full and cached is not None and cached[0] == key and (cached[1].rows is not None or not rows):
        return cached[1]
    record = _read_record(path, full or rows)
    _check_trace(trace, record, full)
    if None not in key and time.time_ns() - max(key[0][2], key[1][2]) > RACY_NS:
        _checked[path] = (key, record)
    return record


def _read_record(path: Path, with_rows: bool) -> Record:
    """A commit record: its rows (``with_rows``, or a batch's run ids) or, for one run, its footer only."""
    import pyarrow.parquet as pq

    where = f"{COMMITS_DIR}/{path.name}"
    batch = path.stem.startswith("batch-")
    try:
        with pq.ParquetFile(path) as file:
            schema, metadata = file.schema_arrow, file.metadata
            _check_schema(schema, _runs_schema(), where, ("run_id", "status"))
            table = file.read(columns=None if with_rows else ["run_id"]) if with_rows or batch else None
    except _Damaged:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is damage, named with its reason
        raise _Damaged(f"{where}: {_unreadable(err)}") from None
    if table is not None:
        run_ids = table.column("run_id").to_pylist()
    else:  # one run, named by its run id: the footer's statistics say whether that is what it holds
        run_ids = [path.stem]
        if metadata.num_rows != 1 or run_id_range(metadata) != (path.stem, path.stem):
            raise _Damaged(f"{where}: does not hold run {path.stem}")
    facts = json.loads(schema.metadata[TRACE_FACTS]) if TRACE_FACTS in (schema.metadata or {}) else None
    rows = conform(table, _runs_schema()) if with_rows else None
    return Record(path.stem, run_ids, facts, rows)


def _check_schema(schema, expected, where: str, required: tuple[str, ...]) -> None:
    """Our columns with our types (a column added to the schema later may be absent)."""
    if schema.equals(expected):  # the usual case, without a loop
        return
    types = _types_of(expected)
    if any(name not in schema.names for name in required) or any(
        types.get(f.name) is None or not f.type.equals(types[f.name]) for f in schema
    ):
        raise _Damaged(f"{where}: not an optbench file (columns differ)")


@functools.cache
def _types_of(schema) -> dict:
    return {f.name: f.type for f in schema}


def _check_trace(path: Path, record: Record, full: bool) -> None:
    """The record's trace file: present, and what the record says it is."""
    import pyarrow.parquet as pq

    where, facts, ids = f"{TRACES_DIR}/{path.name}", record.facts, record.run_ids
    rows = record.rows
    if not path.is_file():
        raise _Damaged(f"{where}: missing", ids, rows)
    size = path.stat().st_size
    if facts is not None and size != facts["bytes"]:
        raise _Damaged(f"{where}: {size} bytes, its commit record says {facts['bytes']}", ids, rows)
    try:
        metadata = pq.read_metadata(path)
    except Exception as err:  # noqa: BLE001
        raise _Damaged(f"{where}: {_unreadable(err)}", ids, rows) from None
    try:
        _check_schema(metadata.schema.to_arrow_schema(), _traces_schema(), where, ("run_id", "step"))
    except _Damaged as err:
        raise _Damaged(err.reason, ids, rows) from None
    low, high = run_id_range(metadata)
    if facts is not None and (metadata.num_rows, low, high) != (
        facts["rows"],
        facts["run_id_min"],
        facts["run_id_max"],
    ):
        raise _Damaged(f"{where}: holds other rows than its commit record says", ids, rows)
    if low is not None and (not ids or low < min(ids) or high > max(ids)):
        raise _Damaged(f"{where}: holds runs its commit record does not", ids, rows)
    if full:
        _check_trace_bytes(path, record)


def _check_trace_bytes(path: Path, record: Record) -> None:
    """Every byte: the checksum, every row's run id, no (run_id, step) twice."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    where, ids, rows = f"{TRACES_DIR}/{path.name}", record.run_ids, record.rows
    if record.facts is not None and sha256_of(path) != record.facts["sha256"]:
        raise _Damaged(f"{where}: content changed (sha256 differs from its commit record)", ids, rows)
    try:
        table = pq.read_table(path, columns=["run_id", "step"])
    except Exception as err:  # noqa: BLE001
        raise _Damaged(f"{where}: {_unreadable(err)}", ids, rows) from None
    import pyarrow as pa

    strangers = pc.invert(pc.is_in(table.column("run_id"), value_set=pa.array(ids, pa.string())))
    if pc.any(strangers).as_py():
        raise _Damaged(f"{where}: holds runs its commit record does not", ids, rows)
    if table.group_by(["run_id", "step"]).aggregate([]).num_rows != table.num_rows:
        raise _Damaged(f"{where}: holds a (run_id, step) row twice", ids, rows)


def _check_unique(record: Record, owners: dict[str, str]) -> None:
    twice = [run_id for run_id in record.run_ids if run_id in owners]
    if twice or len(set(record.run_ids)) != len(record.run_ids):
        other = owners.get(twice[0], "itself") if twice else "itself"
        raise _Damaged(
            f"{COMMITS_DIR}/{record.name}.parquet: holds runs already committed in {other}",
            record.run_ids,
            record.rows,
        )


def _run_ids_in(trace: Path) -> list[str]:
    """The run ids a trace file holds ([] if it is unreadable too)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        return pc.unique(pq.read_table(trace, columns=["run_id"]).column("run_id")).to_pylist()
    except Exception:  # noqa: BLE001 - both files damaged: the runs are unknown here
        return []


def _sort_orphan(path: Path, found: Scan) -> None:
    """A trace file of ours with no record: an orphan if its content is ours (deletable), else damage."""
    import pyarrow.parquet as pq

    where = f"{TRACES_DIR}/{path.name}"
    try:
        schema = pq.read_schema(path)
        _check_schema(schema, _traces_schema(), where, ("run_id", "step"))
    except _Damaged as err:
        found.damaged.append(Damage(path.stem, err.reason, [path]))
        return
    except Exception as err:  # noqa: BLE001
        found.damaged.append(Damage(path.stem, f"{where}: {_unreadable(err)}", [path]))
        return
    found.orphans.append(path)


def _unreadable(err: Exception) -> str:
    """A short reason for an unreadable Parquet file."""
    text = str(err).lower()
    if "size is 0" in text or "empty" in text:
        return "empty (0 bytes)"
    if "magic" in text or "footer" in text or "not a parquet" in text:
        return "not a Parquet file (garbage or truncated)"
    return f"unreadable ({type(err).__name__})"


@functools.cache
def _runs_schema():
    from optbench.spec import runs_schema

    return runs_schema()


@functools.cache
def _traces_schema():
    from optbench.spec import traces_schema

    return traces_schema()


# ------------------------------------------------------------------------------ repair, resume and purge


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
        _write_record(record_path, rows, _write_trace(trace_path, kept))


# ------------------------------------------------------------------------------------------- read back


def config_of(row):
    """The RunConfig of a runs row (a dict or a pandas row; nulls and NaN back to None)."""
    import math

    from optbench.spec import CONFIG_FIELDS, RunConfig

    values = {}
    for name in CONFIG_FIELDS:
        value = row[name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = None  # momentum / batch_size: the default
        elif hasattr(value, "item"):
            value = value.item()
        values[name] = value
    return RunConfig(**values)


def conform(table, schema):
    """``table`` with exactly ``schema``'s columns: a column added to the schema since it was written is
    null, its metadata is dropped."""
    import pyarrow as pa

    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.schema.names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def consolidate_runs(out: Path, order: list[str] | None = None):
    """Rewrite DIR/runs.parquet from the commit records that pass ``scan`` (atomic); rows follow ``order``
    where given. Damaged records are left out (``prepare`` sets them aside first)."""
    import pyarrow as pa

    out = Path(out)
    schema = _runs_schema()
    tables = [record.rows for record in scan(out, rows=True).records.values()]  # conformed when read
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if order is not None:
        rank = {run_id: i for i, run_id in enumerate(order)}
        ids = table.column("run_id").to_pylist()
        table = table.take(sorted(range(len(ids)), key=lambda i: (rank.get(ids[i], len(rank)), ids[i])))
    write_parquet_atomic(table, out / RUNS_FILE)
    return table


def read_runs(out: Path, say: Say = warn):
    """runs.parquet as a DataFrame. A damaged runs.parquet is an OptbenchError (one line); runs it lists
    without a commit record, or committed runs it lacks (a grid killed before its last rewrite), one warning
    line each."""
    import pyarrow.parquet as pq

    out = Path(out)
    path = out / RUNS_FILE
    if not path.is_file():
        raise OptbenchError(f"no {RUNS_FILE} in {str(out)!r}")
    try:
        table = pq.read_table(path)
        _check_schema(table.schema, _runs_schema(), RUNS_FILE, ("run_id", "status"))
    except _Damaged:
        raise OptbenchError(f"{path} was not written by optbench (its columns differ)") from None
    except Exception as err:  # noqa: BLE001
        raise OptbenchError(
            f"{path} is damaged ({_unreadable(err)}); bench verify {out} --repair rebuilds it"
        ) from None
    runs = conform(table, _runs_schema()).to_pandas()
    if (out / COMMITS_DIR).is_dir():
        _compare_with_records(out, set(runs["run_id"]), say)
    return runs


def _compare_with_records(out: Path, listed: set[str], say: Say) -> None:
    found = scan(out)
    unrecorded = listed - found.run_ids - found.damaged_run_ids
    unlisted = found.run_ids - listed
    if unrecorded:
        say(
            f"warning: {len(unrecorded)} run(s) in {out / RUNS_FILE} have no commit record in "
            f"{out / COMMITS_DIR}: their traces are not read; bench verify {out} says more"
        )
    if unlisted:
        say(
            f"warning: {out / RUNS_FILE} lacks {len(unlisted)} committed run(s) (it is rewritten at the end "
            f"of a command); bench verify {out} --repair rewrites it"
        )


def read_traces(out: Path, run_ids: list[str] | None = None, say: Say = warn):
    """The traces of a results folder as one DataFrame (optionally only some runs).

    Only trace files whose commit record passes ``scan`` are read, and only the rows of the runs their
    record holds; a damaged file is skipped with one warning line naming it (never a traceback, never
    silently fewer lines).
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    out = Path(out)
    found = scan(out)
    wanted = None if run_ids is None else set(run_ids)
    damaged = [d for d in found.damaged if wanted is None or wanted.intersection(d.run_ids)]
    if damaged:
        _say_skipped(out, Scan(out, damaged=damaged), say)
    records = [r for r in found.records.values() if wanted is None or wanted.intersection(r.run_ids)]
    ids = {run_id for r in records for run_id in r.run_ids if wanted is None or run_id in wanted}
    paths = [str(out / TRACES_DIR / f"{r.name}.parquet") for r in records]
    schema = _traces_schema()
    value_set = pa.array(sorted(ids), pa.string())
    try:
        dataset = ds.dataset(paths, format="parquet", schema=schema)
        table = dataset.to_table(filter=ds.field("run_id").isin(value_set))
    except Exception:  # noqa: BLE001 - a body damaged behind an intact footer: find the file, skip it
        table = _read_file_by_file(out, records, value_set, schema, say)
    return table.to_pandas()


def _read_file_by_file(out: Path, records: list[Record], value_set, schema, say: Say):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables, bad = [], []
    for record in records:
        path = out / TRACES_DIR / f"{record.name}.parquet"
        try:
            table = conform(pq.read_table(path), schema)
        except Exception as err:  # noqa: BLE001
            bad.append(
                Damage(record.name, f"{TRACES_DIR}/{path.name}: {_unreadable(err)}", [path], record.run_ids)
            )
            continue
        tables.append(table.filter(pc.is_in(table.column("run_id"), value_set=value_set)))
    if bad:
        _say_skipped(out, Scan(out, damaged=bad), say)
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _say_skipped(out: Path, damaged: Scan, say: Say) -> None:
    say(
        f"warning: skipped {len(damaged.damaged)} damaged file(s) in {out} ({damaged.damage_text()}): their "
        f"{len(damaged.damaged_run_ids)} run(s) have no trace here; bench verify {out} --repair re-runs them"
    )
