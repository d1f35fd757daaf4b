"""Check what a results folder holds: every commit record and its trace file, read-only.

``scan`` checks every record cheaply (readable, our schema, its trace file present with the recorded size,
row count and run-id range, all from the file system and the Parquet footer: ~0.15 ms per record);
``scan(full=True)`` (``bench verify``) also reads every byte: checksums, every row's run id, duplicate
(run_id, step) rows. A record that fails, or whose trace file fails, is *damaged*: its runs are not
committed any more (``store.repair`` sets its files aside; nothing is deleted, nothing hidden). Records
written before the facts existed are checked for what they can show (readable, schema, trace file present).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from optbench.store.commit import TRACE_FACTS
from optbench.store.files import conform, run_id_range, sha256_of
from optbench.store.layout import COMMITS_DIR, RUN_FILE_NAME, TRACES_DIR

SHOWN_REASONS = 3  # a one-line message names this many damaged files, then counts the rest


Say = Callable[[str], None]


def warn(text: str) -> None:
    """The default for ``say``: one line on stderr."""
    print(text, file=sys.stderr)


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


class Damaged(Exception):
    """A check failed: why (one phrase naming the file), and what is known of the runs it held."""

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
        except Damaged as err:
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
    """The record at ``path`` once its check passed (``Damaged`` otherwise); the cheap check is cached
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
            check_schema(schema, runs_schema(), where, ("run_id", "status"))
            table = file.read(columns=None if with_rows else ["run_id"]) if with_rows or batch else None
    except Damaged:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is damage, named with its reason
        raise Damaged(f"{where}: {unreadable(err)}") from None
    if table is not None:
        run_ids = table.column("run_id").to_pylist()
    else:  # one run, named by its run id: the footer's statistics say whether that is what it holds
        run_ids = [path.stem]
        if metadata.num_rows != 1 or run_id_range(metadata) != (path.stem, path.stem):
            raise Damaged(f"{where}: does not hold run {path.stem}")
    facts = json.loads(schema.metadata[TRACE_FACTS]) if TRACE_FACTS in (schema.metadata or {}) else None
    rows = conform(table, runs_schema()) if with_rows else None
    return Record(path.stem, run_ids, facts, rows)


def check_schema(schema, expected, where: str, required: tuple[str, ...]) -> None:
    """Our columns with our types (a column added to the schema later may be absent)."""
    if schema.equals(expected):  # the usual case, without a loop
        return
    types = _types_of(expected)
    if any(name not in schema.names for name in required) or any(
        types.get(f.name) is None or not f.type.equals(types[f.name]) for f in schema
    ):
        raise Damaged(f"{where}: not an optbench file (columns differ)")


@functools.cache
def _types_of(schema) -> dict:
    return {f.name: f.type for f in schema}


def _check_trace(path: Path, record: Record, full: bool) -> None:
    """The record's trace file: present, and what the record says it is."""
    import pyarrow.parquet as pq

    where, facts, ids = f"{TRACES_DIR}/{path.name}", record.facts, record.run_ids
    rows = record.rows
    if not path.is_file():
        raise Damaged(f"{where}: missing", ids, rows)
    size = path.stat().st_size
    if facts is not None and size != facts["bytes"]:
        raise Damaged(f"{where}: {size} bytes, its commit record says {facts['bytes']}", ids, rows)
    try:
        metadata = pq.read_metadata(path)
    except Exception as err:  # noqa: BLE001
        raise Damaged(f"{where}: {unreadable(err)}", ids, rows) from None
    try:
        check_schema(metadata.schema.to_arrow_schema(), traces_schema(), where, ("run_id", "step"))
    except Damaged as err:
        raise Damaged(err.reason, ids, rows) from None
    low, high = run_id_range(metadata)
    if facts is not None and (metadata.num_rows, low, high) != (
        facts["rows"],
        facts["run_id_min"],
        facts["run_id_max"],
    ):
        raise Damaged(f"{where}: holds other rows than its commit record says", ids, rows)
    if low is not None and (not ids or low < min(ids) or high > max(ids)):
        raise Damaged(f"{where}: holds runs its commit record does not", ids, rows)
    if full:
        _check_trace_bytes(path, record)


def _check_trace_bytes(path: Path, record: Record) -> None:
    """Every byte: the checksum, every row's run id, no (run_id, step) twice."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    where, ids, rows = f"{TRACES_DIR}/{path.name}", record.run_ids, record.rows
    if record.facts is not None and sha256_of(path) != record.facts["sha256"]:
        raise Damaged(f"{where}: content changed (sha256 differs from its commit record)", ids, rows)
    try:
        table = pq.read_table(path, columns=["run_id", "step"])
    except Exception as err:  # noqa: BLE001
        raise Damaged(f"{where}: {unreadable(err)}", ids, rows) from None
    import pyarrow as pa

    strangers = pc.invert(pc.is_in(table.column("run_id"), value_set=pa.array(ids, pa.string())))
    if pc.any(strangers).as_py():
        raise Damaged(f"{where}: holds runs its commit record does not", ids, rows)
    if table.group_by(["run_id", "step"]).aggregate([]).num_rows != table.num_rows:
        raise Damaged(f"{where}: holds a (run_id, step) row twice", ids, rows)


def _check_unique(record: Record, owners: dict[str, str]) -> None:
    twice = [run_id for run_id in record.run_ids if run_id in owners]
    if twice or len(set(record.run_ids)) != len(record.run_ids):
        other = owners.get(twice[0], "itself") if twice else "itself"
        raise Damaged(
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
        check_schema(schema, traces_schema(), where, ("run_id", "step"))
    except Damaged as err:
        found.damaged.append(Damage(path.stem, err.reason, [path]))
        return
    except Exception as err:  # noqa: BLE001
        found.damaged.append(Damage(path.stem, f"{where}: {unreadable(err)}", [path]))
        return
    found.orphans.append(path)


def unreadable(err: Exception) -> str:
    """A short reason for an unreadable Parquet file."""
    text = str(err).lower()
    if "size is 0" in text or "empty" in text:
        return "empty (0 bytes)"
    if "magic" in text or "footer" in text or "not a parquet" in text:
        return "not a Parquet file (garbage or truncated)"
    return f"unreadable ({type(err).__name__})"


@functools.cache  # the schemas of this version, built once
def runs_schema():
    from optbench import spec

    return spec.runs_schema()


@functools.cache
def traces_schema():
    from optbench import spec

    return spec.traces_schema()
