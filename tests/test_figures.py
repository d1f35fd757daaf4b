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

GRID_500 = {
    "problem": ["rosenbrock"],
    "optimizer": ["sgd", "adam", "adamw", "rmsprop"],
    "lr": "logspace(-3,0,25)",
    "momentum": [0, 0.5, 0.8, 0.9, 0.95],
    "steps": 60,
}
GRID_10 = {
    "problem": ["quadratic"],
    "optimizer": ["sgd", "adam"],
    "lr": [0.01, 0.1, 0.2, 0.3, 0.5],
    "steps": 40,
}
GRID_1 = {"problem": ["quadratic"], "optimizer": ["sgd"], "lr": [0.1], "steps": 40}


def _grid(tmp_path_factory, name: str, spec: dict):
    from optbench import store
    from optbench.grid import run_grid

    out = tmp_path_factory.mktemp(name)
    run_grid(spec, out=out, workers=1)
    return out, store.read_runs(out), store.read_traces(out)


@pytest.fixture(scope="module")
def grid500(tmp_path_factory):
    return _grid(tmp_path_factory, "g500", GRID_500)


@pytest.fixture(scope="module")
def grid10(tmp_path_factory):
    return _grid(tmp_path_factory, "g10", GRID_10)


@pytest.fixture(scope="module")
def grid1(tmp_path_factory):
    return _grid(tmp_path_factory, "g1", GRID_1)


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


# ------------------------------------------------------------------------ readable at 500 cells (issue 14)

GRID_NN = {
    "problem": ["mlp-classification"],
    "init": ["default", "xavier_uniform", "orthogonal", "kaiming_normal"],
    "activation": ["relu", "tanh"],
    "lr": [0.01],
    "steps": 30,
}
GRID_PROBLEMS = {
    "problem": ["quadratic", "rosenbrock"],
    "optimizer": ["sgd", "adam"],
    "scheduler": ["none", "cosine"],
    "lr": "logspace(-3,-0.5,4)",
    "steps": 60,
}


@pytest.fixture(scope="module")
def grid_nn(tmp_path_factory):
    return _grid(tmp_path_factory, "gnn", GRID_NN)


@pytest.fixture(scope="module")
def grid_problems(tmp_path_factory):
    return _grid(tmp_path_factory, "gproblems", GRID_PROBLEMS)


def _legend(fig):
    (legend,) = fig.legends
    return legend


def _section(fig, title: str) -> dict:
    """The legend entries under a section heading (``colour:`` or ``line:``): label -> handle."""
    entries, inside = {}, False
    for handle, text in zip(_legend(fig).legend_handles, _legend(fig).get_texts(), strict=True):
        label = text.get_text()
        if label.startswith(("colour:", "line:")):
            inside = label.startswith(title)
        elif label.endswith("other settings") or label == "diverged":
            inside = False
        elif inside:
            entries[label] = handle
    return entries


def _colour_entries(fig) -> dict:
    """The legend's colour section: label -> RGB."""
    return {label: matplotlib_rgba(h.get_color())[:3] for label, h in _section(fig, "colour:").items()}


def test_cielab_matches_the_reference_values():
    """The distance the colour tests measure: sRGB red is L*a*b* (53.24, 80.09, 67.20), white (100, 0, 0)."""
    assert np.allclose(style.lab((1.0, 0.0, 0.0)), (53.24, 80.09, 67.20), atol=0.05)
    assert np.allclose(style.lab((1.0, 1.0, 1.0)), (100.0, 0.0, 0.0), atol=0.05)
    assert style.colour_distance("black", "white") == pytest.approx(100.0, abs=0.05)


def check_colours_apart(fig) -> int:
    """Every two colours of a panel's coloured lines are one hue value (the same colour, told apart by line
    style) or at least MIN_COLOUR_DISTANCE apart in CIELAB, and apart from the grey of the context lines.
    Returns the number of panels with two or more colours (so that a test cannot pass on empty panels)."""
    legend = list(_colour_entries(fig).values())
    for a, b in itertools.combinations(legend, 2):
        assert style.colour_distance(a, b) >= style.MIN_COLOUR_DISTANCE, (a, b)
    checked = 0
    for ax in fig.axes:
        colours = {
            tuple(np.round(matplotlib_rgba(line.get_color())[:3], 6))
            for line in ax.lines
            if _is_data_line(line) or (line.get_marker() not in ("None", "x", "v", "o") and len(line.get_xdata()))
        }
        colours.discard(tuple(np.round(style.GREY, 6)))
        for colour in colours:
            assert style.colour_distance(colour, style.GREY) >= style.MIN_COLOUR_DISTANCE, colour
        for a, b in itertools.combinations(colours, 2):
            assert style.colour_distance(a, b) >= style.MIN_COLOUR_DISTANCE, (ax.get_title(), a, b)
        checked += len(colours) >= 2
    return checked


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"col": "momentum", "row": "optimizer", "hue": "lr"}])
def test_colours_are_apart_in_every_panel_of_500_cells(grid500, options):
    """Viridis by rank over the figure's 13 (19) lrs gave one panel's lrs 0.00178/0.00237/0.00316 three
    near-identical purples (ΔE < 10)."""
    _, runs, traces = grid500
    fig, result = _default_plot(runs, traces, **options)
    assert check_colours_apart(fig) == result.n_axes
    assert len(result.colours) == len(_colour_entries(fig)) >= 6
    close(fig)


