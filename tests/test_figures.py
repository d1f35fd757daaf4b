"""Figures that stay readable at 1, 10 and 500 cells, checked on the matplotlib Figure, not on PNG bytes.

Every figure here passes ``check_figure``: drawing raises no warning; it fits ``MAX_FIGSIZE``; its legend
has at most ``MAX_LEGEND`` entries; every log-y axis's limits contain all its plotted positive data; and in
every panel no two coloured lines share colour and style (grey context lines are, by design, alike).
"""

from __future__ import annotations

import io
import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection

from optbench.figures import facets, style

# The grids drawn here (grid1, grid10, grid500) are conftest.py fixtures, built once per session.


# ------------------------------------------------------------------------------------------ the checks


def _dash(line):
    pattern = getattr(line, "_unscaled_dash_pattern", None)
    return repr(pattern) if pattern is not None else line.get_linestyle()


def _is_data_line(line) -> bool:
    """A drawn curve: a line style, two or more distinct x values (not an axvline), not grey context."""
    xs = np.asarray(line.get_xdata(), dtype=float)
    colour = tuple(np.round(matplotlib_rgba(line.get_color())[:3], 3))
    grey = colour == tuple(np.round(style.GREY, 3))
    return line.get_linestyle() not in ("None", "") and len(np.unique(xs)) >= 2 and not grey


def matplotlib_rgba(colour):
    import matplotlib.colors

    return matplotlib.colors.to_rgba(colour)


def legend_entries(fig) -> int:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return sum(len(legend.get_texts()) for legend in legends)


def check_figure(fig, max_legend: int = facets.MAX_LEGEND) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied because axes sizes collapsed"
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=style.DPI, bbox_inches="tight")
    width, height = fig.get_size_inches()
    assert width <= style.MAX_FIGSIZE[0] + 1e-6 and height <= style.MAX_FIGSIZE[1] + 1e-6
    assert legend_entries(fig) <= max_legend
    for ax in fig.axes:
        if not ax.get_visible() or not (ax.lines or ax.collections):
            continue
        if ax.get_yscale() == "log":
            low, high = ax.get_ylim()
            grey = [
                seg[:, 1] for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()
            ]
            for ys in [np.asarray(line.get_ydata(), dtype=float) for line in ax.lines] + grey:
                ys = ys[np.isfinite(ys) & (ys > 0)]
                assert not len(ys) or (ys.min() >= low * (1 - 1e-9) and ys.max() <= high * (1 + 1e-9)), (
                    ax.get_title(),
                    ys.min(),
                    ys.max(),
                    (low, high),
                )
        styles = [
            (tuple(np.round(matplotlib_rgba(line.get_color()), 3)), _dash(line), str(line.get_marker()))
            for line in ax.lines
            if _is_data_line(line)
        ]
        assert len(styles) == len(set(styles)), f"two lines look alike in {ax.get_title()!r}"


def close(fig) -> None:
    style.plt.close(fig)


# ------------------------------------------------------------------------------------------ bench plot


def _default_plot(runs, traces, **options):
    from optbench.grid.summary import axis_frame

    frame = axis_frame(runs)
    spec = facets.resolve(frame, **options)
    return facets.facet_figure(frame[frame["status"].isin(["ok", "diverged"])], traces, spec)


@pytest.mark.slow
def test_bench_plot_defaults_on_500_cells(grid500):
    _, runs, traces = grid500
    fig, result = _default_plot(runs, traces)
    spec = result.spec
    assert (spec.col, spec.row, spec.hue, spec.style_by) == ("optimizer", None, "lr", ["momentum"])
    assert spec.logy and not spec.logx and spec.kind == "trace"
    assert result.n_axes == 4 and result.lines == 500
    assert result.highlighted == 4 * facets.TOP_DEFAULT  # the best 6 of 125 per optimizer, the rest grey
    check_figure(fig)
    close(fig)


