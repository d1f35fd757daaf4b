"""Grid expansion, TOML specs, invalid cells, resume and the summary (optbench.grid)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from optbench import store
from optbench.errors import OptbenchError
from optbench.grid import (
    GridSpec,
    expand,
    load_spec_toml,
    make_spec,
    parse_lr_values,
    run_grid,
    summarize,
)

ISSUE_GRID = {
    "problem": "mlp-classification",
    "optimizer": "sgd,adamw",
    "lr": "0.003,0.03,0.3",
    "momentum": "0,0.9",
    "scheduler": ["none", "steplr(step_size=50, gamma=0.5)"],
    "init": "default,kaiming_normal",
    "seeds": 3,
    "steps": 500,
}


# ---------------------------------------------------------------------------------------------- lr values


def test_lr_values_lists_and_ranges():
    assert parse_lr_values("0.003,0.03, 0.3") == [0.003, 0.03, 0.3]
    lin = parse_lr_values("linspace(0.01,0.5,50)")
    assert len(lin) == 50 and lin[0] == 0.01 and lin[-1] == 0.5 and lin[1] == 0.02  # rounded to 12 digits
    assert parse_lr_values("logspace(-4, 0, 5)") == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert parse_lr_values("0.5, linspace(0.1, 0.2, 2)") == [0.5, 0.1, 0.2]
    assert parse_lr_values("linspace(0.3, 0.3, 1)") == [0.3]


@pytest.mark.parametrize(
    "text", ["abc", "linspace(0.1,0.2)", "logspace(-4,0,0)", "linspace(a,b,3)", "geomspace(1,2,3)"]
)
def test_bad_lr_values_name_the_value(text):
    with pytest.raises(OptbenchError, match="lr"):
        parse_lr_values(text)


def test_every_numeric_axis_takes_ranges():
    spec = make_spec({"momentum": "linspace(0, 0.9, 4), none", "head_lr_scale": "logspace(0,1,3)"})
    assert spec.momentum == (0.0, 0.3, 0.6, 0.9, None)
    assert spec.head_lr_scale == (1.0, 3.16227766017, 10.0)
    with pytest.raises(OptbenchError, match="malformed momentum range"):
        make_spec({"momentum": "linspace(0,1,x)"})
    with pytest.raises(OptbenchError, match="steps value"):
        make_spec({"steps": "linspace(1,10,3)"})  # integer axes list their values


# ------------------------------------------------------------------------------------------------- expand


def test_issue_example_expands_to_144_canonical_runs():
    spec = make_spec(ISSUE_GRID)
    configs = expand(spec)
    assert spec.size == len(configs) == 2 * 3 * 2 * 2 * 2 * 3
    assert len({c.run_id() for c in configs}) == 144
    assert [c.seed for c in configs[:4]] == [0, 1, 2, 0]  # seeds innermost: a group's seeds are adjacent
    assert {c.scheduler for c in configs} == {"none", "steplr(gamma=0.5, step_size=50)"}
    assert {c.loss for c in configs} == {"cross-entropy"}  # resolved, so the Parquet shows the real name


def test_values_are_split_at_top_level_commas_and_repeats_dropped():
    spec = GridSpec(optimizer=["sgd,adamw", "adamw(betas=(0.9, 0.99))", "sgd"], momentum="none, 0.5")
    assert spec.optimizer == ("sgd", "adamw", "adamw(betas=(0.9, 0.99))")
    assert spec.momentum == (None, 0.5)


def test_aliases_that_canonicalise_equal_are_one_cell():
    configs = expand(GridSpec(scheduler="step,steplr,none"))
    assert [c.scheduler for c in configs] == ["steplr", "none"]


def test_problem_options_fold_into_the_mlp_spec():
    configs = expand(GridSpec(problem="mlp-classification", width=64, depth="2,3", activation="tanh"))
    assert [c.problem for c in configs] == [
        "mlp-classification(activation='tanh', depth=2, width=64)",
        "mlp-classification(activation='tanh', depth=3, width=64)",
    ]


def test_problem_options_on_a_toy_problem_are_an_error():
    with pytest.raises(OptbenchError, match="--width 32: applies to MLP problems; 'quadratic'"):
        expand(GridSpec(problem="quadratic", width=32))


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"optimizer": "sgd,adamx"}, "unknown optimizer 'adamx'"),
        ({"scheduler": "stepp"}, "unknown scheduler 'stepp'"),
        ({"problem": "mlp-classification", "init": "kaiming"}, "unknown init 'kaiming'"),
        ({"problem": "mlp-classification", "activation": "relu6"}, "unknown activation 'relu6'"),
        ({"optimizer": "adamw(weight_decya=0.1)"}, "optimizer 'adamw' has no argument 'weight_decya'"),
        ({"scheduler": "steplr(step=5)"}, "scheduler 'steplr' has no argument 'step'"),
        ({"problem": "mlp-classification(widht=3)"}, "problem 'mlp-classification' has no argument 'widht'"),
        ({"problem": "quadratic(scael=2)"}, "no option 'scael'"),
        ({"optimizer": "sgd(lr=0.1)"}, "--lr"),
        ({"optimizer": "adam(betas=(0.8, 0.99))", "momentum": "0.9"}, "momentum given twice"),
        ({"lr": "0.1,-0.1"}, "lr must be a positive learning rate, got -0.1"),
        ({"steps": "ten"}, "steps value 'ten' is not an integer"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_user_errors_stop_the_whole_grid(axes, message):
    with pytest.raises(OptbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(make_spec(axes))


# --------------------------------------------------------------------------------------------------- TOML


def test_toml_spec(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(
        "# the issue's grid\n"
        'problem = "mlp-classification"\n'
        'optimizer = ["sgd", "adamw"]\n'
        "lr = [0.003, 0.03, 0.3]\n"
        "momentum = [0, 0.9]\n"
        'scheduler = ["none", "steplr(step_size=50, gamma=0.5)"]\n'
        'init = ["default", "kaiming_normal"]\n'
        "seeds = 3\n"
        "steps = 500\n"
    )
    spec = load_spec_toml(path)
    assert spec == make_spec(ISSUE_GRID)
    overridden = make_spec({"lr": "logspace(-3,-1,3)", "seed": "7"}, spec)  # what CLI flags do
    assert overridden.lr == (0.001, 0.01, 0.1) and overridden.seed == (7,) and overridden.steps == (500,)


def test_toml_lr_range_string(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('lr = "linspace(0.1, 0.3, 3)"\nbatch-size = 32\n')
    spec = load_spec_toml(path)
    assert spec.lr == (0.1, 0.2, 0.3) and spec.batch_size == (32,)


def test_missing_toml_names_the_file(tmp_path):
    with pytest.raises(OptbenchError, match="spec file .*nope.toml.* not found"):
        load_spec_toml(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('problem = "quadratic"\nlr = [0.1, 0.2\nsteps = 3\n', r"g.toml: malformed TOML: .*line 3"),
        ('problem = "quadratic"\nstep = 100\n', r"g.toml, line 2: unknown key 'step'"),
        ('lr = 0.1\n\nsteps = "many"\n', r"g.toml, line 3: steps value 'many' is not an integer"),
        ("[grid]\nlr = 0.1\n", r"g.toml, line 1: unknown key 'grid'"),
        ("steps = 5\n[lr]\nvalues = [0.1]\n", r"g.toml, line 2: lr must be a value or a list of values"),
    ],
)
def test_malformed_toml_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "g.toml"
    path.write_text(text)
    with pytest.raises(OptbenchError, match=message):
        load_spec_toml(path)


# --------------------------------------------------------------------------------- running: invalid cells


def test_invalid_cells_are_recorded_with_their_reason_and_the_rest_runs(tmp_path):
    spec = GridSpec(
        optimizer="sgd,adam,adagrad,sparseadam", lr=0.05, momentum="0.9", scheduler="none,cycliclr", steps=20
    )
    runs = run_grid(spec, out=tmp_path, workers=1)
    assert len(runs) == 8 and list(runs["run_id"]) == [c.run_id() for c in expand(spec)]
    by = {(r.optimizer, r.scheduler): r for r in runs.itertuples()}
    assert by["sgd", "none"].status == "ok" and by["sgd", "none"].momentum_knob == "momentum"
    assert by["adam", "none"].status == "ok" and by["adam", "none"].momentum_knob == "betas[0]"  # beta1 = 0.9
    assert by["adam", "cycliclr"].status == "ok"  # cycle_momentum cycles beta1
    assert by["adagrad", "none"].status == "invalid"
    assert "'adagrad' has no momentum knob" in by["adagrad", "none"].reason
    assert (
        by["sparseadam", "none"].status == "invalid" and "sparse gradients" in by["sparseadam", "none"].reason
    )


def test_cycle_momentum_without_momentum_is_invalid_not_a_crash(tmp_path):
    runs = run_grid(
        GridSpec(optimizer="adagrad,sgd", scheduler="cycliclr,onecyclelr", steps=10), out=tmp_path, workers=1
    )
    adagrad = runs[runs["optimizer"] == "adagrad"]
    assert (adagrad["status"] == "invalid").all()
    assert adagrad["reason"].str.contains("cycle_momentum").all()
    assert (runs[runs["optimizer"] == "sgd"]["status"] == "ok").all()  # SGD has a momentum knob to cycle


def test_lbfgs_with_fp16_and_grad_scaler_is_invalid(tmp_path):
    runs = run_grid(
        GridSpec(problem="mlp-regression", width=8, optimizer="lbfgs,sgd", precision="fp16", steps=5),
        out=tmp_path,
        workers=1,
    )
    assert runs["status"].tolist() == ["invalid", "ok"] and "GradScaler" in runs["reason"][0]


# ------------------------------------------------------------------------------------- the momentum recurrence


@pytest.mark.parametrize(("lr", "m"), [(0.01, 0.9), (0.03, 0.0), (0.01, 0.63)])
def test_heavy_ball_sgd_on_4x2_follows_the_recurrence(tmp_path, lr, m):
    """f(x) = 4x^2, g = 8x; PyTorch SGD: buf = g on the first step, then buf = m·buf + g; x -= lr·buf."""
    steps = 60
    runs = run_grid(GridSpec(lr=lr, momentum=m, steps=steps), out=tmp_path, workers=1)
    trace = store.read_traces(tmp_path).sort_values("step")
    x, buf, xs, losses = 2.0, None, [], []
    for _ in range(steps):
        xs.append(x)
        losses.append(4 * x * x)
        g = 8 * x
        buf = g if buf is None else m * buf + g
        x -= lr * buf
    # float32 run vs float64 recurrence: relative error grows where x crosses zero, hence the atol
    np.testing.assert_allclose(trace["x0"], xs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trace["loss"], losses, rtol=1e-5, atol=1e-9)
    assert runs["momentum_knob"][0] == "momentum"


# ---------------------------------------------------------------------------------------- resume, summary


def test_rerun_runs_only_what_is_missing_and_force_runs_all(tmp_path):
    small = GridSpec(lr="0.1,0.2", momentum="0,0.5", steps=30)
    events = []
    first = run_grid(small, out=tmp_path, workers=1)
    grown = small.replace(lr=(0.1, 0.2, 0.3))  # one more lr: only its 2 runs are new
    second = run_grid(grown, out=tmp_path, workers=1, progress=events.append)
    assert events[0].resumed == 4 and events[-1].done == 6 and len(events) == 3
    assert len(second) == 6 and second["run_id"].is_unique
    manifest = store.read_manifest(tmp_path)  # counts cover the resumed runs too, not only this invocation's
    assert sum(manifest["status_counts"].values()) == 6 and manifest["engine_counts"] == {"batched": 6}
    pd.testing.assert_frame_equal(
        second.iloc[:4].drop(columns="wall_time_s"), first.drop(columns="wall_time_s")
    )
    again = []
    run_grid(grown, out=tmp_path, workers=1, progress=again.append)
    assert len(again) == 1 and again[0].resumed == 6  # nothing to run
    forced = []
    run_grid(grown, out=tmp_path, workers=1, force=True, progress=forced.append)
    assert forced[0].resumed == 0 and forced[-1].done == 6
    assert len(store.read_runs(tmp_path)) == 6
    committed = pd.read_parquet(tmp_path / "_runs")  # commit records: one row per run, whatever the batching
    assert len(committed) == 6 and committed["run_id"].is_unique
    traces = store.read_traces(tmp_path)
    assert not traces.duplicated(["run_id", "step"]).any() and traces["run_id"].nunique() == 6


def test_force_after_a_batching_change_leaves_no_stale_rows(tmp_path):
    grid = GridSpec(lr="0.1,0.2", momentum="0,0.5", steps=20)
    run_grid(grid, out=tmp_path, workers=1, engine="batched")  # one batch file holding all 4 runs
    run_grid(grid, out=tmp_path, workers=1, engine="reference", force=True)  # one file per run
    traces = store.read_traces(tmp_path)
    assert not traces.duplicated(["run_id", "step"]).any()
    assert set(pd.read_parquet(tmp_path / "_runs")["engine"]) == {"reference"}


def test_a_kill_between_the_two_commit_writes_duplicates_nothing(tmp_path):
    """A batch writes its trace file, then its commit record. Killed in between, the cells re-run in
    batches cut differently (here: by the other engine), so the orphan trace file is not overwritten by
    name: the re-run must remove it."""
    grid = GridSpec(lr="0.1,0.2,0.3", momentum="0,0.5", steps=20)
    run_grid(grid, out=tmp_path, workers=1, engine="batched")
    (record,) = (tmp_path / "_runs").glob("batch-*.parquet")
    record.unlink()  # the commit record never landed
    runs = run_grid(grid, out=tmp_path, workers=1, engine="reference")
    assert len(runs) == 6 and set(runs["engine"]) == {"reference"}
    traces = store.read_traces(tmp_path)
    assert not traces.duplicated(["run_id", "step"]).any() and len(traces) == 6 * 20


def test_an_interrupted_force_purge_is_finished_by_the_next_run(tmp_path, monkeypatch):
    """purge_runs rewrites a trace file, then its commit record with the new file's facts; killed in
    between, the record no longer describes its trace file: the next run sets the pair aside and re-runs its
    runs, so no old row stays and no run is lost."""
    grid = GridSpec(lr="0.1,0.2", momentum="0,0.5", steps=20)
    first = run_grid(grid, out=tmp_path, workers=1, engine="batched")  # one batch holding all 4 runs
    forced = grid.replace(lr="0.1")  # --force on half of it: its batch file is rewritten without them

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.repair, "write_record", killed)  # between the two writes of purge_runs
    with pytest.raises(KeyboardInterrupt):
        run_grid(forced, out=tmp_path, workers=1, engine="batched", force=True)
    monkeypatch.undo()
    lines = []
    runs = run_grid(grid, out=tmp_path, workers=1, engine="reference", say=lines.append)
    assert len(lines) == 1 and lines[0].startswith("repairing: 4 run(s) from 1 damaged file(s) run again (")
    assert "its commit record says" in lines[0] and lines[0].endswith(f"kept in {tmp_path / '_damaged'}")
    assert len(list((tmp_path / store.DAMAGED_DIR).rglob("*.parquet"))) == 2  # kept, not deleted
    traces = store.read_traces(tmp_path)
    assert not traces.duplicated(["run_id", "step"]).any() and len(traces) == 4 * 20
    assert runs["final_loss"].tolist() == first["final_loss"].tolist()


def test_engines_agree_bit_for_bit_on_the_toy_grid(tmp_path):
    grid = GridSpec(lr="linspace(0.05,0.3,6)", momentum="0,0.9", steps=60)
    batched = run_grid(grid, out=tmp_path / "b", workers=1, engine="auto")
    reference = run_grid(grid, out=tmp_path / "r", workers=1, engine="reference")
    assert set(batched["engine"]) == {"batched"} and set(reference["engine"]) == {"reference"}
    columns = ["run_id", "status", "final_loss", "best_loss", "diverged_step", "steps_completed"]
    pd.testing.assert_frame_equal(batched[columns], reference[columns])
    key = ["run_id", "step"]
    tb = store.read_traces(tmp_path / "b").sort_values(key).reset_index(drop=True)
    tr = store.read_traces(tmp_path / "r").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(tb, tr)


def test_unknown_engine_is_a_user_error(tmp_path):
    with pytest.raises(OptbenchError, match="unknown engine 'fast'"):
        run_grid(GridSpec(steps=5), out=tmp_path / "x", engine="fast")
    assert not (tmp_path / "x").exists()


def test_summary_groups_seeds_and_picks_the_best_cell_per_optimizer():
    rows = []

    def add(opt, lr, seed, status, loss):
        rows.append(
            {
                "run_id": f"{opt}{lr}{seed}",
                "problem": "quadratic",
                "optimizer": opt,
                "lr": lr,
                "momentum": None,
                "seed": seed,
                "status": status,
                "final_loss": loss,
                "reason": None,
            }
        )

    for seed, loss in enumerate([1.0, 2.0, 3.0]):
        add("sgd", 0.1, seed, "ok", loss)
    for seed, loss in enumerate([0.1, math.inf, 0.1]):  # lowest losses, but one seed diverged
        add("sgd", 0.3, seed, "diverged" if seed == 1 else "ok", loss)
    for seed in range(3):
        add("adam", 0.1, seed, "ok", 5.0)
        add("adam", 0.2, seed, "invalid", None)
    summary = summarize(pd.DataFrame(rows)).set_index(["optimizer", "lr"])
    assert summary.loc[("sgd", 0.1), "final_loss_mean"] == 2.0
    assert summary.loc[("sgd", 0.1), "final_loss_std"] == 1.0  # sample std over seeds
    assert summary.loc[("sgd", 0.3), "diverged"] == 1 and summary.loc[("sgd", 0.3), "final_loss_mean"] == 0.1
    assert summary.loc[("adam", 0.2), "invalid"] == 3 and math.isnan(
        summary.loc[("adam", 0.2), "final_loss_mean"]
    )
    assert summary.index[summary["best"]].tolist() == [("sgd", 0.1), ("adam", 0.1)]


def test_the_best_cell_is_picked_per_problem_too():
    """Losses of different problems are not comparable: each problem gets its own best cell."""
    rows = [
        {
            "run_id": f"{problem}{lr}",
            "problem": problem,
            "optimizer": "sgd",
            "lr": lr,
            "momentum": None,
            "seed": 0,
            "status": "ok",
            "final_loss": loss,
            "reason": None,
        }
        for problem, lr, loss in [
            ("quadratic", 0.1, 1e-3),
            ("quadratic", 0.2, 1e-6),
            ("rosenbrock", 0.1, 2.0),
            ("rosenbrock", 0.2, 3.0),
        ]
    ]
    summary = summarize(pd.DataFrame(rows)).set_index(["problem", "lr"])
    assert summary.index[summary["best"]].tolist() == [("quadratic", 0.2), ("rosenbrock", 0.1)]


def test_architectures_compete_but_losses_do_not():
    """--width is folded into the problem spec, yet widths share data and loss: one best cell across them.
    Different loss functions are not comparable: one best cell each."""
    rows = [
        {
            "run_id": f"{problem}{loss}{lr}",
            "problem": problem,
            "optimizer": "sgd",
            "lr": lr,
            "loss": loss,
            "momentum": None,
            "seed": 0,
            "status": "ok",
            "final_loss": value,
            "reason": None,
        }
        for problem, loss, lr, value in [
            ("mlp-regression(width=16)", "mse", 0.1, 0.5),
            ("mlp-regression(width=64)", "mse", 0.1, 0.2),
            ("mlp-regression(width=16)", "huber", 0.1, 0.1),
            ("mlp-regression(width=64)", "huber", 0.1, 0.3),
        ]
    ]
    summary = summarize(pd.DataFrame(rows)).set_index(["problem", "loss"])
    assert summary.index[summary["best"]].tolist() == [
        ("mlp-regression(width=64)", "mse"),
        ("mlp-regression(width=16)", "huber"),
    ]


def test_run_grid_refuses_a_grid_above_max_cells_before_running_anything(tmp_path):
    with pytest.raises(OptbenchError, match="the grid has 6 cells, more than 5"):
        run_grid(GridSpec(lr="0.1,0.2,0.3", momentum="0,0.5", steps=5), out=tmp_path / "g", max_cells=5)
    assert not (tmp_path / "g").exists()