@pytest.mark.slow
def test_colours_are_apart_on_10_cells(grid10):
    _, runs, traces = grid10
    fig, _ = _default_plot(runs, traces, hue="lr", col="optimizer")
    assert check_colours_apart(fig) == 2
    close(fig)


def test_no_registry_name_gets_the_context_grey():
    """tab10's grey went to the 8th name of each registry (orthogonal, adadelta): a highlighted line in the
    colour of the "N other settings"."""
    from optbench import registry

    for kind in ("optimizers", "schedulers", "problems", "inits", "losses"):
        for name in registry.by_kind(kind).names():
            assert style.colour_distance(style.name_color(name), style.GREY) >= style.MIN_COLOUR_DISTANCE, name
    # a precision's own grey (fp32) is not used where it would read as context
    colours = style.distinct_colors(["fp32", "fp16", "bf16"])
    assert all(style.colour_distance(c, style.GREY) >= style.MIN_COLOUR_DISTANCE for c in colours.values())


def test_palette_is_apart_and_large_enough_for_the_legend():
    for a, b in itertools.combinations(style.PALETTE, 2):
        assert style.colour_distance(a, b) >= style.MIN_COLOUR_DISTANCE
    for colour in style.PALETTE:
        for reserved in (style.GREY, style.DEFAULT_COLOUR, style.MARK_COLOUR, (1.0, 1.0, 1.0)):
            assert style.colour_distance(colour, reserved) >= style.MIN_COLOUR_DISTANCE
    # the legend holds at most MAX_LEGEND - 3 hue values (its title, the grey and the diverged entries)
    assert len(style.PALETTE) >= facets.MAX_LEGEND - 3
    with pytest.raises(Exception, match="stay distinct"):
        style.distinct_colors(range(len(style.PALETTE) + 1))


def check_dash_handles(fig) -> int:
    """Every dashed legend handle differs from the others and shows a whole period of its pattern (a gap
    and the dash after it) within the handle's length; returns how many dashed handles there are."""
    legend = _legend(fig)
    length = legend.handlelength * legend.prop.get_size_in_points()  # points
    patterns = []
    for handle in _section(fig, "line:").values():
        offset, dashes = handle._unscaled_dash_pattern
        if dashes is None:
            patterns.append(("solid",))
            continue
        scaled = [d * handle.get_linewidth() for d in dashes]
        assert sum(scaled) + min(scaled) <= length, (dashes, length)  # a gap between two dashes
        patterns.append(tuple(dashes))
    assert len(patterns) == len(set(patterns))
    return len(patterns)


@pytest.mark.slow
def test_every_dash_pattern_shows_in_the_legend(grid500):
    """(10, 3) at 1.6 pt filled the 20.8 pt handle with one dash: momentum 0.95 looked like 0.9's solid."""
    _, runs, traces = grid500
    fig, _ = _default_plot(runs, traces)
    assert check_dash_handles(fig) == 5  # the five momenta
    close(fig)
    fig = style.plt.figure()
    heading = style.plt.Line2D([], [], ls="none", label="line: all")
    handles = [style.plt.Line2D([], [], ls=d, lw=1.6, label=str(d)) for d in style.DASHES]
    facets.legend(fig, [heading, *handles])
    assert check_dash_handles(fig) == len(style.DASHES)
    close(fig)


@pytest.mark.slow
def test_lines_of_one_point_show_their_style_as_marker_shapes(grid_nn):
    """final_loss vs one lr: every line is one point, so a dash encodes nothing; activation is a shape."""
    _, runs, _ = grid_nn
    fig, result = _default_plot(runs, None, y="final_loss")
    assert result.spec.style_by == ["activation"] and result.spec.hue == "init"
    (ax,) = fig.axes
    points = [line for line in ax.lines if line.get_color() != style.GREY and line.get_marker() != "x"]
    points = [p for p in points if tuple(matplotlib_rgba(p.get_color())[:3]) != tuple(style.GREY)]
    assert len(points) == result.highlighted == 6
    shapes = {(tuple(matplotlib_rgba(p.get_color())[:3]), p.get_marker()) for p in points}
    assert len(shapes) == len(points)  # colour x shape tells every point apart
    assert {p.get_marker() for p in points} == {"o", "s"}
    assert all(p.get_linestyle() == "None" for p in points)
    texts = [t.get_text() for t in _legend(fig).get_texts()]
    handles = dict(zip(texts, _legend(fig).legend_handles, strict=True))
    assert (handles["relu"].get_marker(), handles["tanh"].get_marker()) == ("o", "s")
    check_colours_apart(fig)
    # the two settings not highlighted are grey dots, not an invisible one-point LineCollection
    grey = [line for line in ax.lines if tuple(matplotlib_rgba(line.get_color())[:3]) == tuple(style.GREY)]
    assert sum(len(line.get_xdata()) for line in grey) == 2
    close(fig)


