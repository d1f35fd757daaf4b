"""``bench plot``: a faceted comparison from any results folder, readable at 1 run or 5000.

What it draws. One panel per (row value, col value); in each panel one line per setting of the other
varying axes, the seeds aggregated. ``y`` is a per-step trace column (loss, lr, grad_norm, val_acc, ...;
``x`` is then a trace column, usually step) or a per-run column of runs.parquet (final_loss, best_loss,
wall_time_s, ...; ``x`` is then a run column, usually lr). An MLP's width, depth and activation are axes
like the lr (``grid.summary.axis_frame``), so ``--hue width`` works.

Defaults from the data (every one can be named instead):

- panels: ``col`` = optimizer, ``row`` = problem, else scheduler, else loss (where they vary);
- ``hue`` = the remaining axis with the most values (colour); the other remaining axes set the line style;
- ``logy`` for losses and norms, ``logx`` for an lr axis spanning 10x or more;
- at most ``top`` lines per panel in colour: the best by final loss (mean over seeds where every seed
  finished; a diverged setting ranks last); the other settings are drawn thin and grey, and the legend
  says how many. Legend entries never exceed ``MAX_LEGEND`` (``top`` shrinks, and the title says so).

Aggregation over seeds, honest on a log axis. On a linear axis the line is the mean and the band
``std`` is ±1 standard deviation, ``ci95`` the 95 % interval of the mean (± t·sd/√n, Student's t with n - 1
degrees of freedom). On a log axis both are computed on log y: the line is the geometric mean and the
bands are ×/÷ the geometric standard deviation (``std``) or exp(mean log ± t·sd log/√n) (``ci95``), so a
band never reaches zero or below. ``range`` spans min to max over the seeds; ``none`` draws no band.
Bands need two seeds; values ≤ 0 are left out on a log axis.

Limits. One y range for every panel, from all plotted lines: the top sits x3 (log) or 10 % (linear)
above the highest line of a setting that finished; a diverging line is cut where it crosses the top and
marked with an x there. Figures stay within ``style.MAX_FIGSIZE`` however many panels; more than
``MAX_PANELS`` panels, or a hue that is also a panel axis, is refused with one line.
"""

from __future__ import annotations

import contextlib
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optbench.errors import OptbenchError
from optbench.spec import TRACE_COLUMNS

BANDS = ("std", "ci95", "range", "none")
MAX_PANELS = 24
MAX_LEGEND = 24  # legend entries, section titles included
TOP_DEFAULT = 6
LOG_Y = ("loss", "val_loss", "grad_norm", "update_norm", "final_loss", "best_loss", "final_val_loss")
PANEL_SIZE = (3.5, 2.6)  # inches per panel before the figure is bounded
LEGEND_WIDTH = 2.3  # inches beside the panels

# Student's t 97.5 % quantiles for 1..30 degrees of freedom (beyond: the normal 1.96).
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(dof: int) -> float:
    return _T975[dof - 1] if 1 <= dof <= len(_T975) else 1.96


@dataclass
class FacetSpec:
    """What one faceted figure shows, every default resolved (``resolve``)."""

    y: str
    x: str
    kind: str  # "trace": y per step; "run": y per run
    hue: str | None
    col: str | None
    row: str | None
    style_by: list[str]  # varying axes not named above: they set the line style
    logy: bool
    logx: bool
    band: str = "std"
    top: int = TOP_DEFAULT


@dataclass
class FacetResult:
    path: Path | None
    rows: list = field(default_factory=list)  # row values, top to bottom ([None] without a row axis)
    cols: list = field(default_factory=list)  # col values, left to right ([None] without a col axis)
    lines: int = 0  # lines drawn over all panels (highlighted and grey)
    highlighted: int = 0  # lines drawn in colour
    split_by: list[str] = field(default_factory=list)  # varying axes that set the line style
    spec: FacetSpec | None = None
    panels: list = field(default_factory=list)  # (row value, col value) of each drawn axes, in fig.axes order
    colours: dict = field(default_factory=dict)  # hue value -> colour of the highlighted lines

    @property
    def n_axes(self) -> int:
        return len(self.rows) * len(self.cols)


# ----------------------------------------------------------------------------------------- the choices


def _numeric(frame, column: str) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])