@pytest.mark.slow
def test_y_range_holds_every_panel_best_run(grid500):
    """The old figure's shared y floor stopped at the data drawn first; Adam's best run fell below it."""
    _, runs, traces = grid500
    fig, _ = _default_plot(runs, traces)
    best = runs[runs["status"] == "ok"].groupby("optimizer")["run_id"].first()
    low = fig.axes[0].get_ylim()[0]
    for run_id in best:
        loss = traces[traces["run_id"] == run_id]["loss"]
        assert loss[loss > 0].min() >= low
    close(fig)


@pytest.mark.slow
@pytest.mark.parametrize("grid", ["grid1", "grid10"])
def test_bench_plot_defaults_small(grid, request):
    _, runs, traces = request.getfixturevalue(grid)
    fig, result = _default_plot(runs, traces)
    check_figure(fig)
    assert result.highlighted == result.lines == len(runs)
    close(fig)


def test_hue_that_is_also_a_panel_axis_is_refused(cli, grid10):
    folder, _, _ = grid10
    result = cli("plot", folder, "--hue", "lr", "--col", "lr")
    assert result.exit_code == 2
    assert "--hue and --col both name 'lr'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_too_many_styles_are_refused_not_repeated():
    keys = list(range(len(style.DASHES) * len(style.MARKERS)))
    styles = style.line_styles(keys)
    assert len(set(styles.values())) == len(keys)
    with pytest.raises(Exception, match="stay distinct"):
        style.line_styles([*keys, "one more"])


def test_legend_is_capped_by_lowering_top(grid10):
    """Ten lines per panel asked for, but the legend never grows past its cap."""
    _, runs, traces = grid10
    fig, result = _default_plot(runs, traces, top=50)
    assert legend_entries(fig) <= facets.MAX_LEGEND
    close(fig)


# ----------------------------------------------------------------------------------------------- bands


def test_log_band_is_geometric_and_stays_positive():
    """std > mean: a linear band reaches below zero; on a log axis it is x/÷ the geometric std."""
    import pandas as pd

    points = pd.DataFrame({"line": [0, 0], "step": [0, 0], "loss": [1e-3, 1.0]})
    log = facets.aggregate(points, ["line"], "step", "loss", "std", log=True).iloc[0]
    sd = np.std(np.log([1e-3, 1.0]), ddof=1)
    assert log["centre"] == pytest.approx(np.sqrt(1e-3))  # geometric mean
    assert log["lo"] == pytest.approx(np.sqrt(1e-3) / np.exp(sd)) and log["lo"] > 0
    assert log["hi"] == pytest.approx(np.sqrt(1e-3) * np.exp(sd))
    linear = facets.aggregate(points, ["line"], "step", "loss", "std", log=False).iloc[0]
    assert linear["lo"] < 0  # what the old figure clipped to mean * 1e-3


def test_ci95_band_is_student_t_over_the_seeds():
    import pandas as pd

    points = pd.DataFrame({"line": [0, 0, 0], "step": [0, 0, 0], "loss": [1.0, 2.0, 3.0]})
    row = facets.aggregate(points, ["line"], "step", "loss", "ci95", log=False).iloc[0]
    assert row["centre"] == 2.0
    assert row["hi"] - row["centre"] == pytest.approx(4.303 * 1.0 / np.sqrt(3))
    log = facets.aggregate(points, ["line"], "step", "loss", "ci95", log=True).iloc[0]
    sd = np.std(np.log([1.0, 2.0, 3.0]), ddof=1)
    assert np.log(log["hi"] / log["centre"]) == pytest.approx(4.303 * sd / np.sqrt(3))
    ranged = facets.aggregate(points, ["line"], "step", "loss", "range", log=True).iloc[0]
    assert (ranged["lo"], ranged["hi"]) == pytest.approx((1.0, 3.0))
    single = facets.aggregate(points.iloc[:1], ["line"], "step", "loss", "std", log=True).iloc[0]
    assert np.isnan(single["lo"])  # no band from one seed


