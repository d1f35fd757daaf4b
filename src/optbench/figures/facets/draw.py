"""Drawing a faceted figure: panels, lines cut at the top with their divergence marks, the legend."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from optbench.errors import OptbenchError
from optbench.figures.facets import lines as facet_lines
from optbench.figures.facets.choices import (
    LEGEND_WIDTH,
    MAX_PANELS,
    PANEL_SIZE,
    TOP_DEFAULT,
    FacetResult,
    FacetSpec,
    apply_where,
    parse_where,
    resolve,
)


def _cut(xs, ys, top: float):
    """The points of a line up to where it first exceeds ``top``; True when it was cut."""
    over = np.flatnonzero(ys > top)
    if not len(over):
        return xs, ys, False
    return xs[: over[0]], ys[: over[0]], True


def _grey_segment(points, spec: FacetSpec, top: float):
    """A context line's points (cut at ``top``), for the panel's one grey LineCollection (or grey dots, for
    lines of one point: a collection draws no line through a single point)."""
    xs, ys, _ = _cut(points[spec.x].to_numpy(dtype=float), points["centre"].to_numpy(dtype=float), top)
    return np.column_stack([xs, ys])


def _draw_line(ax, points, line, colour, dash, spec: FacetSpec, top: float) -> bool:
    """One highlighted line and its band; an x where it was cut or where every seed diverged. True: x drawn."""
    xs, ys = points[spec.x].to_numpy(dtype=float), points["centre"].to_numpy(dtype=float)
    xs, ys, cut = _cut(xs, ys, top)
    linestyle, marker = dash
    kwargs = {
        "color": colour,
        "ls": linestyle,
        "marker": marker,
        "ms": 3.5,
        "markevery": max(1, len(xs) // 8),
    }
    if linestyle == "none":  # every line is one point: the style axes are marker shapes, hollow so that
        kwargs.update(ms=7.0, mfc="none", mew=1.5, markevery=1)  # overlapping points stay visible
    elif spec.kind == "run" and marker is None:
        kwargs.update(marker="o", ms=3.0, markevery=1)
    ax.plot(xs, ys, lw=1.6, **kwargs)
    if spec.band != "none":
        lo, hi = points["lo"].to_numpy(dtype=float)[: len(xs)], points["hi"].to_numpy(dtype=float)[: len(xs)]
        if np.isfinite(lo).any():
            ax.fill_between(xs, lo, np.minimum(hi, top), color=colour, alpha=0.15, lw=0)
    ends = (cut or (line["diverged"] and spec.kind == "trace")) and len(xs)
    if ends:
        _mark_diverged(ax, [xs[-1]], [top if cut else ys[-1]])
    return bool(ends)


def _mark_diverged(ax, xs, ys) -> None:
    """Divergence marks in one neutral colour: where two lines diverge at one place, the x claims no colour
    of one of them (the legend says "diverged"; the line it ends tells which)."""
    from optbench.figures.style import MARK_COLOUR

    ax.plot(xs, ys, "x", color=MARK_COLOUR, ms=7, mew=2, clip_on=False, zorder=5)


def _diverged_marks(ax, frame, panel_lines, spec: FacetSpec, top: float) -> bool:
    """Per-run figures: an x at the top edge at each x where every seed of a highlighted line diverged."""
    drawn = False
    for line_id, line in panel_lines.iterrows():
        if not line["highlight"]:
            continue
        runs = frame[frame["line"] == line_id]
        all_div = runs.groupby(spec.x)["status"].agg(lambda s: bool((s == "diverged").all()))
        at = all_div[all_div].index.to_numpy(dtype=float)
        if len(at):
            _mark_diverged(ax, at, [top] * len(at))
            drawn = True
    return drawn


def _draw_context(ax, segments) -> None:
    """The grey context lines as one LineCollection under the highlighted lines; those of one point (which
    a collection would not show) as grey dots."""
    from matplotlib.collections import LineCollection

    from optbench.figures.style import GREY

    if not segments:
        return
    ax.add_collection(LineCollection(segments, colors=[GREY], linewidths=0.6, alpha=0.55, zorder=1))
    ax.autoscale_view()
    dots = [g for g in segments if len(g) == 1]
    if dots:
        dots = np.concatenate(dots)
        ax.plot(dots[:, 0], dots[:, 1], ls="none", marker="o", ms=3, color=GREY, alpha=0.8, zorder=1)


def _draw_panel(ax, frame, curves, lines, spec: FacetSpec, styles, limits, zeros) -> tuple[int, set]:
    """Every line of one panel: the grey context under the highlighted lines; returns (lines drawn, the
    marks used: diverged, zero)."""
    colours, dashes = styles
    drawn, marks, grey = 0, set(), []
    for line_id, line in lines.iterrows():
        points = curves[curves["line"] == line_id]
        if not line["highlight"]:
            if not points.empty:
                grey.append(_grey_segment(points, spec, limits[1]))
            continue
        colour = colours.get(facet_lines.key(line[spec.hue]), "tab:blue") if spec.hue else "tab:blue"
        dash = dashes[facet_lines.style_key(line, spec.style_by)] if spec.style_by else ("-", None)
        floor = zeros[zeros["line"] == line_id][spec.x].to_numpy(dtype=float)
        if len(floor):
            ax.plot(floor, [limits[0]] * len(floor), "v", color=colour, ms=6, clip_on=False, zorder=5)
            marks.add("zero")
        if not points.empty and _draw_line(ax, points, line, colour, dash, spec, limits[1]):
            marks.add("diverged")
    _draw_context(ax, grey)
    drawn = len(grey) + int((lines["highlight"] & lines.index.isin(curves["line"])).sum())
    if spec.kind == "run" and _diverged_marks(ax, frame, lines, spec, limits[1]):
        marks.add("diverged")
    if not drawn:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
    return drawn, marks


def select_panel(frame, spec: FacetSpec, row_value, col_value):
    """The rows of ``frame`` (runs or lines) that belong to the panel (row value, col value)."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in ((spec.row, row_value), (spec.col, col_value)):
        if column:
            mask &= np.array([v == value for v in facet_lines.key_values(frame[column])], dtype=bool)
    return frame[mask]


