"""The lr sweep: the grid, the largest stable lr, agreement with the bounds 2/L = 0.25 and 2(1 + m)/L."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from optbench.errors import OptbenchError
from optbench.experiments.stability import BoundCheck, sgd_stability_bound
from optbench.experiments.sweep import analytic_bound, lr_grid, lr_sweep
from optbench.spec import RunConfig

# --------------------------------------------------------------------------------------------------- grid


def test_linear_grid_includes_both_ends():
    grid = lr_grid(0.01, 0.5, 10)
    np.testing.assert_allclose(grid, np.linspace(0.01, 0.5, 10))
    assert grid[0] == 0.01 and grid[-1] == 0.5


def test_log_grid():
    np.testing.assert_allclose(lr_grid(1e-4, 1.0, 5, "log"), [1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_single_point_grid():
    assert lr_grid(0.1, 0.1, 1) == [0.1]
    assert lr_grid(0.1, 0.3, 1) == [0.1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((0.3, 0.1, 5), "--min 0.3 is larger than --max 0.1"),
        ((0.0, 0.1, 5), "--min"),
        ((0.1, -1.0, 5), "--max"),
        ((math.nan, 0.1, 5), "--min"),
        ((0.1, math.inf, 5), "--max"),
        ((0.1, 0.2, 0), "--num must be >= 1, got 0"),
        ((0.1, 0.2, 3, "cubic"), "cubic"),
    ],
)
def test_bad_grids_name_the_bad_value(args, needle):
    with pytest.raises(OptbenchError) as err:
        lr_grid(*args)
    assert needle in str(err.value)


# -------------------------------------------------------------------------------------------- the bound


def test_analytic_bound_for_plain_and_heavy_ball_sgd():
    assert sgd_stability_bound(8.0) == 0.25
    assert sgd_stability_bound(8.0, 0.5) == 0.375  # 2(1 + m)/8
    assert analytic_bound(RunConfig()) == 0.25
    assert analytic_bound(RunConfig(momentum=0.5)) == 0.375
    assert analytic_bound(RunConfig(problem="quadratic(scale=3)")) == pytest.approx(2 / 18)


@pytest.mark.parametrize(
    "config",
    [
        RunConfig(optimizer="adam"),
        RunConfig(problem="rosenbrock"),
        RunConfig(scheduler="steplr"),
        RunConfig(optimizer="sgd(nesterov=True)", momentum=0.5),
    ],
)
def test_no_bound_where_the_theory_does_not_apply(config):
    assert analytic_bound(config) is None


@pytest.mark.parametrize(
    ("stable", "unstable", "agrees"),
    [
        (0.2, 0.3, True),
        (0.2, 0.25, True),
        (0.25, 0.3, False),
        (0.2, 0.24, False),
        (None, 0.3, None),
        (0.2, None, None),
        (0.3, None, False),
        (None, 0.2, False),
    ],
)
def test_bound_check(stable, unstable, agrees):
    check = BoundCheck(0.25, stable, unstable)
    assert check.agrees is agrees
    assert {True: "-> measurement agrees", False: "DISAGREES", None: "not tested"}[agrees] in check.sentence()
    assert "0.25" in check.sentence()


# ----------------------------------------------------------------------------------------------- sweeps


def test_plain_sgd_sweep_finds_the_0_25_bound(tmp_path):
    """The README's headline: 10 lrs in [0.01, 0.5], 100 steps; 0.2278 is stable, 0.2822 is not."""
    result = lr_sweep(0.01, 0.5, 10, base=RunConfig(steps=100), out=tmp_path, plots=False)
    grid = np.linspace(0.01, 0.5, 10)
    runs = result.runs
    np.testing.assert_allclose(runs["lr"], grid)
    assert runs["stable"].tolist() == [True] * 5 + [False] * 5
    assert runs["status"].tolist() == ["ok"] * 5 + ["diverged"] * 5
    assert (runs["initial_loss"] == 16.0).all()
    assert result.largest_stable == pytest.approx(grid[4])
    assert result.check == BoundCheck(0.25, pytest.approx(grid[4]), pytest.approx(grid[5]))
    assert result.check.agrees
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["analytic_bound"] == 0.25 and manifest["bound_agrees"] is True
    assert manifest["largest_stable_lr"] == pytest.approx(grid[4])
    assert manifest["lrs"] == pytest.approx(list(grid)) and manifest["ended_at"]
    assert (tmp_path / "runs.parquet").exists() and len(list((tmp_path / "traces").glob("*.parquet"))) == 10
    assert result.figures == []


def test_heavy_ball_sweep_finds_the_0_375_bound(tmp_path):
    """Momentum 0.5 moves the bound to 2(1 + 0.5)/8 = 0.375: 0.37 is stable, 0.38 is not."""
    result = lr_sweep(0.30, 0.45, 16, base=RunConfig(momentum=0.5, steps=100), out=tmp_path, plots=False)
    assert result.check.bound == 0.375
    assert result.largest_stable == pytest.approx(0.37)
    assert result.check.smallest_unstable == pytest.approx(0.38)
    assert result.check.agrees
    assert (result.runs["momentum"] == 0.5).all()


def test_lr_exactly_at_the_bound_is_not_stable(tmp_path):
    """At lr = 0.25, x flips between 2 and -2: the loss stays 16, status ok, but not below its start."""
    result = lr_sweep(0.2, 0.3, 3, base=RunConfig(steps=50), out=tmp_path, plots=False)
    at_bound = result.runs.iloc[1]
    assert at_bound["lr"] == 0.25 and at_bound["status"] == "ok" and at_bound["final_loss"] == 16.0
    assert not at_bound["stable"]
    assert result.check.smallest_unstable == 0.25 and result.check.agrees


def test_sweep_without_a_bound_still_reports_the_largest_stable_lr(tmp_path):
    result = lr_sweep(
        1e-3,
        1e-2,
        2,
        spacing="log",
        base=RunConfig(problem="rosenbrock", steps=20),
        out=tmp_path,
        plots=False,
    )
    assert result.check is None
    assert result.largest_stable == pytest.approx(1e-3)  # 1e-2 overshoots the banana's valley
    assert result.runs["problem"].tolist() == ["rosenbrock", "rosenbrock"]


def test_sweep_draws_the_two_figures(tmp_path):
    result = lr_sweep(0.1, 0.5, 3, base=RunConfig(steps=20), out=tmp_path)
    assert sorted(p.name for p in result.figures) == ["final_loss_vs_lr.png", "loss_vs_step.png"]
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in result.figures)
