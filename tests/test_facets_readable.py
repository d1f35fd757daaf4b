"""``bench plot`` stays readable at 500 cells (issue 14), checked on the matplotlib Figure: colours apart
in CIELAB within every panel and apart from the context grey, dash patterns that show in the legend, marker
shapes where every line is one point, a y range per problem row, the drawn layout, minor tick labels no
larger than the major, and divergence marks that claim no line's colour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.collections import LineCollection

from figure_grids import build_grid
from optbench.figures import facets, style
from test_figures import (
    _default_plot,
    _is_data_line,
    check_figure,
    close,
    matplotlib_rgba,
)

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
    return build_grid(tmp_path_factory, "gnn", GRID_NN)


@pytest.fixture(scope="module")
def grid_problems(tmp_path_factory):
    return build_grid(tmp_path_factory, "gproblems", GRID_PROBLEMS)


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
            if _is_data_line(line) or (line.get_linestyle() == "None" and line.get_marker() not in ("x", "v"))
        }  # curves and one-point lines (marker shapes); not the divergence and underflow marks
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
            assert style.colour_distance(style.name_color(name), style.GREY) >= style.MIN_COLOUR_DISTANCE, (
                name
            )
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