def test_more_point_styles_than_shapes_are_refused():
    keys = list(range(len(style.POINT_MARKERS)))
    assert len({m for _, m in style.marker_styles(keys).values()}) == len(keys)
    assert not {"x", "v"} & set(style.POINT_MARKERS)  # those mark divergence and underflow
    with pytest.raises(Exception, match="stay distinct"):
        style.marker_styles([*keys, "one more"])


@pytest.mark.slow
def test_minor_tick_labels_are_not_larger_than_the_major(grid_nn):
    """A log y over less than 1.5 decades labels its minor ticks (2x10^0 ...): they came out at 10 pt."""
    _, runs, _ = grid_nn
    fig, _ = _default_plot(runs, None, y="final_loss")
    fig.canvas.draw()
    (ax,) = fig.axes
    major = [t.get_fontsize() for t in ax.yaxis.get_majorticklabels() if t.get_text()]
    minor = [t.get_fontsize() for t in ax.yaxis.get_minorticklabels() if t.get_text()]
    assert major and minor
    assert max(minor) <= min(major)
    close(fig)


def _row_data(ax) -> np.ndarray:
    grey = [seg[:, 1] for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()]
    ys = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.lines] + grey)
    return ys[np.isfinite(ys) & (ys > 0)]


@pytest.mark.slow
def test_each_problem_row_gets_its_own_y_range(grid_problems):
    """The quadratic's 1e-40 squeezed rosenbrock's 1e-1..1e2 into a sliver of a shared axis."""
    _, runs, traces = grid_problems
    fig, result = _default_plot(runs, traces)
    assert result.spec.row == "problem" and len(fig.axes) == 4
    check_figure(fig)  # every axis's limits hold all its plotted data
    axes = np.array(fig.axes).reshape(2, 2)
    lows = []
    for row in axes:
        data = np.concatenate([_row_data(ax) for ax in row])
        (low, high), other = row[0].get_ylim(), row[1].get_ylim()
        assert (low, high) == other  # shared within the row
        assert low >= data.min() / 2 * (1 - 1e-9)  # not stretched below the row's own data
        assert high <= data.max() * 3 * 1.6 * (1 + 1e-9)
        lows.append(low)
    assert lows[0] < 1e-20 < 1e-3 < lows[1]  # quadratic down to ~1e-40, rosenbrock stays above
    close(fig)


@pytest.mark.slow
def test_comparable_rows_share_one_y_range(grid_problems):
    _, runs, traces = grid_problems
    fig, result = _default_plot(runs, traces, row="scheduler", col="optimizer", hue="lr")
    assert result.spec.style_by == ["problem"]
    assert len({ax.get_ylim() for ax in fig.axes}) == 1
    close(fig)


@pytest.mark.slow
def test_the_layout_says_what_is_drawn(grid500):
    """Four optimizers without a row wrap to 2 x 2: the printed line said 1 x 4."""
    _, runs, traces = grid500
    fig, result = _default_plot(runs, traces)
    assert result.shape == (2, 2) and result.layout == "2 x 2 panels"
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (2, 2)
    close(fig)
    fig, result = _default_plot(runs, traces, col="momentum", row=None, hue="lr")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert (result.shape, len(visible)) == ((2, 3), 5)
    assert result.layout == "5 panels on 2 x 3"
    close(fig)


@pytest.mark.slow
def test_divergence_marks_claim_no_line_colour(grid500):
    """Per-run final loss vs lr: every momentum diverges at the large lrs, and the x marks sit on top of
    each other at the top edge; coloured, only the last momentum drawn showed."""
    _, runs, traces = grid500
    fig, _ = _default_plot(runs, None, y="final_loss")
    marks = [line for ax in fig.axes for line in ax.lines if line.get_marker() == "x"]
    assert len(marks) >= 2
    assert {tuple(matplotlib_rgba(m.get_color())[:3]) for m in marks} == {tuple(style.MARK_COLOUR)}
    texts = [t.get_text() for t in _legend(fig).get_texts()]
    handle = _legend(fig).legend_handles[texts.index("diverged")]
    assert tuple(matplotlib_rgba(handle.get_color())[:3]) == tuple(style.MARK_COLOUR)
    for colour in _colour_entries(fig).values():
        assert style.colour_distance(colour, style.MARK_COLOUR) >= style.MIN_COLOUR_DISTANCE
    close(fig)
