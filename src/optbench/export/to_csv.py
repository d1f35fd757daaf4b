"""``bench export --to csv``: runs.csv and traces.csv (pandas' CSV; nulls as empty fields)."""

from __future__ import annotations

from pathlib import Path


def write(tables, dest: Path) -> list[Path]:
    from optbench.store import write_text_atomic

    written = []
    for name, frame in (("runs.csv", tables.runs), ("traces.csv", tables.traces)):
        write_text_atomic(frame.to_csv(index=False), dest / name)
        written.append(dest / name)
    return written
