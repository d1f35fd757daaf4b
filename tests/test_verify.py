"""Damaged results folders, as a careless or hostile user leaves them: every damage is found (resume's cheap
check, ``bench verify``'s full one), named in one line, set aside into _damaged/ (never deleted) and its runs
re-run, by the next ``bench grid`` or by ``bench verify --repair``; readers skip damaged files with one
warning line; a repaired folder equals one that was never damaged."""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from optbench import store
from optbench.cli.app import app
from optbench.grid import GridSpec, run_grid

GRID = GridSpec(optimizer="sgd,adam", lr="0.1,0.2", momentum="0,0.5", steps=15)
GRID_ARGS = ["--optimizer", "sgd,adam", "--lr", "0.1,0.2", "--momentum", "0,0.5", "--steps", "15"]
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    """The grid once on the reference engine (one file pair per run) and once batched (one pair per batch)."""
    root = tmp_path_factory.mktemp("undisturbed")
    for engine in ("reference", "batched"):
        run_grid(GRID, out=root / engine, workers=1, engine=engine, say=lambda line: None)
    return root


def copy(undisturbed, tmp_path, engine="reference"):
    out = tmp_path / engine
    shutil.copytree(undisturbed / engine, out)
    return out


def traces_of(out):
    return store.read_traces(out, say=pytest.fail).sort_values(["run_id", "step"]).reset_index(drop=True)


def trace_file(out, i=0):
    return sorted((out / store.TRACES_DIR).glob("*.parquet"))[i]


def record_file(out, i=0):
    return sorted((out / store.COMMITS_DIR).glob("*.parquet"))[i]


# What a careless or hostile user does to one file: (what, file picker, damage, the reason it is reported with)
def _garbage(path):
    path.write_bytes(b"this is not parquet" * 20)


def _empty(path):
    path.write_bytes(b"")


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _delete(path):
    path.unlink()


def _flip_a_byte(path):  # same size, same footer: only the checksum sees it
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = [
    ("garbage record", record_file, _garbage, "not a Parquet file"),
    ("empty record", record_file, _empty, "empty (0 bytes)"),
    ("garbage trace", trace_file, _garbage, "bytes, its commit record says"),
    ("truncated trace", trace_file, _truncate, "bytes, its commit record says"),
    ("deleted trace", trace_file, _delete, "missing"),
]


def _copied_over(out):
    """A trace file copied over another (same run count and steps: possibly the same size)."""
    shutil.copy(trace_file(out, 1), trace_file(out, 0))
    return trace_file(out, 0)


@pytest.mark.parametrize(("what", "pick", "damage", "reason"), DAMAGES, ids=[d[0] for d in DAMAGES])
@pytest.mark.parametrize("engine", ["reference", "batched"])
def test_the_next_grid_finds_the_damage_says_so_and_runs_only_those_runs_again(
    undisturbed, tmp_path, engine, what, pick, damage, reason
):
    out = copy(undisturbed, tmp_path, engine)
    path = pick(out)
    run_ids = set(pq.read_table(record_file(out, 0)).column("run_id").to_pylist())
    damage(path)
    lines, events = [], []
    runs = run_grid(GRID, out=out, workers=1, engine=engine, say=lines.append, progress=events.append)
    assert len(lines) == 1 and lines[0].startswith(f"repairing: {len(run_ids)} run(s) from 1 damaged file(s)")
    assert reason in lines[0] and path.name in lines[0]
    assert events[0].resumed == 8 - len(run_ids)  # exactly the damaged runs run again
    expected = pd.read_parquet(undisturbed / engine / store.RUNS_FILE)
    assert runs["final_loss"].tolist() == expected["final_loss"].tolist()
    pd.testing.assert_frame_equal(traces_of(out), traces_of(undisturbed / engine))
    kept = sorted(
        p.relative_to(out / store.DAMAGED_DIR) for p in (out / store.DAMAGED_DIR).rglob("*.parquet")
    )
    assert len(kept) == (1 if what == "deleted trace" else 2)  # nothing deleted: both files moved aside


def test_a_trace_copied_over_another_is_found_even_when_the_size_is_the_same(undisturbed, tmp_path):
    out = copy(undisturbed, tmp_path)
    overwritten = _copied_over(out)
    found = store.scan(out)
    assert [d.name for d in found.damaged] == [overwritten.stem]
    assert "its commit record" in found.damaged[0].reason
    runs = run_grid(GRID, out=out, workers=1, engine="reference", say=lambda line: None)
    traces = traces_of(out)
    assert not traces.duplicated(["run_id", "step"]).any() and traces["run_id"].nunique() == len(runs) == 8