def check_columns(runs, *, y: str, x: str, hue: str | None, col: str | None, row: str | None) -> str:
    """Validate the column choices; return ``"trace"`` or ``"run"`` (where y lives)."""
    trace_numeric = [c for c in TRACE_COLUMNS if c not in ("run_id", "skipped_step")]
    run_numeric = [c for c in runs.columns if c != "run_id" and _numeric(runs, c)]
    if y in trace_numeric:
        kind = "trace"
        if x not in trace_numeric:
            hint = " (per-run; with it use a per-run --y such as final_loss)" if x in runs.columns else ""
            raise OptbenchError(
                f"unknown --x {x!r} for per-step --y {y!r}{hint}; valid: {', '.join(trace_numeric)}"
            )
    elif y in run_numeric:
        kind = "run"
        if x not in run_numeric:
            raise OptbenchError(f"unknown --x {x!r} for per-run --y {y!r}; valid: {', '.join(run_numeric)}")
    else:
        valid = ", ".join(dict.fromkeys(trace_numeric + run_numeric))
        raise OptbenchError(f"unknown --y {y!r}; valid: {valid}")
    for option, value in (("--hue", hue), ("--col", col), ("--row", row)):
        if value is not None and (value not in runs.columns or value == "run_id"):
            group_cols = [c for c in runs.columns if c not in ("run_id", "problem_spec")]
            raise OptbenchError(f"unknown {option} {value!r}; valid: {', '.join(group_cols)}")
    return kind


def _check_distinct(hue: str | None, col: str | None, row: str | None, x: str) -> None:
    named = [(o, v) for o, v in (("--hue", hue), ("--col", col), ("--row", row), ("--x", x)) if v]
    for i, (option, value) in enumerate(named):
        for other, same in named[i + 1 :]:
            if value == same:
                raise OptbenchError(
                    f"{option} and {other} both name {value!r}; each needs a column of its own "
                    "(--hue/--col/--row none leaves one out)"
                )


def _auto_panels(varying: list[str], col: str | None, row: str | None, given: set[str]):
    """col = optimizer, row = problem/scheduler/loss, each where it varies and is not named elsewhere."""
    candidates = [c for c in ("optimizer", "problem", "scheduler", "loss") if c in varying and c not in given]
    if col == "auto":
        col = candidates.pop(0) if candidates else None
    if row == "auto":
        row = next((c for c in candidates if c != col), None)
    return col, row


def resolve(
    runs,
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
) -> FacetSpec:
    """Fill the defaults from the data (module docstring); ``"auto"`` means choose, None means leave out.

    ``runs`` is ``grid.summary.axis_frame(runs)`` (the problem spec split into axes)."""
    from optbench.grid.summary import varying_axes

    if band not in BANDS:
        raise OptbenchError(f"unknown --band {band!r}; valid: {', '.join(BANDS)}")
    if top < 1:
        raise OptbenchError(f"--top must be >= 1, got {top}")
    x = x or ("step" if y in TRACE_COLUMNS else "lr")
    named = {v for v in (hue, col, row) if v not in (None, "auto")}
    given = {k: (None if v == "auto" else v) for k, v in (("hue", hue), ("col", col), ("row", row))}
    kind = check_columns(runs, y=y, x=x, **given)
    varying = [c for c in varying_axes(runs) if c != x]
    col, row = _auto_panels(varying, col, row, named | {x})
    if hue == "auto":
        rest = [c for c in varying if c not in (col, row) and c not in named]
        hue = max(rest, key=lambda c: runs[c].astype(object).map(str).nunique()) if rest else None
    _check_distinct(hue, col, row, x)
    style_by = [c for c in varying if c not in (hue, col, row)]
    if logy is None:
        logy = y in LOG_Y
    if logx is None:
        values = runs[x] if x in runs.columns else None
        logx = x == "lr" and values is not None and values.min() > 0 and values.max() / values.min() >= 10
    return FacetSpec(y, x, kind, hue, col, row, style_by, bool(logy), bool(logx), band, top)


# ----------------------------------------------------------------------------------------- the data


def parse_where(items: list[str] | None, runs) -> list[tuple[str, str]]:
    """``column=value`` filters (value compared as text, numbers also numerically)."""
    filters = []
    for item in items or []:
        column, sep, value = item.partition("=")
        column = column.strip()
        if not sep or column not in runs.columns:
            raise OptbenchError(
                f"bad --where {item!r}: expected COLUMN=VALUE with COLUMN one of "
                f"{', '.join(c for c in runs.columns if c not in ('run_id', 'problem_spec'))}"
            )
        filters.append((column, value.strip()))
    return filters


