"""Figures and `bench plot` / `bench schedules`: layouts, formats, colours, the scheduler curves, bad input."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PNG, PDF = b"\x89PNG\r\n\x1a\n", b"%PDF"


def make_folder(out: Path, configs) -> Path:
    """A results folder as `bench grid` writes it, one reference run per config."""
    from optbench.grid import run_grid

    run_grid(configs, out=out, workers=1, engine="reference")
    return out


@pytest.fixture(scope="module")
def quad_grid(tmp_path_factory) -> Path:
    """SGD on the quadratic: 3 lrs x 2 momenta x 2 seeds, 30 steps (lr 0.3 diverges without momentum)."""
    from optbench.spec import RunConfig

    configs = [
        RunConfig(problem="quadratic", optimizer=opt, lr=lr, momentum=m, seed=s, steps=30)
        for opt, lr, m, s in itertools.product(["sgd", "rmsprop"], [0.05, 0.2, 0.3], [0.0, 0.5], [0, 1])
    ]
    return make_folder(tmp_path_factory.mktemp("quad"), configs)


def assert_figure(path: Path, fmt: str = "png") -> None:
    data = Path(path).read_bytes()
    if fmt == "png":
        assert data.startswith(PNG)
    elif fmt == "pdf":
        assert data.startswith(PDF)
    else:
        assert b"<svg" in data[:2000]
    assert len(data) > 2000


# ------------------------------------------------------------------------------------------------- colours


@pytest.mark.parametrize("kind", ["optimizers", "schedulers", "problems", "inits", "losses"])
def test_registry_names_of_one_kind_never_share_a_colour(kind):
    from optbench import registry
    from optbench.figures.style import name_color

    names = registry.by_kind(kind).names()
    colours = {name_color(n) for n in names}
    assert len(colours) == len(names)
    assert all(name_color(n) == name_color(n) for n in names)  # stable


def test_common_optimizers_get_distinct_tab10_colours():
    import matplotlib.pyplot as plt

    from optbench.figures.style import name_color

    tab10 = plt.get_cmap("tab10").colors
    assert [name_color(n) for n in ("sgd", "adam", "adamw", "rmsprop")] == list(tab10[:4])


# -------------------------------------------------------------------------------------------------- facets


@pytest.mark.slow
def test_facet_layout_counts(quad_grid, tmp_path):
    from optbench import store
    from optbench.figures import facets

    runs, traces = store.read_runs(quad_grid), store.read_traces(quad_grid)
    result = facets.facet_plot(
        runs,
        traces,
        tmp_path / "f.png",
        y="loss",
        x="step",
        hue="lr",
        col="optimizer",
        row="momentum",
        logy=True,
    )
    assert result.cols == ["rmsprop", "sgd"]
    assert result.rows == [0.0, 0.5]
    assert result.n_axes == 4
    assert result.lines == 4 * 3  # one mean line per lr in each panel (seeds averaged)
    assert result.split_by == []
    assert_figure(result.path)


def test_unnamed_varying_columns_split_lines_instead_of_being_averaged(quad_grid, tmp_path):
    from optbench import store
    from optbench.figures import facets

    runs, traces = store.read_runs(quad_grid), store.read_traces(quad_grid)
    result = facets.facet_plot(
        runs, traces, tmp_path / "f.png", y="loss", x="step", hue="lr", col=None, row=None
    )
    assert result.n_axes == 1
    assert result.split_by == ["optimizer", "momentum"]  # line styles, named in the legend
    assert result.lines == 3 * 2 * 2


def test_per_run_y_against_lr(quad_grid, tmp_path):
    from optbench import store
    from optbench.figures import facets

    runs = store.read_runs(quad_grid)
    result = facets.facet_plot(
        runs,
        None,
        tmp_path / "s.svg",
        y="final_loss",
        x="lr",
        hue="momentum",
        col="optimizer",
        logy=True,
        logx=True,
        band="ci95",
    )
    assert (result.n_axes, result.lines) == (2, 4)
    assert_figure(result.path, "svg")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_bench_plot_writes_each_format(cli, quad_grid, tmp_path, fmt):
    out = tmp_path / f"plot.{fmt}"
    result = cli(
        "plot",
        quad_grid,
        "--y",
        "grad_norm",
        "--x",
        "step",
        "--hue",
        "lr",
        "--col",
        "optimizer",
        "--where",
        "momentum=0.5",
        "--logy",
        "--format",
        fmt,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "1 x 2 panels, 6 lines" in result.stdout
    assert_figure(out, fmt)


@pytest.mark.slow
def test_bench_plot_default_name_lands_in_the_folder(cli, quad_grid):
    result = cli("plot", quad_grid, "--hue", "optimizer", "--col", "lr", "--band", "none")
    assert result.exit_code == 0, result.output
    assert_figure(quad_grid / "plot_loss_vs_step_by_optimizer_by_lr.png")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--y", "nope"], "unknown --y 'nope'"),
        (["--x", "optimizer"], "unknown --x 'optimizer'"),
        (["--hue", "colour"], "unknown --hue 'colour'"),
        (["--col", "nope"], "unknown --col 'nope'"),
        (["--band", "iqr"], "unknown --band 'iqr'"),
        (["--format", "jpg"], "unknown figure format 'jpg'"),
        (["--where", "lr"], "bad --where 'lr'"),
        (["--where", "lr=7"], "no runs left"),
        (["--figure", "pie"], "unknown figure 'pie'"),
    ],
)
def test_bench_plot_bad_input_is_one_line_and_exit_2(cli, quad_grid, args, message):
    result = cli("plot", quad_grid, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bench_plot_missing_or_empty_folder(cli, tmp_path):
    missing = cli("plot", tmp_path / "nope")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    empty = cli("plot", tmp_path)
    assert empty.exit_code == 2 and "no runs.parquet" in empty.stderr


@pytest.mark.slow
def test_standard_figures_one_by_one(cli, quad_grid, tmp_path):
    result = cli("plot", quad_grid, "--figure", "all", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["final_loss_vs_lr.png", "heatmap_lr_momentum.png", "loss_vs_step.png"]
    one = cli("plot", quad_grid, "--figure", "heatmap", "--format", "pdf", "--out", tmp_path / "one")
    assert one.exit_code == 0, one.output
    assert_figure(tmp_path / "one" / "heatmap_lr_momentum.pdf", "pdf")
    nothing = cli("plot", quad_grid, "--figure", "trajectories")  # the quadratic is 1-D
    assert nothing.exit_code == 2 and "does not apply" in nothing.stderr


def test_trajectories_on_a_2d_toy(tmp_path):
    from optbench import store
    from optbench.figures import runs as plots
    from optbench.spec import RunConfig

    configs = [
        RunConfig(problem="rosenbrock", optimizer=o, lr=lr, steps=40)
        for o in ("sgd", "adam")
        for lr in (1e-3, 3e-3)
    ]
    folder = make_folder(tmp_path / "rosen", configs)
    path = plots.trajectories(
        store.read_runs(folder), store.read_traces(folder), tmp_path / "t.png", "rosenbrock"
    )
    assert_figure(path)


def test_toy_surface_matches_the_problem():
    from optbench.figures.runs import toy_surface

    values = toy_surface("rosenbrock", np.array([1.0, -1.2]), np.array([1.0]))
    np.testing.assert_allclose(values, [[0.0, 24.2]], atol=1e-9)  # minimum at (1, 1); f(-1.2, 1) = 24.2


# --------------------------------------------------------------------------------------------- schedules


def test_schedule_curves_come_from_the_real_schedulers():
    from optbench.experiments.schedules import schedule_curves

    curves, notes = schedule_curves(
        100,
        0.01,
        [
            "steplr(step_size=5, gamma=0.8)",
            "step-halving",
            "steplr(step_size=10, gamma=0.5)",
            "reducelronplateau",
            "none",
        ],
    )
    t = np.arange(100)
    step = curves[curves["scheduler"] == "steplr(gamma=0.8, step_size=5)"]["lr"].to_numpy()
    np.testing.assert_allclose(step, 0.01 * 0.8 ** np.floor(t / 5), rtol=1e-12)
    halving = curves[curves["scheduler"] == "step-halving"]["lr"].to_numpy()
    np.testing.assert_allclose(
        halving, curves[curves["scheduler"] == "steplr(gamma=0.5, step_size=10)"]["lr"]
    )
    np.testing.assert_allclose(curves[curves["scheduler"] == "none"]["lr"], 0.01)
    plateau = curves[curves["scheduler"] == "reducelronplateau"]["lr"].to_numpy()
    assert plateau[0] == 0.01 and plateau[-1] < 0.01  # a constant loss never improves: the lr is cut
    assert notes == {"reducelronplateau": "fed a constant loss 1"}


def test_bench_schedules_writes_parquet_figure_manifest(cli, tmp_path):
    import pandas as pd

    out = tmp_path / "sched"
    result = cli(
        "schedules",
        "--steps",
        "40",
        "--lr",
        "0.1",
        "--schedulers",
        "cosine,steplr(step_size=5),none",
        "--format",
        "svg",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    curves = pd.read_parquet(out / "schedules.parquet")
    assert sorted(curves["scheduler"].unique()) == ["cosineannealinglr", "none", "steplr(step_size=5)"]
    assert len(curves) == 3 * 40 and curves["lr"].max() == pytest.approx(0.1)
    assert_figure(out / "schedules.svg", "svg")
    assert (out / "manifest.json").exists()


def test_bench_schedules_unknown_name_leaves_no_folder(cli, tmp_path):
    result = cli("schedules", "--schedulers", "cosine,bogus", "--out", tmp_path / "s")
    assert result.exit_code == 2 and "unknown scheduler 'bogus'" in result.stderr
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------ architecture


def test_plotting_never_imports_the_engine_and_commands_import_nothing_heavy():
    code = (
        "import sys\n"
        "import optbench.cli.app\n"
        "heavy = {'torch', 'pandas', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "import optbench.figures.runs, optbench.figures.facets, optbench.report, optbench.experiments.lrfind\n"
        "assert 'optbench.engine.reference' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
