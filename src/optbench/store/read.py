"""Read a results folder back: runs.parquet (checked against the commit records), traces, configs.

Only what ``store.scan`` passes is read; a damaged file is one warning line naming it, never a traceback and
never silently fewer lines.
"""

from __future__ import annotations

from pathlib import Path

from optbench.errors import OptbenchError
from optbench.store.check import (
    Damage,
    Damaged,
    Record,
    Say,
    Scan,
    check_schema,
    runs_schema,
    scan,
    traces_schema,
    unreadable,
    warn,
)
from optbench.store.files import conform, write_parquet_atomic
from optbench.store.layout import COMMITS_DIR, RUNS_FILE, TRACES_DIR


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


def consolidate_runs(out: Path, order: list[str] | None = None):
    """Rewrite DIR/runs.parquet from the commit records that pass ``scan`` (atomic); rows follow ``order``
    where given. Damaged records are left out (``prepare`` sets them aside first)."""
    import pyarrow as pa

    out = Path(out)
    schema = runs_schema()
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
        check_schema(table.schema, runs_schema(), RUNS_FILE, ("run_id", "status"))
    except Damaged:
        raise OptbenchError(f"{path} was not written by optbench (its columns differ)") from None
    except Exception as err:  # noqa: BLE001
        raise OptbenchError(
            f"{path} is damaged ({unreadable(err)}); bench verify {out} --repair rebuilds it"
        ) from None
    runs = conform(table, runs_schema()).to_pandas()
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
    schema = traces_schema()
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
                Damage(record.name, f"{TRACES_DIR}/{path.name}: {unreadable(err)}", [path], record.run_ids)
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