def apply_where(runs, filters: list[tuple[str, str]]):
    for column, value in filters:
        mask = runs[column].astype(object).map(str) == value
        with contextlib.suppress(TypeError, ValueError):
            mask |= (runs[column].astype(float) - float(value)).abs() <= 1e-12 * max(1.0, abs(float(value)))
        runs = runs[mask]
    if runs.empty:
        raise OptbenchError(f"no runs left after --where {' '.join(f'{c}={v}' for c, v in filters)}")
    return runs


def _values(frame, column: str | None) -> list:
    from optbench.figures.style import sort_key

    if column is None:
        return [None]
    return sorted(dict.fromkeys(_key_values(frame[column])), key=sort_key)


def _key(value):
    """A value as a hashable key: NaN and None both become None."""
    return None if value is None or (isinstance(value, float) and value != value) else value


def _key_values(column) -> list:
    return [_key(v) for v in column.astype(object)]


def _style_key(line, columns: list[str]) -> tuple:
    return tuple(_key(line[c]) for c in columns)


def aggregate(points, keys: list[str], x: str, y: str, band: str, log: bool):
    """Per (keys, x): the centre over runs and the band (``lo``/``hi``; NaN with fewer than 2 runs).

    On a log axis everything is computed on log y and mapped back (geometric mean, ×/÷ geometric std,
    exp of the interval of the mean log), so the band stays positive; see the module docstring."""
    values = points[y].astype(float)
    keep = np.isfinite(values) & ((values > 0) if log else True)
    frame = points[keep].assign(_v=np.log(values[keep]) if log else values[keep])
    stats = (
        frame.groupby([*keys, x], sort=True)["_v"].agg(["mean", "std", "count", "min", "max"]).reset_index()
    )
    count = stats["count"].to_numpy()
    if band == "ci95":
        half = stats["std"].to_numpy() / np.sqrt(count) * np.array([t975(int(n) - 1) for n in count])
    else:
        half = stats["std"].to_numpy()
    lo, hi = stats["mean"] - half, stats["mean"] + half
    if band == "range":
        lo, hi = stats["min"], stats["max"]
    few = (count < 2) | (band == "none")
    stats["lo"], stats["hi"] = np.where(few, np.nan, lo), np.where(few, np.nan, hi)
    stats["centre"] = stats["mean"]
    if log:
        for column in ("centre", "lo", "hi"):
            stats[column] = np.exp(stats[column])
    return stats[[*keys, x, "centre", "lo", "hi", "count"]]


def _line_table(runs, spec: FacetSpec):
    """One row per line: its panel and line keys, ``score`` (for the ranking) and ``diverged`` (every run)."""
    import pandas as pd

    keys = [c for c in (spec.row, spec.col, spec.hue, *spec.style_by) if c]
    frame = runs.assign(**{f"k:{c}": _key_values(runs[c]) for c in keys})
    key_cols = [f"k:{c}" for c in keys]
    codes = frame.groupby(key_cols, dropna=False, sort=False).ngroup() if key_cols else 0
    frame = frame.assign(line=codes)
    setting = ["line"] + ([spec.x] if spec.kind == "run" else [])
    ok = frame["status"] == "ok"
    per_setting = frame.assign(_ok=ok, _loss=frame["final_loss"].where(ok)).groupby(setting)
    scores = per_setting.agg(all_ok=("_ok", "all"), loss=("_loss", "mean")).reset_index()
    scores["score"] = scores["loss"].where(scores["all_ok"], np.inf).fillna(np.inf)
    lines = frame.drop_duplicates("line")[["line", *key_cols]].set_index("line")
    lines.columns = keys
    lines["score"] = scores.groupby("line")["score"].min()
    lines["diverged"] = frame.groupby("line")["status"].agg(lambda s: bool((s == "diverged").all()))
    lines["finished"] = frame.groupby("line")["status"].agg(lambda s: bool((s == "ok").any()))
    return frame, pd.DataFrame(lines)


