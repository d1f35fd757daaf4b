"""The lines of a faceted figure: one per setting of the varying axes, its seeds aggregated (honestly on a
log axis), ranked, styled, and the y range they need."""

from __future__ import annotations

import numpy as np

from optbench.errors import OptbenchError
from optbench.figures.facets.choices import MAX_LEGEND, FacetSpec

# Student's t 97.5 % quantiles for 1..30 degrees of freedom (beyond: the normal 1.96).
# fmt: off
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
# fmt: on


def t975(dof: int) -> float:
    return _T975[dof - 1] if 1 <= dof <= len(_T975) else 1.96


def values(frame, column: str | None) -> list:
    from optbench.figures.style import sort_key

    if column is None:
        return [None]
    return sorted(dict.fromkeys(key_values(frame[column])), key=sort_key)


def key(value):
    """A value as a hashable key: NaN and None both become None."""
    return None if value is None or (isinstance(value, float) and value != value) else value


def key_values(column) -> list:
    return [key(v) for v in column.astype(object)]


def style_key(line, columns: list[str]) -> tuple:
    return tuple(key(line[c]) for c in columns)


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


def line_table(runs, spec: FacetSpec):
    """One row per line: its panel and line keys, ``score`` (for the ranking) and ``diverged`` (every run)."""
    import pandas as pd

    keys = [c for c in (spec.row, spec.col, spec.hue, *spec.style_by) if c]
    frame = runs.assign(**{f"k:{c}": key_values(runs[c]) for c in keys})
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


def curves(frame, traces, spec: FacetSpec):
    """The aggregated points of every line: columns line, x, centre, lo, hi (see ``aggregate``)."""
    if spec.kind == "trace":
        points = traces[["run_id", spec.x, spec.y]].merge(frame[["run_id", "line"]], on="run_id")
    else:
        points = frame[frame["status"] == "ok"][["line", spec.x, spec.y]]
    points = points[np.isfinite(points[spec.x].astype(float))]
    if spec.logx:
        points = points[points[spec.x] > 0]
    return aggregate(points, ["line"], spec.x, spec.y, spec.band, spec.logy)


def zeros(frame, spec: FacetSpec):
    """Per-run y on a log axis: the (line, x) whose every finished run has y <= 0 (a final loss that
    underflowed to 0), drawn as a triangle on the floor instead of being left out."""
    if spec.kind != "run" or not spec.logy:
        import pandas as pd

        return pd.DataFrame({"line": [], spec.x: []})
    ok = frame[frame["status"] == "ok"]
    at_zero = ok.groupby(["line", spec.x])[spec.y].agg(lambda v: bool((v <= 0).all()))
    return at_zero[at_zero].reset_index()[["line", spec.x]]


# ---------------------------------------------------------------------------------------- the styles


def highlight(lines, spec: FacetSpec, top: int):
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


def styles(lines, spec: FacetSpec, points_only: bool = False):
    """Colour by hue value and (dash, marker) by the style axes, both over the highlighted lines only.

    Colours come from ``style.distinct_colors`` (every two apart, in sorted order); when every line is one
    point (``points_only``) a dash shows nothing, so the style axes get marker shapes instead."""
    from optbench.figures import style

    shown = lines[lines["highlight"]]
    hue_values = values(shown, spec.hue) if spec.hue else []
    colours = style.distinct_colors([v for v in hue_values if v is not None]) if spec.hue else {}
    if None in hue_values:  # the optimizer's default (momentum none): dark grey, apart from the context
        colours[None] = style.DEFAULT_COLOUR
    combos = sorted(
        dict.fromkeys(style_key(row, spec.style_by) for _, row in shown.iterrows()),
        key=lambda key: [style.sort_key(v) for v in key],
    )
    if not spec.style_by:
        return colours, {(): ("-", None)}
    return colours, (style.marker_styles(combos) if points_only else style.line_styles(combos))


def single_points(curves, lines) -> bool:
    """True when every highlighted line has at most one point (a per-run y at one x): no dash can show."""
    shown = curves[curves["line"].isin(lines.index[lines["highlight"]])]
    return bool(len(shown)) and bool((shown.groupby("line").size() <= 1).all())


def legend_size(lines, spec: FacetSpec, top: int) -> int:
    shown = highlight(lines.copy(), spec, top)
    shown = shown[shown["highlight"]]
    hue = len(values(shown, spec.hue)) + 1 if spec.hue else 0
    combos = len(shown[spec.style_by].astype(object).drop_duplicates()) + 1 if spec.style_by else 0
    return hue + combos + 2  # + the grey and the diverged entries


def fit_top(lines, spec: FacetSpec) -> int:
    """``spec.top``, lowered until the legend stays within ``MAX_LEGEND`` entries."""
    top = spec.top
    while top > 1 and legend_size(lines, spec, top) > MAX_LEGEND:
        top -= 1
    if legend_size(lines, spec, top) > MAX_LEGEND:
        raise OptbenchError(
            f"the legend would need more than {MAX_LEGEND} entries even with one line per panel; "
            "name the varying columns with --hue/--col/--row or narrow the runs with --where"
        )
    return top


SEPARATE_Y = ("problem", "loss")  # panel axes whose values' losses are not comparable: a y range each


def y_groups(spec: FacetSpec) -> list[str]:
    """The panel axes (row, col) that get a y range per value: problem and loss, whose values are on
    different scales (a quadratic reaches 1e-40, rosenbrock stays near 1e-2); the others share one range."""
    return [c for c in (spec.row, spec.col) if c in SEPARATE_Y]


def y_group(spec: FacetSpec, row_value, col_value) -> tuple:
    """The key of a panel's y range: its values of the ``y_groups`` axes."""
    by = {spec.row: row_value, spec.col: col_value}
    return tuple(by[c] for c in y_groups(spec))


def group_limits(curves, lines, spec: FacetSpec) -> dict:
    """``y_limits`` per y range (``y_group`` -> limits): over the lines of that range only."""
    groups = y_groups(spec)
    if not groups:
        return {(): y_limits(curves, lines, spec)}
    keys = lines[groups].apply(lambda row: tuple(key(v) for v in row), axis=1)
    limits = {}
    for group in dict.fromkeys(keys):
        members = lines[keys == group]
        limits[group] = y_limits(curves[curves["line"].isin(members.index)], members, spec)
    return limits


def y_limits(curves, lines, spec: FacetSpec) -> tuple[float, float]:
    """One y range from every line given: the top x3 (log) or 10 % (linear) above the highest line of a
    setting that finished (diverging lines are cut there)."""
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