def _figure(n_rows: int, n_cols: int, sharey):
    from optbench.figures import style

    width = min(PANEL_SIZE[0], (style.MAX_FIGSIZE[0] - LEGEND_WIDTH) / n_cols)
    height = min(PANEL_SIZE[1], (style.MAX_FIGSIZE[1] - 1.2) / n_rows)
    size = style.bounded_figsize(width * n_cols + LEGEND_WIDTH, height * n_rows + 1.2)
    return style.plt.subplots(
        n_rows, n_cols, figsize=size, squeeze=False, sharex=True, sharey=sharey, layout="constrained"
    )


def _format_axes(ax, spec: FacetSpec, x_values, limits) -> None:
    """Scales, ticks and the y range: ``limits`` = (bottom, cap); the axis ends a little above the cap so
    that the x of a line cut there stays inside the frame."""
    from optbench.figures import style

    low, cap = limits
    limits = (low, cap * 1.6) if spec.logy else (low, cap + 0.04 * (cap - low))
    if spec.logy:
        ax.set_yscale("log")
    if spec.logx:
        ax.set_xscale("log")
        if spec.x == "lr":
            style.lr_ticks(ax, x_values, max_ticks=4)
    ax.set_ylim(*limits)
    ax.grid(True, which="major", alpha=0.3)
    ax.tick_params(which="major", labelsize=8)
    ax.tick_params(which="minor", labelsize=7)  # log y over < 1.5 decades labels minors (2x10^0 ...)


def _panel_title(spec: FacetSpec, row_value, col_value, width_in: float) -> str:
    from optbench.figures.style import fmt_value

    parts = [f"{c}={fmt_value(v)}" for c, v in ((spec.row, row_value), (spec.col, col_value)) if c]
    return "\n".join(textwrap.fill(p, max(16, int(width_in * 11))) for p in parts)