def _curves(frame, traces, spec: FacetSpec):
    """The aggregated points of every line: columns line, x, centre, lo, hi (see ``aggregate``)."""
    if spec.kind == "trace":
        points = traces[["run_id", spec.x, spec.y]].merge(frame[["run_id", "line"]], on="run_id")
    else:
        points = frame[frame["status"] == "ok"][["line", spec.x, spec.y]]
    points = points[np.isfinite(points[spec.x].astype(float))]
    if spec.logx:
        points = points[points[spec.x] > 0]
    return aggregate(points, ["line"], spec.x, spec.y, spec.band, spec.logy)


def _zeros(frame, spec: FacetSpec):
    """Per-run y on a log axis: the (line, x) whose every finished run has y <= 0 (a final loss that
    underflowed to 0), drawn as a triangle on the floor instead of being left out."""
    if spec.kind != "run" or not spec.logy:
        import pandas as pd

        return pd.DataFrame({"line": [], spec.x: []})
    ok = frame[frame["status"] == "ok"]
    at_zero = ok.groupby(["line", spec.x])[spec.y].agg(lambda v: bool((v <= 0).all()))
    return at_zero[at_zero].reset_index()[["line", spec.x]]


# ---------------------------------------------------------------------------------------- the styles


def _highlight(lines, spec: FacetSpec, top: int):
    """Mark the best ``top`` lines of each panel (lowest score; ties keep the table's order)."""
    panel = [c for c in (spec.row, spec.col) if c]
    ranked = lines.sort_values("score", kind="stable")
    if panel:
        rank = ranked.groupby([ranked[c].astype(object).map(str) for c in panel], sort=False).cumcount()
    else:
        rank = np.arange(len(ranked))
    lines["highlight"] = False
    lines.loc[ranked.index[np.asarray(rank) < top], "highlight"] = True
    return lines


def _styles(lines, spec: FacetSpec):
    """Colour by hue value and (dash, marker) by the style axes, both over the highlighted lines only."""
    from optbench.figures import style

    shown = lines[lines["highlight"]]
    hue_values = _values(shown, spec.hue) if spec.hue else []
    colours = style.value_colors([v for v in hue_values if v is not None]) if spec.hue else {}
    if None in hue_values:  # the optimizer's default (momentum none): dark grey, apart from the context
        colours[None] = (0.25, 0.25, 0.25)
    combos = sorted(
        dict.fromkeys(_style_key(row, spec.style_by) for _, row in shown.iterrows()),
        key=lambda key: [style.sort_key(v) for v in key],
    )
    dashes = style.line_styles(combos) if spec.style_by else {(): ("-", None)}
    return colours, dashes


def _legend_size(lines, spec: FacetSpec, top: int) -> int:
    shown = _highlight(lines.copy(), spec, top)
    shown = shown[shown["highlight"]]
    hue = len(_values(shown, spec.hue)) + 1 if spec.hue else 0
    combos = len(shown[spec.style_by].astype(object).drop_duplicates()) + 1 if spec.style_by else 0
    return hue + combos + 2  # + the grey and the diverged entries


def _fit_top(lines, spec: FacetSpec) -> int:
    """``spec.top``, lowered until the legend stays within ``MAX_LEGEND`` entries."""
    top = spec.top
    while top > 1 and _legend_size(lines, spec, top) > MAX_LEGEND:
        top -= 1
    if _legend_size(lines, spec, top) > MAX_LEGEND:
        raise OptbenchError(
            f"the legend would need more than {MAX_LEGEND} entries even with one line per panel; "
            "name the varying columns with --hue/--col/--row or narrow the runs with --where"
        )
    return top


# ------------------------------------------------------------------------------------------ drawing


def _y_limits(curves, lines, spec: FacetSpec) -> tuple[float, float]:
    """One y range for all panels: from every line, the top x3 (log) or 10 % (linear) above the highest line
    of a setting that finished (diverging lines are cut there)."""
    centre = curves["centre"].to_numpy(dtype=float)
    finished = curves["line"].map(lines["finished"]).to_numpy(dtype=bool)
    reference = centre[finished] if finished.any() else centre
    if not len(reference):
        return (0.1, 10.0) if spec.logy else (0.0, 1.0)
    if spec.logy:
        top = float(reference.max()) * 3
        low = float(centre[centre <= top].min())
        return low / 2, top
    hi, lo = float(reference.max()), float(centre.min())
    pad = 0.1 * (hi - lo) if hi > lo else 0.5 * max(abs(hi), 1.0)
    return lo - pad / 2, hi + pad


