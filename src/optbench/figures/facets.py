"""``bench plot``: a faceted comparison from any results folder.

One panel per (row value, col value); in each panel one line per hue value, averaged over seeds: the mean
line with a band of ±1 std (``band="std"``) or the 95 % interval of the mean (``band="ci95"``: mean ± t·std/√n
with Student's t for n - 1 degrees of freedom), drawn where at least two seeds have a value.

``y`` is either a per-step trace column (loss, lr, grad_norm, val_acc, ...; then ``x`` is a trace column,
usually step) or a per-run column of runs.parquet (final_loss, best_loss, wall_time_s, ...; then ``x`` is a
run column, usually lr). ``hue``/``col``/``row`` are run columns (optimizer, lr, momentum, scheduler, ...).
Config columns that vary but are not named (other than seed) are never averaged away: they split lines
too, drawn with different dash patterns and named in the legend.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.spec import CONFIG_FIELDS, TRACE_COLUMNS

BANDS = ("std", "ci95", "none")
MAX_PANELS = 48

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
_DASHES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))


def t975(dof: int) -> float:
    return _T975[dof - 1] if 1 <= dof <= len(_T975) else 1.96


@dataclass
class FacetResult:
    path: Path
    rows: list = field(default_factory=list)  # row values, top to bottom ([None] without --row)
    cols: list = field(default_factory=list)  # col values, left to right ([None] without --col)
    lines: int = 0  # mean lines drawn over all panels
    split_by: list[str] = field(default_factory=list)  # unnamed varying config columns that split lines

    @property
    def n_axes(self) -> int:
        return len(self.rows) * len(self.cols)


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
            group_cols = [c for c in runs.columns if c != "run_id"]
            raise OptbenchError(f"unknown {option} {value!r}; valid: {', '.join(group_cols)}")
    return kind


def parse_where(items: list[str] | None, runs) -> list[tuple[str, str]]:
    """``column=value`` filters (value compared as text, numbers also numerically)."""
    filters = []
    for item in items or []:
        column, sep, value = item.partition("=")
        column = column.strip()
        if not sep or column not in runs.columns:
            raise OptbenchError(
                f"bad --where {item!r}: expected COLUMN=VALUE with COLUMN one of "
                f"{', '.join(c for c in runs.columns if c != 'run_id')}"
            )
        filters.append((column, value.strip()))
    return filters


def apply_where(runs, filters: list[tuple[str, str]]):
    for column, value in filters:
        text = runs[column].astype(str)
        mask = text == value
        with contextlib.suppress(TypeError, ValueError):
            mask |= (runs[column].astype(float) - float(value)).abs() <= 1e-12 * max(1.0, abs(float(value)))
        runs = runs[mask]
    if runs.empty:
        raise OptbenchError(f"no runs left after --where {' '.join(f'{c}={v}' for c, v in filters)}")
    return runs


def _values(frame, column: str | None) -> list:
    from optbench.figures.style import sort_key as _sort_key

    if column is None:
        return [None]
    return sorted(frame[column].astype(object).where(frame[column].notna(), None).unique(), key=_sort_key)


def _select(frame, column: str | None, value):
    if column is None:
        return frame
    column = f"g:{column}"
    if value is None:
        return frame[frame[column].isna()]
    return frame[frame[column] == value]


def _text(value) -> str:
    """A group key as text; None and NaN (pandas turns one into the other) both read "None"."""
    if value is None or (isinstance(value, float) and value != value):
        return "None"
    return str(value)


def _aggregate(points, x: str, y: str, band: str):
    """Mean of y over runs at each x, and the band half-width (NaN where fewer than 2 runs)."""
    import numpy as np

    stats = points.groupby(x)[y].agg(["mean", "std", "count"]).sort_index()
    if band == "std":
        half = stats["std"]
    elif band == "ci95":
        half = stats["std"] / np.sqrt(stats["count"]) * stats["count"].map(lambda n: t975(int(n) - 1))
    else:
        half = stats["std"] * np.nan
    half = half.where(stats["count"] >= 2)
    return stats.index.to_numpy(dtype=float), stats["mean"].to_numpy(), half.to_numpy()


def facet_plot(  # noqa: C901 - to split (#13)
    runs,
    traces,
    path: Path,
    *,
    y: str = "loss",
    x: str = "step",
    hue: str | None = "lr",
    col: str | None = None,
    row: str | None = None,
    logy: bool = False,
    logx: bool = False,
    band: str = "std",
    where: list[str] | None = None,
    sharey: bool = True,
    title: str | None = None,
) -> FacetResult:
    """Draw the faceted comparison (see the module docstring) to ``path`` and describe its layout."""
    import numpy as np

    from optbench.figures import style

    if band not in BANDS:
        raise OptbenchError(f"unknown --band {band!r}; valid: {', '.join(BANDS)}")
    if runs.empty:
        raise OptbenchError("the results folder has no runs")
    kind = check_columns(runs, y=y, x=x, hue=hue, col=col, row=row)
    runs = apply_where(runs, parse_where(where, runs))
    runs = runs[runs["status"].isin(["ok", "diverged"])]
    if runs.empty:
        raise OptbenchError("no finished runs to plot (every run is invalid or failed)")

    named = {c for c in (hue, col, row, x) if c}
    split_by = [
        c
        for c in CONFIG_FIELDS
        if c != "seed" and c not in named and c in runs.columns and runs[c].astype(str).nunique() > 1
    ]
    row_values, col_values, hue_values = _values(runs, row), _values(runs, col), _values(runs, hue)
    if len(row_values) * len(col_values) > MAX_PANELS:
        raise OptbenchError(
            f"{len(row_values)} x {len(col_values)} panels is too many (max {MAX_PANELS}); "
            "narrow it with --where COLUMN=VALUE"
        )
    colors = style.value_colors([v for v in hue_values if v is not None]) if hue else {}

    # Grouping columns get a "g:" prefix so run columns never clash with trace ones (lr is both).
    group_cols = list(dict.fromkeys(c for c in (hue, col, row, *split_by) if c))
    grouping = runs[["run_id"]].assign(
        **{f"g:{c}": runs[c].astype(object).where(runs[c].notna(), None) for c in group_cols}
    )
    split_cols = [f"g:{c}" for c in split_by]
    extras = sorted({tuple(_text(v) for v in row) for row in grouping[split_cols].itertuples(index=False)})
    dash_of = {key: _DASHES[i % len(_DASHES)] for i, key in enumerate(extras)}
    data = traces.merge(grouping, on="run_id") if kind == "trace" else runs.merge(grouping, on="run_id")
    data = data[np.isfinite(data[y].astype(float)) & np.isfinite(data[x].astype(float))]
    if logy:
        data = data[data[y] > 0]
    if logx:
        data = data[data[x] > 0]

    # Diverged runs climb to 1e12 and would flatten every other line: cap the y axis above the runs that
    # finished (x 100 on a log axis, x 1.5 on a linear one) and mark the diverged ends at the top edge.
    top = None
    finished = data[data["run_id"].isin(runs[runs["status"] == "ok"]["run_id"])][y]
    if kind == "trace" and len(finished) and sharey:
        cap = finished.max() * 100 if logy else finished.max() + 0.5 * (finished.max() - finished.min())
        if data[y].max() > cap:
            top = cap

    n_rows, n_cols = len(row_values), len(col_values)
    entries = len(hue_values) * max(1, len(extras))  # legend lines: the figure must be tall enough
    legend_cols = 1 if entries <= 24 else 2
    height = max(2.9 * n_rows + 0.8, 0.19 * math.ceil(entries / legend_cols) + 1.2)
    fig, axes = style.plt.subplots(
        n_rows,
        n_cols,
        figsize=(3.9 * n_cols + 2.4 * legend_cols, height),
        squeeze=False,
        sharex=True,
        sharey=sharey,
        layout="constrained",
    )
    lines, any_diverged = 0, False
    for i, row_value in enumerate(row_values):
        for j, col_value in enumerate(col_values):
            ax = axes[i, j]
            panel = _select(_select(data, row, row_value), col, col_value)
            for hue_value in hue_values:
                part = _select(panel, hue, hue_value)
                groups = part.groupby(split_cols, sort=True, dropna=False) if split_by else [((), part)]
                for key, line in groups:
                    if line.empty:
                        continue
                    key = tuple(_text(k) for k in (key if isinstance(key, tuple) else (key,)))
                    xs, mean, half = _aggregate(line, x, y, band)
                    color = colors.get(hue_value, "tab:blue")
                    label = style.fmt_value(hue_value) if hue else y
                    if split_by:
                        label += " · " + ", ".join(f"{c}={v}" for c, v in zip(split_by, key, strict=True))
                    ax.plot(
                        xs,
                        mean,
                        color=color,
                        ls=dash_of.get(key, "-"),
                        lw=1.5,
                        label=label,
                        marker="o" if kind == "run" else None,
                        ms=3.5,
                    )
                    if band != "none" and np.isfinite(half).any():
                        low = mean - half
                        if logy:
                            low = np.maximum(low, mean * 1e-3)
                        ax.fill_between(xs, low, mean + half, color=color, alpha=0.18, lw=0)
                    if kind == "trace":
                        statuses = runs[runs["run_id"].isin(line["run_id"].unique())]["status"]
                        if len(statuses) and (statuses == "diverged").all():
                            end = mean[-1] if top is None else min(mean[-1], top)
                            ax.plot(xs[-1], end, "x", color=color, ms=8, mew=2, clip_on=False)
                            any_diverged = True
                    lines += 1
            if logy:
                ax.set_yscale("log")
            if logx:
                ax.set_xscale("log")
                if data[x].nunique() <= 12:
                    style.lr_ticks(ax, data[x].unique())
            if top is not None:
                ax.set_ylim(top=top)
            ax.grid(True, which="major", alpha=0.3)
            heading = [f"{c}={style.fmt_value(v)}" for c, v in ((row, row_value), (col, col_value)) if c]
            # one heading part per line, each wrapped to the panel: long spec strings never run into the
            # neighbouring panel's title
            ax.set_title("\n".join(textwrap.fill(h, 42) for h in heading), fontsize=9)
            if not ax.lines:
                ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
    n_seeds = (
        runs.groupby([c for c in CONFIG_FIELDS if c != "seed" and c in runs.columns], dropna=False)["seed"]
        .nunique()
        .max()
    )
    band_text = {
        "std": "band: ±1 std over seeds",
        "ci95": "band: 95% interval of the mean over seeds",
        "none": "no band",
    }[band]
    subtitle = f"mean over {n_seeds} seed{'s' if n_seeds != 1 else ''}" + (
        f"; {band_text}" if n_seeds > 1 else ""
    )
    if any_diverged:
        subtitle += "; x: every seed diverged" + (
            " (at the top edge when off scale)" if top is not None else ""
        )
    if split_by:
        subtitle += f"; lines also split by {', '.join(split_by)}"
    # Centre the title over the panels (not the panels + legend) and wrap it to their width, so a tall
    # legend on the right never runs into it.
    panels_w = 3.9 * n_cols
    text = "\n".join(textwrap.fill(line, int(panels_w * 12)) for line in (title or f"{y} vs {x}", subtitle))
    fig.suptitle(text, fontsize=10, x=(0.3 + panels_w / 2) / fig.get_figwidth())
    fig.supxlabel(style.axis_label(x) + (" (log scale)" if logx else ""), fontsize=10)
    fig.supylabel(style.axis_label(y) + (" (log scale)" if logy else ""), fontsize=10)
    style.figure_legend(fig, axes, title=hue, ncol=legend_cols)
    return FacetResult(style.save(fig, path), row_values, col_values, lines, split_by)


def default_name(y: str, x: str, hue: str | None, col: str | None, row: str | None) -> str:
    parts = [f"{y}_vs_{x}"] + [f"by_{c}" for c in (hue, col, row) if c]
    return "plot_" + "_".join(parts)
