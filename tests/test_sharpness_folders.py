"""Results folders and sharpness: one written before the sharpness columns existed still reads, verifies,
resumes, summarizes and reports; the CLI's --sharpness-every writes the columns; the report's section."""

from __future__ import annotations

import dataclasses

import pytest

from optbench import spec, store
from optbench.grid import run_grid
from optbench.store.verify import verify


def _forget_schemas() -> None:
    """The store caches the schemas it reads from spec (functools.cache): forget them, wherever they are."""
    import sys

    for name, module in list(sys.modules.items()):
        if name.startswith("optbench.store"):
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


NEW_RUN_COLUMNS = {"sharpness_every", "sharpness_residual", "sharpness_unconverged"}
NEW_TRACE_COLUMNS = {"sharpness", "precond_sharpness"}
GRID = {"problem": "quadratic,mlp-regression(n_train=64, width=8)", "lr": "0.01,0.1", "steps": 8}


@pytest.fixture
def old_folder(tmp_path, monkeypatch):
    """A grid folder written with the schemas of today's main, before the sharpness columns: the writers
    read ``spec.runs_schema()`` / ``spec.traces_schema()`` when they write, so those are narrowed."""
    import pyarrow as pa

    runs_schema, traces_schema = spec.runs_schema, spec.traces_schema

    def without(schema, names):
        return pa.schema([f for f in schema if f.name not in names])

    with monkeypatch.context() as patch:
        patch.setattr(spec, "runs_schema", lambda: without(runs_schema(), NEW_RUN_COLUMNS))
        patch.setattr(spec, "traces_schema", lambda: without(traces_schema(), NEW_TRACE_COLUMNS))
        _forget_schemas()
        out = tmp_path / "old"
        run_grid(GRID, out=out, workers=1)
    _forget_schemas()
    import pyarrow.parquet as pq

    assert not NEW_RUN_COLUMNS & set(pq.read_schema(out / store.RUNS_FILE).names)
    trace_file = next((out / "traces").glob("*.parquet"))
    assert not NEW_TRACE_COLUMNS & set(pq.read_schema(trace_file).names)
    return out


def test_an_old_folder_reads_with_the_new_columns_null(old_folder):
    runs = store.read_runs(old_folder)
    assert len(runs) == 4 and runs["sharpness_every"].isna().all() and runs["sharpness_residual"].isna().all()
    traces = store.read_traces(old_folder)
    assert traces["sharpness"].isna().all() and traces["precond_sharpness"].isna().all()
    assert len(traces) == 4 * 8
    # the run ids still match the configs read back (sharpness_every null hashes as before)
    assert [store.config_of(row).run_id() for _, row in runs.iterrows()] == runs["run_id"].tolist()


def test_an_old_folder_verifies_and_resumes_without_running_again(old_folder):
    assert verify(old_folder).ok
    records = sorted(p.name for p in (old_folder / "_runs").iterdir())
    runs = run_grid(GRID, out=old_folder, workers=1)
    assert sorted(p.name for p in (old_folder / "_runs").iterdir()) == records  # nothing ran again
    assert len(runs) == 4 and verify(old_folder).ok


def test_an_old_folder_resumed_with_tracking_runs_only_the_new_cells(old_folder):
    runs = run_grid({**GRID, "sharpness_every": 4}, out=old_folder, workers=1)
    assert len(runs) == 4 and (runs["sharpness_every"] == 4).all()  # the tracked cells are other runs
    everything = store.read_runs(old_folder)
    assert len(everything) == 8 and verify(old_folder).ok
    traces = store.read_traces(old_folder)
    assert traces["sharpness"].notna().sum() == 4 * 2  # steps 0 and 4 of the new runs


@pytest.mark.slow
def test_an_old_folder_summarizes_and_reports(old_folder):
    from optbench.grid.summary import summary
    from optbench.report import build_report

    assert len(summary(store.read_runs(old_folder)))
    text = build_report(old_folder, fmt="md").read_text()
    assert "Sharpness and the edge of stability" not in text and "Results" in text


# ---------------------------------------------------------------------------------------------------- CLI


def test_lr_sweep_prints_the_predicted_bound_and_the_regimes(cli, tmp_path):
    out = tmp_path / "sweep"
    result = cli("lr-sweep", "--min", "0.05", "--max", "0.35", "--num", "4", "--steps", "60", "--out", out,
                 "--no-plots", "--sharpness-every", "20")  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert "initial sharpness lambda_0 = 8 " in text
    assert "predicted bound lr < 2(1+m)/lambda_0 = 0.25; measured: largest monotone 0.15" in text
    assert "-> prediction agrees" in text
    for regime in ("monotone", "no progress", "diverged"):
        assert regime in result.stdout
    runs = store.read_runs(out)
    assert (runs["sharpness_every"] == 20).all()
    traces = store.read_traces(out)
    assert traces[traces["sharpness"].notna()]["sharpness"].eq(8.0).all()


def test_grid_option_and_bad_values(cli, tmp_path):
    ok = cli("grid", "--lr", "0.1", "--steps", "4", "--sharpness-every", "2", "--out", tmp_path / "g",
             "--no-progress")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert store.read_traces(tmp_path / "g")["sharpness"].notna().sum() == 2
    bad = cli("grid", "--sharpness-every", "-3", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "--sharpness-every must be a whole number >= 0" in bad.stderr
    assert "Traceback" not in bad.output and not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------------- report


@pytest.mark.slow
def test_report_has_a_sharpness_section_with_its_figures(tmp_path):
    from optbench.experiments.sweep import lr_sweep
    from optbench.report import build_report
    from optbench.spec import RunConfig

    out = tmp_path / "s"
    lr_sweep(0.05, 0.35, 4, base=RunConfig(steps=30, sharpness_every=10), out=out, plots=False)
    text = build_report(out, fmt="md").read_text()
    section = text.split("## Sharpness and the edge of stability", 1)[1].split("\n## ", 1)[0]
    assert (
        "Initial sharpness lambda_0 = 8; predicted bound lr < 2(1+m)/lambda_0 = 0.25; the sweep agrees"
        in section
    )
    assert "| lr | status | regime | first λ | last λ |" in section
    assert "(report_files/sharpness_vs_step.png)" in section
    results = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert "(report_files/final_loss_vs_lr.png)" in results and "Dotted: the bound 2(1+m)/lambda_0" in results


def test_summary_fields_are_columns_in_the_runs_table():
    names = spec.runs_schema().names
    assert {f.name for f in dataclasses.fields(spec.RunSummary)} >= {
        "sharpness_residual",
        "sharpness_unconverged",
    }
    assert names[-2:] == ["sharpness_residual", "sharpness_unconverged"]
    assert spec.TRACE_COLUMNS[-2:] == ("sharpness", "precond_sharpness")