def _why_none(frame, spec: FacetSpec) -> str:
    """Why nothing could be plotted, so the advice fits: no held-out set, every run diverged, or values <= 0."""
    if spec.y.startswith("val_"):
        return " (val_loss and val_acc are recorded for MLP problems only)"
    if "status" in frame.columns and (frame["status"] == "diverged").all():
        return " (every run diverged: --figure sensitivity shows where; --y loss draws the traces)"
    return " (every value is 0 or less: --no-logy draws them)" if spec.logy else ""


def facet_figure(runs, traces, spec: FacetSpec, title: str | None = None):
    """Draw the figure of ``spec`` (``runs`` as ``axis_frame`` gives them); return (Figure, FacetResult).

    Without a row axis the col panels wrap onto rows of at most three (4 optimizers: 2 x 2)."""
    from optbench.figures import style

    frame, lines = facet_lines.line_table(runs, spec)
    lines.attrs["seeds"] = int(runs["seed"].nunique())
    top_k = facet_lines.fit_top(lines, spec)
    lines = facet_lines.highlight(lines, spec, top_k)
    curves = facet_lines.curves(frame, traces, spec)
    styles = facet_lines.styles(lines, spec, points_only=facet_lines.single_points(curves, lines))
    if curves.empty:
        raise OptbenchError(
            f"no finite {'positive ' if spec.logy else ''}values of {spec.y!r} to plot"
            + _why_none(frame, spec)
        )
    limits = facet_lines.group_limits(curves, lines, spec)
    row_values, col_values = facet_lines.values(runs, spec.row), facet_lines.values(runs, spec.col)
    if len(row_values) * len(col_values) > MAX_PANELS:
        raise OptbenchError(
            f"{len(row_values)} x {len(col_values)} panels is too many (max {MAX_PANELS}); choose a --col/--row "
            "with fewer values or narrow the runs with --where COLUMN=VALUE"
        )
    panels = [(r, c) for r in row_values for c in col_values]
    shape = (len(row_values), len(col_values)) if spec.row else style.grid_shape(len(panels), 3)
    fig, axes = _figure(*shape, _sharey(spec, len(limits)))
    x_values = np.unique(curves[spec.x].to_numpy(dtype=float))
    zeros = facet_lines.zeros(frame, spec)
    drawn, marks = 0, set()
    for ax, (row_value, col_value) in zip(axes.flat, panels, strict=False):
        panel = select_panel(lines, spec, row_value, col_value)
        panel_limits = limits.get(facet_lines.y_group(spec, row_value, col_value), (0.1, 10.0))
        n, used = _draw_panel(ax, frame, curves, panel, spec, styles, panel_limits, zeros)
        drawn, marks = drawn + n, marks | used
        _format_axes(ax, spec, x_values, panel_limits)
        ax.set_title(_panel_title(spec, row_value, col_value, fig.get_figwidth() / shape[1]), fontsize=9)
    style.hide_unused(axes, len(panels))
    _decorate(fig, axes, spec, lines, styles, top_k, marks, title)
    result = FacetResult(
        None, row_values, col_values, drawn, int(lines["highlight"].sum()), spec.style_by, spec
    )
    result.panels, result.colours, result.shape = panels, styles[0], shape
    return fig, result


def _sharey(spec: FacetSpec, ranges: int):
    """One y axis for all panels, or one per row (col) where each row (col) has a range of its own
    (``lines.y_groups``); panels that wrapped, or both axes apart: each its own."""
    if ranges <= 1:
        return True
    groups = facet_lines.y_groups(spec)
    if spec.row and groups == [spec.row]:
        return "row"
    if spec.row and groups == [spec.col]:
        return "col"
    return False


# ------------------------------------------------------------------------------------------- legend


