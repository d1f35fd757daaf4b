"""Atomic file writes: a results folder never shows a half-written file.

Every file is written to a dot-prefixed temp name in its final folder (``.<name>.<32 hex>.tmp``),
validated, then renamed: a process killed half way leaves only dot files, which pyarrow's dataset discovery
ignores and the next command into the folder removes (``remove_stale_temps``). A write that fails (a full
disk, a read-only folder) removes its temp file before the error goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The temp names this module makes, and only those: the clean-up never touches another dot file.
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{32}\.tmp$")
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileFacts:
    """What a written Parquet file holds, for its commit record: rows, bytes, sha256 of the bytes, and the
    smallest and largest run id (the Parquet footer's statistics repeat them: a cheap identity check)."""

    rows: int
    bytes: int
    sha256: str
    run_id_min: str | None = None
    run_id_max: str | None = None


def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"


def _discard(tmp: Path) -> None:
    """Remove a temp file if it is there; never raise (on a read-only file system even a missing file's
    unlink fails, and that error would hide the one that matters)."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(table, path: Path, dictionary_columns: list[str] | None = None) -> FileFacts:
    """Write ``table`` to ``path`` via temp file + rename; the temp file is read back before the rename.

    ``dictionary_columns``: dictionary-encode only these (default: every column, pyarrow's default).
    Returns the file's ``FileFacts`` (its sha256 costs ~1 ms per MB, read from the page cache).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        pq.write_table(table, tmp, use_dictionary=True if dictionary_columns is None else dictionary_columns)
        metadata = pq.read_metadata(tmp)
        if metadata.num_rows != table.num_rows:  # validate before it becomes visible
            raise OSError(f"short write of {path}")
        facts = FileFacts(metadata.num_rows, tmp.stat().st_size, sha256_of(tmp), *run_id_range(metadata))
        os.replace(tmp, path)
    finally:
        _discard(tmp)
    return facts


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` via temp file + rename; a failed write leaves no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        _discard(tmp)


def check_writable(folder: Path) -> None:
    """OptbenchError (one line) unless a file can be created in ``folder`` (made if missing): asked before
    a command that writes several files starts, rather than failing on each (a read-only file system
    refuses even root, which permission bits do not)."""
    from optbench.errors import OptbenchError

    folder = Path(folder)
    probe = _temp_path(folder / "write-probe")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
    except OSError as err:
        raise OptbenchError(f"cannot write to {folder}: {err.strerror}") from None
    finally:
        _discard(probe)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def run_id_range(metadata) -> tuple[str | None, str | None]:
    """(min, max) of the ``run_id`` column from a Parquet footer's statistics; (None, None) without rows."""
    names = metadata.schema.names
    if "run_id" not in names or metadata.num_rows == 0:
        return None, None
    column = names.index("run_id")
    lows, highs = [], []
    for i in range(metadata.num_row_groups):
        stats = metadata.row_group(i).column(column).statistics
        if stats is None or not stats.has_min_max:
            return None, None
        lows.append(stats.min)
        highs.append(stats.max)
    return (min(lows), max(highs)) if lows else (None, None)


def remove_stale_temps(folder: Path, subfolders: tuple[str, ...] = ()) -> list[Path]:
    """Remove the temp files of writes that a killed process left in ``folder`` (and its ``subfolders``).

    Call only while holding the folder's lock (no writer of ours is alive). Returns what was removed.
    """
    removed = []
    for where in (Path(folder), *(Path(folder) / sub for sub in subfolders)):
        if not where.is_dir():
            continue
        for path in where.iterdir():
            if TEMP_NAME.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def table_from_rows(rows: list[dict[str, Any]], schema):
    """Build a pyarrow Table with an explicit schema (missing keys become nulls)."""
    import pyarrow as pa

    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


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