def _cut(xs, ys, top: float):
    """The points of a line up to where it first exceeds ``top``; True when it was cut."""
    over = np.flatnonzero(ys > top)
    if not len(over):
        return xs, ys, False
    return xs[: over[0]], ys[: over[0]], True


def _grey_segment(points, spec: FacetSpec, top: float):
    """A context line's points (cut at ``top``), for the panel's one grey LineCollection."""
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
    if spec.kind == "run" and marker is None:
        kwargs.update(marker="o", ms=3.0, markevery=1)
    ax.plot(xs, ys, lw=1.6, **kwargs)
    if spec.band != "none":
        lo, hi = points["lo"].to_numpy(dtype=float)[: len(xs)], points["hi"].to_numpy(dtype=float)[: len(xs)]
        if np.isfinite(lo).any():
            ax.fill_between(xs, lo, np.minimum(hi, top), color=colour, alpha=0.15, lw=0)
    ends = (cut or (line["diverged"] and spec.kind == "trace")) and len(xs)
    if ends:
        ax.plot(xs[-1], top if cut else ys[-1], "x", color=colour, ms=7, mew=2, clip_on=False, zorder=5)
    return bool(ends)


def _diverged_marks(ax, frame, panel_lines, spec: FacetSpec, colours, top: float) -> bool:
    """Per-run figures: an x at the top edge at each x where every seed of a highlighted line diverged."""
    drawn = False
    for line_id, line in panel_lines.iterrows():
        if not line["highlight"]:
            continue
        runs = frame[frame["line"] == line_id]
        all_div = runs.groupby(spec.x)["status"].agg(lambda s: bool((s == "diverged").all()))
        at = all_div[all_div].index.to_numpy(dtype=float)
        if len(at):
            colour = colours.get(_key(line[spec.hue]), "tab:blue") if spec.hue else "tab:blue"
            ax.plot(at, [top] * len(at), "x", color=colour, ms=7, mew=2, clip_on=False, zorder=5)
            drawn = True
    return drawn


def _draw_panel(ax, frame, curves, lines, spec: FacetSpec, styles, limits, zeros) -> tuple[int, set]:
    """Every line of one panel: the grey context as one LineCollection under the highlighted lines; returns
    (lines drawn, the marks used: diverged, zero)."""
    from matplotlib.collections import LineCollection

    from optbench.figures.style import GREY

    colours, dashes = styles
    drawn, marks, grey = 0, set(), []
    for line_id, line in lines.iterrows():
        points = curves[curves["line"] == line_id]
        if not line["highlight"]:
            if not points.empty:
                grey.append(_grey_segment(points, spec, limits[1]))
            continue
        colour = colours.get(_key(line[spec.hue]), "tab:blue") if spec.hue else "tab:blue"
        dash = dashes[_style_key(line, spec.style_by)] if spec.style_by else ("-", None)
        floor = zeros[zeros["line"] == line_id][spec.x].to_numpy(dtype=float)
        if len(floor):
            ax.plot(floor, [limits[0]] * len(floor), "v", color=colour, ms=6, clip_on=False, zorder=5)
            marks.add("zero")
        if not points.empty and _draw_line(ax, points, line, colour, dash, spec, limits[1]):
            marks.add("diverged")
    if grey:
        ax.add_collection(LineCollection(grey, colors=[GREY], linewidths=0.6, alpha=0.55, zorder=1))
        ax.autoscale_view()
    drawn = len(grey) + int((lines["highlight"] & lines.index.isin(curves["line"])).sum())
    if spec.kind == "run" and _diverged_marks(ax, frame, lines, spec, colours, limits[1]):
        marks.add("diverged")
    if not drawn:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
    return drawn, marks