# ------------------------------------------------------------------------------------ standard figures


def test_sensitivity_of_one_cell_at_zero_loss_says_why_it_is_empty(grid1):
    from optbench.errors import OptbenchError
    from optbench.figures import runs as plots

    _, runs, _ = grid1  # SGD on the quadratic at lr 0.1: the final loss underflows to exactly 0
    with pytest.raises(OptbenchError, match="every value is 0 or less"):
        plots.sensitivity_figure(runs)


def test_final_losses_of_zero_sit_on_the_floor(grid10):
    from optbench.figures import runs as plots

    _, runs, _ = grid10
    assert (runs["final_loss"] == 0).any()  # the quadratic underflows at the good lrs
    fig, _ = plots.sensitivity_figure(runs)
    floors = [line for ax in fig.axes for line in ax.lines if line.get_marker() == "v"]
    assert floors and all(line.get_ydata()[0] == line.axes.get_ylim()[0] for line in floors)
    assert "0 (underflow), on the floor" in [t.get_text() for t in fig.legends[0].get_texts()]
    check_figure(fig)
    close(fig)


@pytest.mark.parametrize("grid", ["grid10", pytest.param("grid500", marks=pytest.mark.slow)])
def test_sensitivity_scales(grid, request):
    from optbench.figures import runs as plots

    _, runs, _ = request.getfixturevalue(grid)
    fig, result = plots.sensitivity_figure(runs)
    check_figure(fig)
    assert result.n_axes == runs["optimizer"].nunique()
    for ax in fig.axes:
        if ax.get_visible():
            assert ax.get_xscale() == ("log" if runs["lr"].max() / runs["lr"].min() >= 10 else "linear")
            labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
            assert len(labels) <= 8  # thinned
    close(fig)


def test_sensitivity_draws_the_bound_in_its_momentum_colour(tmp_path):
    """SGD on the quadratic (L = 8): lr < 2(1+m)/L, one dashed line per momentum, in that line's colour."""
    from optbench import store
    from optbench.figures import runs as plots
    from optbench.grid import run_grid
    from optbench.report.tables import analytic_bounds

    run_grid(
        {"optimizer": ["sgd"], "lr": "linspace(0.05,0.5,10)", "momentum": [0, 0.5], "steps": 40},
        out=tmp_path,
        workers=1,
    )
    runs = store.read_runs(tmp_path)
    bounds = analytic_bounds(runs, ["problem", "optimizer", "momentum"])
    fig, result = plots.sensitivity_figure(runs, bounds)
    dashed = {
        line.get_xdata()[0]: line.get_color() for line in fig.axes[0].lines if line.get_linestyle() == "--"
    }
    assert sorted(dashed) == pytest.approx([0.25, 0.375])
    assert matplotlib_rgba(dashed[0.25]) == matplotlib_rgba(result.colours[0.0])
    check_figure(fig)
    close(fig)


@pytest.mark.parametrize("grid", ["grid10", pytest.param("grid500", marks=pytest.mark.slow)])
def test_heatmap_numbers_only_where_cells_fit(grid, request):
    from optbench.figures import runs as plots

    _, runs, _ = request.getfixturevalue(grid)
    runs = runs.assign(momentum=np.where(runs.index % 2 == 0, 0.0, 0.9)) if grid == "grid10" else runs
    fig = plots.heatmap_figure(runs, by=["optimizer"])
    check_figure(fig)
    numbers = [t for ax in fig.axes for t in ax.texts if t.get_text() not in ("", "div", "n/a")]
    if grid == "grid500":  # 25 lrs per panel: no room for numbers, the title says so
        assert not numbers and "too small" in fig._suptitle.get_text()
    else:
        assert numbers and all(t.get_fontsize() >= 6.5 for t in numbers)
    close(fig)


