"""Atomic file writes: a results folder never shows a half-written file.

Every file is written to a dot-prefixed temp name in its final folder, validated, then renamed: a process
killed half way leaves only dot files, which pyarrow's dataset discovery ignores.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any


def write_parquet_atomic(table, path: Path, dictionary_columns: list[str] | None = None) -> None:
    """Write ``table`` to ``path`` via temp file + rename; the temp file is read back before the rename.

    ``dictionary_columns``: dictionary-encode only these (default: every column, pyarrow's default).
    """
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, use_dictionary=True if dictionary_columns is None else dictionary_columns)
        if pq.read_metadata(tmp).num_rows != table.num_rows:  # validate before it becomes visible
            raise OSError(f"short write of {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def table_from_rows(rows: list[dict[str, Any]], schema):
    """Build a pyarrow Table with an explicit schema (missing keys become nulls)."""
    import pyarrow as pa

    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)