def select_panel(frame, spec: FacetSpec, row_value, col_value):
    """The rows of ``frame`` (runs or lines) that belong to the panel (row value, col value)."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in ((spec.row, row_value), (spec.col, col_value)):
        if column:
            mask &= np.array([v == value for v in _key_values(frame[column])], dtype=bool)
    return frame[mask]


def _figure(n_rows: int, n_cols: int):
    from optbench.figures import style

    width = min(PANEL_SIZE[0], (style.MAX_FIGSIZE[0] - LEGEND_WIDTH) / n_cols)
    height = min(PANEL_SIZE[1], (style.MAX_FIGSIZE[1] - 1.2) / n_rows)
    size = style.bounded_figsize(width * n_cols + LEGEND_WIDTH, height * n_rows + 1.2)
    return style.plt.subplots(
        n_rows, n_cols, figsize=size, squeeze=False, sharex=True, sharey=True, layout="constrained"
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
    ax.tick_params(labelsize=8)


def _panel_title(spec: FacetSpec, row_value, col_value, width_in: float) -> str:
    from optbench.figures.style import fmt_value

    parts = [f"{c}={fmt_value(v)}" for c, v in ((spec.row, row_value), (spec.col, col_value)) if c]
    return "\n".join(textwrap.fill(p, max(16, int(width_in * 11))) for p in parts)


def facet_figure(runs, traces, spec: FacetSpec, title: str | None = None):
    """Draw the figure of ``spec`` (``runs`` as ``axis_frame`` gives them); return (Figure, FacetResult).

    Without a row axis the col panels wrap onto rows of at most three (4 optimizers: 2 x 2)."""
    from optbench.figures import style

    frame, lines = _line_table(runs, spec)
    lines.attrs["seeds"] = int(runs["seed"].nunique())
    top_k = _fit_top(lines, spec)
    lines = _highlight(lines, spec, top_k)
    curves = _curves(frame, traces, spec)
    styles = _styles(lines, spec)
    if curves.empty:
        raise OptbenchError(
            f"no finite {'positive ' if spec.logy else ''}values of {spec.y!r} to plot"
            + (
                " (val_loss and val_acc are recorded for MLP problems only)"
                if spec.y.startswith("val_")
                else (" (every value is 0 or less: --no-logy draws them)" if spec.logy else "")
            )
        )
    limits = _y_limits(curves, lines, spec)
    row_values, col_values = _values(runs, spec.row), _values(runs, spec.col)
    if len(row_values) * len(col_values) > MAX_PANELS:
        raise OptbenchError(
            f"{len(row_values)} x {len(col_values)} panels is too many (max {MAX_PANELS}); choose a --col/--row "
            "with fewer values or narrow the runs with --where COLUMN=VALUE"
        )
    panels = [(r, c) for r in row_values for c in col_values]
    shape = (len(row_values), len(col_values)) if spec.row else style.grid_shape(len(panels), 3)
    fig, axes = _figure(*shape)
    x_values = np.unique(curves[spec.x].to_numpy(dtype=float))
    zeros = _zeros(frame, spec)
    drawn, marks = 0, set()
    for ax, (row_value, col_value) in zip(axes.flat, panels, strict=False):
        panel = select_panel(lines, spec, row_value, col_value)
        n, used = _draw_panel(ax, frame, curves, panel, spec, styles, limits, zeros)
        drawn, marks = drawn + n, marks | used
        _format_axes(ax, spec, x_values, limits)
        ax.set_title(_panel_title(spec, row_value, col_value, fig.get_figwidth() / shape[1]), fontsize=9)
    style.hide_unused(axes, len(panels))
    _decorate(fig, axes, spec, lines, styles, top_k, marks, title)
    result = FacetResult(
        None, row_values, col_values, drawn, int(lines["highlight"].sum()), spec.style_by, spec
    )
    result.panels, result.colours = panels, styles[0]
    return fig, result


# ------------------------------------------------------------------------------------------- legend


def _legend_handles(spec: FacetSpec, lines, styles, marks: set) -> list:
    from optbench.figures.style import GREY, fmt_value, plt

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
            handles.append(plt.Line2D([], [], color="0.25", ls=ls, marker=marker, lw=1.6, label=label))
    grey = int((~lines["highlight"]).sum())
    if grey:
        handles.append(plt.Line2D([], [], color=GREY, lw=0.8, label=f"{grey} other settings"))
    if "diverged" in marks:
        handles.append(plt.Line2D([], [], color="0.25", ls="none", marker="x", mew=2, label="diverged"))
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
    """The figure's one legend, right of the panels (replacing one drawn before)."""
    for old in list(fig.legends):
        old.remove()
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, handlelength=2.6)


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


def default_name(y: str, x: str, hue: str | None, col: str | None, row: str | None) -> str:
    parts = [f"{y}_vs_{x}"] + [f"by_{c}" for c in (hue, col, row) if c and c != "auto"]
    return "plot_" + "_".join(parts)