def test_lr_sweep_legend_says_diverged_only_when_a_run_did(grid1, tmp_path, monkeypatch):
    from optbench.figures import runs as plots

    _, runs, traces = grid1
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append(fig) or path)
    plots.loss_vs_step(runs, traces, tmp_path / "x.png")
    (fig,) = drawn
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["lr=0.1"] and fig.axes[0].get_legend().get_title().get_text() == ""
    check_figure(fig)
    close(fig)


def test_many_lrs_get_a_colour_bar_not_a_long_legend(grid500, tmp_path, monkeypatch):
    from optbench.figures import runs as plots

    _, runs, traces = grid500
    one = runs[(runs["optimizer"] == "adam") & (runs["momentum"] == 0.9)]
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append(fig) or path)
    plots.loss_vs_step(one, traces, tmp_path / "x.png")
    (fig,) = drawn
    check_figure(fig, max_legend=2)
    assert len(fig.axes) == 2  # the panel and its colour bar
    close(fig)


# ------------------------------------------------------------------------------------------------ colours


def test_a_scheduler_keeps_its_colour_whatever_its_arguments():
    assert style.name_color("steplr(step_size=50, gamma=0.5)") == style.name_color("steplr")
    colours = style.spec_colors(["steplr", "steplr(gamma=0.5)", "cosineannealinglr"])
    assert len(set(colours.values())) == 3
    assert colours["steplr"] == tuple(style.name_color("steplr"))


def test_one_palette():
    """figures/init.py and figures/amp.py take their colours from figures/style.py."""
    source = Path(style.__file__).parent
    names = (
        "init.py",
        "amp.py",
        "runs.py",
        "schedules.py",
        "lrfind.py",
        *(f"facets/{p.name}" for p in (source / "facets").glob("*.py")),
    )
    for name in names:
        text = (source / name).read_text()
        assert "#1f77b4" not in text and 'get_cmap("tab10")' not in text, name


# ------------------------------------------------------------------------------------------ bench plot CLI


def test_out_with_a_trailing_slash_is_a_folder(cli, grid10, tmp_path):
    folder, _, _ = grid10
    result = cli("plot", folder, "--out", f"{tmp_path / 'accdir'}/")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "accdir" / "plot_loss_vs_step.png").exists()
    assert not (tmp_path / "accdir.png").exists()


@pytest.mark.slow
def test_figure_all_never_overwrites_the_folder_own_figures(cli, tmp_path):
    sweep = tmp_path / "sweep"
    assert cli("lr-sweep", "--num", "3", "--steps", "20", "--out", sweep).exit_code == 0
    before = {p.name: p.read_bytes() for p in sweep.glob("*.png")}
    assert before  # lr-sweep draws its own loss_vs_step.png and final_loss_vs_lr.png
    result = cli("plot", sweep, "--figure", "all")
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in sweep.glob("*.png")} == before
    assert sorted(p.name for p in (sweep / "figures").iterdir()) == sorted(before)


def test_no_values_to_plot_is_one_line(cli, grid10):
    folder, _, _ = grid10
    result = cli("plot", folder, "--y", "val_acc")
    assert result.exit_code == 2 and "no finite values of 'val_acc'" in result.stderr


def test_panel_titles_never_overlap(grid10):
    """Long problem specs as rows: titles wrap instead of running into the neighbouring panel."""
    from optbench.figures import runs as plots

    _, runs, _ = grid10
    runs = runs.assign(
        problem=np.where(
            runs.index % 2 == 0,
            "mlp-classification(activation='tanh', depth=3, width=64, noise=0.25)",
            "mlp-classification(width=16, noise=0.5)",
        )
    )
    fig, _ = plots.sensitivity_figure(runs)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(boxes) >= 2
    for box, other in itertools.combinations(boxes, 2):
        assert not box.overlaps(other)
    close(fig)