def _legend_handles(spec: FacetSpec, lines, styles, marks: set) -> list:
    from optbench.figures.style import GREY, MARK_COLOUR, fmt_value, plt

    colours, dashes = styles
    title = lambda text: plt.Line2D([], [], ls="none", label=text)  # noqa: E731 - a section heading
    handles = []
    if spec.hue:
        handles.append(title(f"colour: {spec.hue}"))
        handles += [plt.Line2D([], [], color=colours[v], lw=2, label=fmt_value(v)) for v in colours]
    if spec.style_by:
        handles.append(title("line: " + ", ".join(spec.style_by)))
        for key, (ls, marker) in dashes.items():
            label = ", ".join(fmt_value(v) for v in key)
            hollow = {"mfc": "none", "mew": 1.5, "ms": 7} if ls == "none" else {}
            handles.append(
                plt.Line2D([], [], color="0.25", ls=ls, marker=marker, lw=1.6, label=label, **hollow)
            )
    grey = int((~lines["highlight"]).sum())
    if grey:
        handles.append(plt.Line2D([], [], color=GREY, lw=0.8, label=f"{grey} other settings"))
    if "diverged" in marks:
        handles.append(plt.Line2D([], [], color=MARK_COLOUR, ls="none", marker="x", mew=2, label="diverged"))
    if "zero" in marks:
        handles.append(
            plt.Line2D([], [], color="0.25", ls="none", marker="v", label="0 (underflow), on the floor")
        )
    return handles


def _subtitle(spec: FacetSpec, lines, runs_seeds: int, top_k: int) -> str:
    seeds = f"{runs_seeds} seed{'s' * (runs_seeds != 1)}"
    if runs_seeds > 1:
        centre = "geometric mean" if spec.logy else "mean"
        band = {
            "std": "×/÷ geometric std" if spec.logy else "±1 std",
            "ci95": "95% interval of the mean" + (" (of log y)" if spec.logy else ""),
            "range": "min to max",
            "none": "",
        }[spec.band]
        text = f"{centre} over {seeds}" + (f", band {band}" if band else "")
    else:
        text = seeds
    if (~lines["highlight"]).any():
        text += f"; best {top_k} per panel by final loss in colour, the rest grey"
    return text


def _decorate(fig, axes, spec: FacetSpec, lines, styles, top_k: int, marks: set, title) -> None:
    from optbench.figures import style

    seeds = int(lines.attrs.get("seeds", 1))
    text = [title or f"{spec.y} vs {spec.x}", _subtitle(spec, lines, seeds, top_k)]
    panels_w = fig.get_figwidth() - LEGEND_WIDTH
    lines_text = "\n".join(textwrap.fill(t, int(panels_w * 12)) for t in text)
    fig.suptitle(lines_text, fontsize=10, x=0.5 * panels_w / fig.get_figwidth())  # centred over the panels
    fig.supxlabel(style.axis_label(spec.x) + (" (log scale)" if spec.logx else ""), fontsize=9)
    fig.supylabel(style.axis_label(spec.y) + (" (log scale)" if spec.logy else ""), fontsize=9)
    legend(fig, _legend_handles(spec, lines, styles, marks))


def legend(fig, handles: list) -> None:
    """The figure's one legend, right of the panels (replacing one drawn before); handles long enough that
    every dash pattern shows a whole period (``style.HANDLE_LENGTH``)."""
    from optbench.figures.style import HANDLE_LENGTH

    for old in list(fig.legends):
        old.remove()
    if handles:
        fig.legend(
            handles=handles, loc="outside right upper", fontsize=8, frameon=False, handlelength=HANDLE_LENGTH
        )


def facet_plot(
    runs,
    traces,
    path: Path,
    *,
    y: str = "loss",
    x: str | None = None,
    hue: str | None = "auto",
    col: str | None = "auto",
    row: str | None = "auto",
    logy: bool | None = None,
    logx: bool | None = None,
    band: str = "std",
    top: int = TOP_DEFAULT,
    where: list[str] | None = None,
    title: str | None = None,
) -> FacetResult:
    """Choose (``resolve``), draw (``facet_figure``) and save the faceted comparison to ``path``."""
    from optbench.figures import style
    from optbench.grid.summary import axis_frame

    if runs.empty:
        raise OptbenchError("the results folder has no runs")
    runs = axis_frame(runs)
    runs = apply_where(runs, parse_where(where, runs))
    spec = resolve(runs, y=y, x=x, hue=hue, col=col, row=row, logy=logy, logx=logx, band=band, top=top)
    runs = runs[runs["status"].isin(["ok", "diverged"])]
    if runs.empty:
        raise OptbenchError("no finished runs to plot (every run is invalid or failed)")
    fig, result = facet_figure(runs, traces, spec, title)
    result.path = style.save(fig, path)
    return result