def test_a_flipped_byte_is_found_by_verify_and_repaired(undisturbed, tmp_path):
    out = copy(undisturbed, tmp_path, "batched")
    _flip_a_byte(trace_file(out))
    assert store.scan(out).damaged == []  # footer, size and row count are unchanged: resume cannot see it
    result = cli("verify", out)
    assert result.exit_code == 1
    assert "problem: damaged: traces/" in result.stdout and "content changed (sha256" in result.stdout
    repaired = cli("verify", out, "--repair", "--workers", "1")
    assert repaired.exit_code == 0, repaired.output
    assert "1 damaged file(s) moved to" in repaired.stdout and "run(s) run again" in repaired.stdout
    assert repaired.stdout.rstrip().endswith("no problem found")
    pd.testing.assert_frame_equal(traces_of(out), traces_of(undisturbed / "batched"))
    assert store.read_manifest(out)["repairs"][0]["rerun"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize(("what", "pick", "damage", "reason"), DAMAGES, ids=[d[0] for d in DAMAGES])
def test_verify_names_each_damage_and_repair_restores_the_undisturbed_folder(
    undisturbed, tmp_path, what, pick, damage, reason
):
    out = copy(undisturbed, tmp_path)
    damage(pick(out))
    checked = cli("verify", out)
    assert checked.exit_code == 1
    problems = [line for line in checked.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and reason in problems[0], checked.stdout
    assert "1 damaged file(s) (1 run(s))" in checked.stdout
    repaired = cli("verify", out, "--repair", "--workers", "1")
    assert repaired.exit_code == 0, repaired.output
    runs = store.read_runs(out, say=pytest.fail)
    expected = pd.read_parquet(undisturbed / "reference" / store.RUNS_FILE)
    assert runs["run_id"].tolist() == expected["run_id"].tolist()  # the order of runs.parquet is kept
    assert runs["final_loss"].tolist() == expected["final_loss"].tolist()
    pd.testing.assert_frame_equal(traces_of(out), traces_of(undisturbed / "reference"))
    assert cli("verify", out).exit_code == 0


def test_a_sound_folder_verifies_and_names_foreign_files_without_touching_them(undisturbed, tmp_path):
    out = copy(undisturbed, tmp_path, "batched")
    (out / store.COMMITS_DIR / "notes.parquet").write_text("mine")
    result = cli("verify", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "note: not written by optbench (left alone): _runs/notes.parquet",
        f"{out}: 8 committed run(s) verified, no problem found",
    ]
    assert cli("verify", out, "--repair").exit_code == 0
    assert (out / store.COMMITS_DIR / "notes.parquet").read_text() == "mine"


def test_a_deleted_commit_record_is_seen_by_readers_and_verify(undisturbed, tmp_path):
    """runs.parquet still lists the runs; their trace file has no record any more (an orphan)."""
    out = copy(undisturbed, tmp_path, "batched")
    record_file(out).unlink()
    lines = []
    store.read_runs(out, say=lines.append)
    assert len(lines) == 1 and "have no commit record" in lines[0]
    checked = cli("verify", out)
    assert checked.exit_code == 1
    assert "has no commit record (a write cut short" in checked.stdout
    assert "lists 4 run(s) with no commit record (deleted?)" in checked.stdout
    repaired = cli("verify", out, "--repair", "--workers", "1")
    assert repaired.exit_code == 0, repaired.output
    assert "4 run(s) run again, 1 leftover file(s) removed" in repaired.stdout
    pd.testing.assert_frame_equal(traces_of(out), traces_of(undisturbed / "batched"))


def test_runs_of_a_damaged_file_whose_configs_are_lost_are_counted_not_invented(undisturbed, tmp_path):
    out = copy(undisturbed, tmp_path)
    _garbage(record_file(out))  # the record is unreadable ...
    (out / store.RUNS_FILE).unlink()  # ... and runs.parquet is gone: the run id is known, its config not
    repaired = cli("verify", out, "--repair", "--workers", "1")
    assert repaired.exit_code == 1
    assert repaired.stderr.startswith("1 run(s) of damaged files could not be run again")
    assert len(store.read_runs(out, say=pytest.fail)) == 7  # rewritten from the sound records
    assert (
        run_grid(GRID, out=out, workers=1, say=pytest.fail)["status"].eq("ok").sum() >= 7
    )  # its command redoes it


def test_a_damaged_runs_file_is_one_line_for_readers_and_rewritten_by_the_next_grid(undisturbed, tmp_path):
    out = copy(undisturbed, tmp_path, "batched")
    _garbage(out / store.RUNS_FILE)
    plot = cli("plot", out)
    assert plot.exit_code == 2
    assert plot.stderr == (
        f"error: {out / store.RUNS_FILE} is damaged (not a Parquet file (garbage or truncated)); "
        f"bench verify {out} --repair rebuilds it\n"
    )
    report = cli("report", out)
    assert report.exit_code == 2 and report.stderr.count("\n") == 1
    result = cli("grid", *GRID_ARGS, "--workers", "1", "--no-progress", "--out", out)
    assert result.exit_code == 0 and "8 of 8 runs were already in" in result.stdout
    assert len(store.read_runs(out, say=pytest.fail)) == 8


@pytest.mark.slow
@pytest.mark.parametrize("command", ["plot", "report"])
def test_readers_skip_a_damaged_file_with_one_line_and_draw_the_rest(undisturbed, tmp_path, command):
    out = copy(undisturbed, tmp_path, "batched")
    deleted = trace_file(out)
    deleted.unlink()
    result = cli(command, out)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"warning: skipped 1 damaged file(s) in {out} (traces/{deleted.name}: missing)"
    )
    assert "their 4 run(s) have no trace here; bench verify" in result.stderr
    if command == "plot":
        assert "4 lines" in result.stdout  # the sound half, and the line above says why not 8


def test_a_damaged_file_never_reaches_a_reader_as_a_traceback(undisturbed, tmp_path):
    """Every kind of damage, all at once, through the Python readers: warnings, never an exception."""
    out = copy(undisturbed, tmp_path)
    for i, (_, pick, damage, _) in enumerate(DAMAGES):
        path = sorted((out / pick(out).parent.name).glob("*.parquet"))[i]
        damage(path)
    lines = []
    traces = store.read_traces(out, say=lines.append)
    assert len(lines) == 1 and "skipped 5 damaged file(s)" in lines[0] and "and 2 more" in lines[0]
    assert traces["run_id"].nunique() == 3


def test_the_commit_record_describes_its_trace_file(undisturbed):
    import json

    out = undisturbed / "batched"
    for record in (out / store.COMMITS_DIR).glob("*.parquet"):
        facts = json.loads(pq.read_schema(record).metadata[store.commit.TRACE_FACTS])
        trace = out / store.TRACES_DIR / record.name
        table = pq.read_table(trace)
        assert facts["rows"] == table.num_rows and facts["bytes"] == trace.stat().st_size
        assert facts["sha256"] == store.files.sha256_of(trace)
        ids = table.column("run_id").to_pylist()
        assert (facts["run_id_min"], facts["run_id_max"]) == (min(ids), max(ids))


def test_records_written_before_the_facts_stay_readable(undisturbed, tmp_path):
    """A folder from an older optbench: commit records without metadata are trusted for what they show."""
    out = copy(undisturbed, tmp_path, "batched")
    for record in (out / store.COMMITS_DIR).glob("*.parquet"):
        table = pq.read_table(record)
        pq.write_table(table.replace_schema_metadata(None), record)
    assert store.scan(out).damaged == [] and len(store.completed_run_ids(out)) == 8
    pd.testing.assert_frame_equal(traces_of(out), traces_of(undisturbed / "batched"))
    assert cli("verify", out).exit_code == 0
    trace_file(out).unlink()
    assert [d.reason for d in store.scan(out).damaged] == [
        f"traces/{trace_file(undisturbed / 'batched').name}: missing"
    ]


def test_the_cheap_check_costs_little_per_record(undisturbed, tmp_path):
    """Resume checks every record from footers only: a few hundred microseconds per record pair."""
    import time

    out = copy(undisturbed, tmp_path)
    start = time.perf_counter()
    for _ in range(5):
        store.scan(out)
    per_record = (time.perf_counter() - start) / 5 / 8
    assert per_record < 0.005  # ~0.15 ms measured; generous for a loaded machine
