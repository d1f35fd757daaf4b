"""Figures of a grid's runs, drawn from results DataFrames (never from the engine: plotting reads
Parquet, nothing else): loss vs step, final loss vs lr (sensitivity), the lr x momentum heatmap, and
iterates on a toy function's contour lines.

Every function takes DataFrames (rows of runs.parquet / traces) and a ``path``; the suffix of ``path``
picks the format (``.png``, ``.svg`` or ``.pdf``). ``trajectories`` reaches beyond Parquet on purpose, into
"what can be run" (never into the engine): it evaluates the toy function for its contour lines.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from optbench.errors import OptbenchError  # noqa: E402
from optbench.figures.style import (  # noqa: E402
    axis_label,
    bounded_figsize,
    figure_legend,
    fmt_value,
    grid_shape,
    hide_unused,
    legend_outside,
    lr_ticks,
    save,
    value_colors,
)

# --------------------------------------------------------------------------------------- lr-sweep picture

MAX_LEGEND_LRS = 12  # more lrs than this get a colour bar instead of legend entries


def loss_vs_step(runs, traces, path: Path, title: str = "loss vs step per learning rate") -> Path:
    """One line per lr on a log y axis; diverged runs end with an x at their last finite point. Up to
    ``MAX_LEGEND_LRS`` lrs are named in the legend, more get a colour bar (log lr)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    colors = value_colors(runs["lr"].tolist())
    named, diverged = set(), False
    for _, row in runs.sort_values(["lr", "seed"]).iterrows():
        trace = traces[traces["run_id"] == row["run_id"]].sort_values("step")
        label = f"lr={row['lr']:.4g}" if len(colors) <= MAX_LEGEND_LRS and row["lr"] not in named else None
        named.add(row["lr"])
        diverged |= _draw_run(ax, trace, colors[row["lr"]], label, row["status"] == "diverged")
    ax.set_yscale("log")
    ax.set_xlabel(axis_label("step"))
    ax.set_ylabel(axis_label("loss"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if diverged:
        ax.plot([], [], "x", color="0.3", mew=2, label="diverged (last finite loss)")
    if len(colors) > MAX_LEGEND_LRS:
        _lr_colorbar(fig, ax, sorted(colors))
    legend_outside(ax)
    return save(fig, path)


def _draw_run(ax, trace, color, label: str | None, diverged: bool) -> bool:
    loss = trace["loss"].to_numpy(dtype=float)
    steps = trace["step"].to_numpy()
    ok = np.isfinite(loss) & (loss > 0)
    ax.plot(steps[ok], loss[ok], color=color, lw=1.5, label=label)
    if diverged and ok.any():
        last = np.flatnonzero(ok)[-1]
        ax.plot(steps[last], loss[last], "x", color=color, ms=8, mew=2)
        return True
    return False


def _lr_colorbar(fig, ax, lrs) -> None:
    """A colour bar for lrs coloured by rank (``value_colors``): one ticked band per measured lr."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    colors = value_colors(lrs)
    cmap = ListedColormap([colors[v] for v in lrs])
    norm = BoundaryNorm(np.arange(len(lrs) + 1) - 0.5, len(lrs))
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    step = max(1, math.ceil(len(lrs) / 10))
    bar.set_ticks(range(0, len(lrs), step), labels=[f"{v:.3g}" for v in lrs[::step]])
    bar.set_label(axis_label("lr"))


def _diverged_from(data) -> float | None:
    """Smallest lr from which every run (at that lr and above) diverged; None if there is no such lr."""
    by_lr = data.groupby("lr")["status"].apply(lambda s: bool((s == "diverged").all())).sort_index()
    start = None
    for lr, all_diverged in by_lr.items():
        start = (lr if start is None else start) if all_diverged else None
    return start


def draw_sensitivity(ax, data, bound: float | None, logx: bool, legend: bool = True) -> None:
    """Final loss per lr: ok runs as dots with a median line, 0 as triangles, diverged as x at the top."""
    data = data[data["status"].isin(["ok", "diverged"])].sort_values("lr")
    ok = data[data["status"] == "ok"]
    positive = ok[ok["final_loss"] > 0]
    _draw_final_losses(ax, ok, positive)
    diverged = data[data["status"] == "diverged"]
    if len(diverged):
        top = max(positive["final_loss"].max() if len(positive) else 1.0, 1.0) * 10
        ax.plot(diverged["lr"], [top] * len(diverged), "x", color="tab:red", ms=9, mew=2, label="diverged")
    lrs = data["lr"].to_numpy(dtype=float)
    if len(lrs):
        _lr_window(ax, lrs, bound, logx)
        start = _diverged_from(data)
        if start is not None:
            ax.axvspan(start, ax.get_xlim()[1], color="tab:red", alpha=0.08, label="diverged region")
    if bound is not None:
        draw_bound(ax, bound)
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
        lr_ticks(ax, np.unique(lrs))
    ax.grid(True, which="major", alpha=0.3)
    if legend:
        legend_outside(ax)


def _draw_final_losses(ax, ok, positive) -> None:
    if len(positive):
        median = positive.groupby("lr")["final_loss"].median()
        several = positive["seed"].nunique() > 1
        label = "final loss (median over seeds)" if several else "final loss"
        ax.plot(median.index, median.to_numpy(), "-", color="tab:blue", lw=1.5, label=label)
        ax.plot(positive["lr"], positive["final_loss"], "o", color="tab:blue", ms=4)
    zero = ok[ok["final_loss"] <= 0]
    if len(zero):
        floor = positive["final_loss"].min() if len(positive) else 1e-45
        ax.plot(
            zero["lr"], [floor] * len(zero), "v", color="tab:blue", ms=7, label="final loss 0 (underflow)"
        )


def _lr_window(ax, lrs, bound: float | None, logx: bool) -> None:
    """x limits around the measured lrs (and the bound), padded 4 %."""
    lo, hi = lrs.min(), lrs.max()
    if bound is not None:
        lo, hi = min(lo, bound), max(hi, bound)
    if logx:
        pad = (hi / lo) ** 0.04 if hi > lo else 1.5
        ax.set_xlim(lo / pad, hi * pad)
    else:
        pad = 0.04 * (hi - lo) if hi > lo else 0.1 * hi
        ax.set_xlim(lo - pad, hi + pad)


def draw_bound(ax, bound: float) -> None:
    """The analytic stability bound 2(1+m)/L as a dashed vertical line, its value at the foot."""
    ax.axvline(bound, color="k", ls="--", lw=1.2, label="analytic bound 2(1+m)/L")
    ax.annotate(
        f"{bound:.3g}",
        (bound, 0.0),
        xycoords=("data", "axes fraction"),
        xytext=(3, 4),
        textcoords="offset points",
        fontsize=8,
    )


def final_loss_vs_lr(
    runs,
    path: Path,
    bound: float | None = None,
    logx: bool = False,
    title: str = "final loss vs learning rate",
) -> Path:
    """Sensitivity curve: final loss per lr, diverged lrs marked and shaded, the analytic bound dashed."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    draw_sensitivity(ax, runs, bound, logx)
    ax.set_xlabel(axis_label("lr") + (" (log scale)" if logx else ""))
    ax.set_ylabel(axis_label("final_loss"))
    ax.set_title(title)
    return save(fig, path)


def _group_label(key, by) -> str:
    """``problem=..., optimizer=adam, momentum=0.9``, wrapped so that neighbouring panel titles never overlap."""
    key = key if isinstance(key, tuple) else (key,)
    label = ", ".join(f"{c}={fmt_value(v)}" for c, v in zip(by, key, strict=True)) or "all runs"
    return textwrap.fill(label, 48, break_long_words=False, break_on_hyphens=False)


def sensitivity_figure(runs, bounds: dict | None = None, title: str | None = None, top: int = 8):
    """Final loss vs lr (log x when the lrs span 10x), one panel per optimizer (and problem or scheduler
    where they vary), one line per momentum (else scheduler, else the axis with most values), the best
    ``top`` lines per panel in colour; the lrs from which every run of a panel diverged shaded red; an x
    at the top where every seed of a line diverged; the analytic bound 2(1+m)/L dashed in its momentum's
    colour where one applies.

    ``runs`` as runs.parquet; ``bounds`` maps (problem, optimizer, momentum) to a bound. Returns
    (Figure, FacetResult).
    """
    from optbench.figures import facets
    from optbench.grid.summary import axis_frame, varying_axes

    frame = axis_frame(runs[runs["status"].isin(["ok", "diverged"])])
    varying = varying_axes(frame)
    hue = next((c for c in ("momentum", "scheduler") if c in varying), "auto")
    spec = facets.resolve(frame, y="final_loss", x="lr", hue=hue, band="range", top=top)
    fig, result = facets.facet_figure(frame, None, spec, title or "final loss vs learning rate")
    shaded = dashed = False
    for ax, (row_value, col_value) in zip(fig.axes, result.panels, strict=False):
        panel = facets.select_panel(frame, spec, row_value, col_value)
        start = _diverged_from(panel)
        if start is not None:
            ax.axvspan(start, ax.get_xlim()[1], color="tab:red", alpha=0.08, lw=0)
            shaded = True
        dashed |= _panel_bounds(ax, panel, bounds or {}, result.colours if spec.hue == "momentum" else {})
    handles = list(fig.legends[0].legend_handles) if fig.legends else []
    if shaded:
        handles.append(matplotlib.patches.Patch(color="tab:red", alpha=0.15, label="every run diverged"))
    if dashed:
        handles.append(plt.Line2D([], [], color="0.25", ls="--", label="bound 2(1+m)/L"))
    facets.legend(fig, handles)
    return fig, result


def _panel_bounds(ax, panel, bounds: dict, colours: dict) -> bool:
    """The analytic bound of each (problem, optimizer, momentum) in the panel, dashed in its line's colour."""
    keys = panel[["problem_spec", "optimizer", "momentum"]].drop_duplicates()
    drawn = False
    for problem, optimizer, momentum in keys.itertuples(index=False):
        bound = bounds.get((problem, optimizer, momentum))
        if bound is not None:
            ax.axvline(bound, color=colours.get(momentum, "k"), ls="--", lw=1.0, alpha=0.9)
            drawn = True
    return drawn


def sensitivity(runs, path: Path, bounds: dict | None = None, title: str | None = None) -> Path:
    """``sensitivity_figure`` saved to ``path``; where no run finished with a positive loss (every run
    diverged), one panel of x marks over the shaded region: that is the answer, not a missing figure."""
    finished = runs[(runs["status"] == "ok") & (runs["final_loss"] > 0)]
    if finished.empty:
        return _nothing_finished(runs, path, title or "final loss vs learning rate")
    fig, _ = sensitivity_figure(runs, bounds, title)
    return save(fig, path)


def _nothing_finished(runs, path: Path, title: str) -> Path:
    """Every lr tried, each an x in the shaded region: no loss to plot, so no y scale that would suggest one."""
    lrs = np.unique(runs["lr"].to_numpy(dtype=float))
    logx = bool(len(lrs)) and lrs.min() > 0 and lrs.max() / lrs.min() >= 10
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    ax.plot(lrs, np.ones(len(lrs)), "x", color="tab:red", ms=9, mew=2, label="diverged")
    _lr_window(ax, lrs, None, logx)
    ax.axvspan(*ax.get_xlim(), color="tab:red", alpha=0.08, label="diverged region")
    if logx:
        ax.set_xscale("log")
        lr_ticks(ax, lrs)
    ax.set_yticks([])
    ax.set_ylabel("no final loss")
    ax.set_xlabel(axis_label("lr") + (" (log scale)" if logx else ""))
    ax.set_title(f"{title}: every run diverged")
    legend_outside(ax)
    return save(fig, path)


# ------------------------------------------------------------------------------------- lr x momentum heatmap

MIN_CELL_IN = (0.42, 0.24)  # a cell smaller than this (inches) gets no number: 6.5 pt text would not fit


def heatmap_figure(
    runs, by: list[str] | None = None, title: str = "final loss over learning rate x momentum"
):
    """Median final loss over seeds per (momentum, lr) cell on one log colour scale, one panel per group.

    The lowest median of each panel is framed white. A cell whose runs all diverged is drawn hatched red
    ("div" where cells are large enough); "k/n div"
    marks cells where some seeds diverged (the colour is then the median of the others); grey "n/a" cells
    could not run. Numbers are written only when a cell is at least ``MIN_CELL_IN``; the figure stays within
    ``MAX_FIGSIZE`` and at most 8 lr ticks are labelled.
    """
    by = by or []
    data = runs.assign(momentum=runs["momentum"].fillna(-1.0))  # -1: the optimizer's default momentum
    lrs, moms = sorted(data["lr"].unique()), sorted(data["momentum"].unique())
    norm = _loss_norm(data)
    groups = list(data.groupby(by, dropna=False, sort=True)) if by else [((), data)]
    n_rows, n_cols = grid_shape(len(groups), 2)
    width = min(12.0, n_cols * (1.4 + MIN_CELL_IN[0] * len(lrs)) + 1.4)
    cell_w = ((width - 1.4) / n_cols - 1.4) / len(lrs)
    cell_h = min(max(cell_w, MIN_CELL_IN[1]), MIN_CELL_IN[0])
    size = bounded_figsize(width, n_rows * (1.6 + cell_h * len(moms)) + 0.6)
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, layout="constrained", figsize=size)
    annotate = cell_w >= MIN_CELL_IN[0] and cell_h >= MIN_CELL_IN[1] and size[0] == width
    image, finished = None, False
    for ax, (key, group) in zip(axes.flat, groups, strict=False):
        values = _heatmap_panel(ax, group, lrs, moms, norm, annotate)
        image = _heatmap_image(ax, values, lrs, moms, norm)
        finished |= bool(np.isfinite(values).any())
        if by:
            ax.set_title(_group_label(key, by), fontsize=9)
    hide_unused(axes, len(groups))
    fig.suptitle(
        title + ("" if annotate else " (cells too small for numbers: see bench summary)"), fontsize=10
    )
    if (
        image is not None and finished
    ):  # no cell finished (every run diverged): a colour bar would mean nothing
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, pad=0.02)
        bar.set_label("median final loss over seeds (log scale)")
    return fig


def lr_momentum_heatmap(
    runs, path: Path, by: list[str] | None = None, title: str = "final loss over learning rate x momentum"
) -> Path:
    """``heatmap_figure`` saved to ``path``."""
    return save(heatmap_figure(runs, by, title), path)


def _loss_norm(data):
    from matplotlib.colors import LogNorm

    ok = data[(data["status"] == "ok") & (data["final_loss"] > 0)]
    finite = ok["final_loss"][np.isfinite(ok["final_loss"])]
    vmin, vmax = (finite.min(), finite.max()) if len(finite) else (1e-3, 1.0)
    return LogNorm(vmin=vmin, vmax=vmax if vmax > vmin else vmin * 10)


def _heatmap_panel(ax, group, lrs, moms, norm, annotate: bool):
    """Median final loss per cell (NaN where none finished); marks the diverged and n/a cells."""
    values = np.full((len(moms), len(lrs)), np.nan)
    for (mom, lr), cell in group.groupby(["momentum", "lr"]):
        i, j = moms.index(mom), lrs.index(lr)
        cell_ok = cell[(cell["status"] == "ok") & (cell["final_loss"] > 0)]
        if len(cell_ok):
            values[i, j] = cell_ok["final_loss"].median()
        elif (cell["status"] == "ok").any():  # every ok run reached exactly 0: the best colour
            values[i, j] = 0.0
        _mark_cell(ax, cell, i, j, values[i, j], norm, annotate)
    if np.isfinite(values).any():  # the panel's best cell, framed
        i, j = np.unravel_index(np.nanargmin(values), values.shape)
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", lw=2.2, zorder=4))
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=0.8, zorder=5))
    return values


def _mark_cell(ax, cell, i: int, j: int, value: float, norm, annotate: bool) -> None:
    n_div, n = int((cell["status"] == "diverged").sum()), len(cell)
    if not cell["status"].isin(["ok", "diverged"]).any():
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.85"))
        text, colour = "n/a", "0.3"
    elif n_div == n:
        ax.add_patch(
            plt.Rectangle(
                (j - 0.5, i - 0.5), 1, 1, facecolor="mistyrose", edgecolor="tab:red", hatch="xx", lw=0.0
            )
        )
        text, colour = "div", "darkred"
    else:
        text = f"{value:.2g}" + (f"\n{n_div}/{n} div" if n_div else "")
        colour = "white" if norm(max(value, norm.vmin)) < 0.6 else "black"
    if annotate:  # on a white box where the cell is hatched, so the label never sits on the red lines
        box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"} if text == "div" else None
        ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=colour, bbox=box)


def _heatmap_image(ax, values, lrs, moms, norm):
    shown = np.where(values == 0.0, norm.vmin, values)  # exact zeros take the lowest colour
    image = ax.imshow(
        np.ma.masked_invalid(shown),
        origin="lower",
        aspect="auto",
        cmap="viridis",
        norm=norm,
        extent=(-0.5, len(lrs) - 0.5, -0.5, len(moms) - 0.5),
    )
    step = max(1, math.ceil(len(lrs) / 8))
    ax.set_xticks(range(0, len(lrs), step), [f"{v:.2g}" for v in lrs[::step]], rotation=45, ha="right")
    ax.set_yticks(range(len(moms)), ["default" if m < 0 else f"{m:.3g}" for m in moms])
    ax.tick_params(labelsize=8)
    ax.set_xlabel(axis_label("lr"), fontsize=9)
    ax.set_ylabel(axis_label("momentum"), fontsize=9)
    return image


# ------------------------------------------------------------------------------ trajectories on contours


def toy_surface(problem: str, xs, ys):
    """f on the grid xs x ys for a 2-D toy problem (evaluates the registered function, vectorised)."""
    import torch

    from optbench.registry.problems import build_problem

    fn = build_problem(problem, device="cpu").fn
    gx, gy = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float64)
    with torch.no_grad():
        try:
            values = torch.func.vmap(fn)(points)
        except Exception:  # noqa: BLE001 - a user function vmap cannot trace: evaluate point by point
            values = torch.stack([fn(p) for p in points])
    return values.numpy().reshape(gx.shape)


def _pick_best(runs, key: str):
    """Per value of ``key``, the run with the lowest final loss (ok runs first, then diverged)."""
    ranked = runs.assign(
        _bad=(runs["status"] != "ok").astype(int), _loss=runs["final_loss"].fillna(np.inf)
    ).sort_values(["_bad", "_loss"])
    return ranked.groupby(key, sort=True).head(1).sort_values(key)


def trajectories(runs, traces, path: Path, problem: str, title: str | None = None) -> Path:
    """Paths of the iterates on the contour lines of a 2-D toy function, one line per optimizer.

    With several optimizers: one panel per lr when there are at most 4 lrs, else one panel with each
    optimizer at its best lr. With one optimizer: one line per lr (at most 8, evenly chosen). "Best" means
    the lowest final loss over the remaining columns (momentum, scheduler, seed).
    """
    runs = runs[(runs["problem"] == problem) & runs["status"].isin(["ok", "diverged"])]
    if runs.empty:
        raise OptbenchError(f"no finished runs of {problem!r} to draw")
    panels, line_key = _trajectory_panels(runs)
    paths = {
        run_id: traces[traces["run_id"] == run_id].sort_values("step")[["x0", "x1"]].to_numpy(dtype=float)
        for _, picked in panels
        for run_id in picked["run_id"]
    }
    window = _trajectory_window(panels, paths)
    surface = _contours(problem, window)
    colors = value_colors(runs[line_key].tolist())
    vary_momentum = runs["momentum"].astype(object).map(str).nunique() > 1
    n_rows, n_cols = grid_shape(len(panels), 2)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(5.4 * n_cols + 2.2, 4.6 * n_rows + 0.4), squeeze=False, layout="constrained"
    )
    start = next(iter(paths.values()))[0]
    for ax, (panel_title, picked) in zip(axes.flat, panels, strict=False):
        _draw_contours(ax, surface, window)
        for _, run in picked.iterrows():
            _draw_path(ax, paths[run["run_id"]], run, line_key, colors[run[line_key]], vary_momentum)
        ax.plot(*start, "o", color="black", ms=6, label="start")
        ax.set_title(panel_title, fontsize=9)
    hide_unused(axes, len(panels))
    figure_legend(fig, axes, loc="outside right center")
    fig.suptitle(
        title or f"{problem}: iterates on contour lines of f - min f (log-spaced); * = last point",
        fontsize=10,
    )
    return save(fig, path)


def _trajectory_panels(runs):
    """[(panel title, the runs drawn in it)] and the column that names each line."""
    optimizers = sorted(runs["optimizer"].unique())
    lrs = sorted(runs["lr"].unique())
    if len(optimizers) > 1 and len(lrs) <= 4:
        return [
            (f"lr = {lr:.4g}", _pick_best(runs[runs["lr"] == lr], "optimizer")) for lr in lrs
        ], "optimizer"
    if len(optimizers) > 1:
        return [("each optimizer at its best lr", _pick_best(runs, "optimizer"))], "optimizer"
    chosen = lrs if len(lrs) <= 8 else [lrs[round(i * (len(lrs) - 1) / 7)] for i in range(8)]
    picked = _pick_best(runs[runs["lr"].isin(chosen)], "lr")
    return [(f"{optimizers[0]}, one line per lr", picked)], "lr"


def _trajectory_window(panels, paths) -> tuple[float, float, float, float]:
    """(x_lo, x_hi, y_lo, y_hi): every non-diverged path (diverged ones would stretch it to 1e9), +15 %."""
    keep = [paths[r] for _, p in panels for r, s in zip(p["run_id"], p["status"], strict=True) if s == "ok"]
    keep = keep or [paths[r][:3] for r in paths]
    points = np.concatenate([p[np.isfinite(p).all(1)] for p in keep])
    (x_lo, y_lo), (x_hi, y_hi) = points.min(0), points.max(0)
    span = max(x_hi - x_lo, y_hi - y_lo, 0.5)
    return x_lo - 0.15 * span, x_hi + 0.15 * span, y_lo - 0.15 * span, y_hi + 0.15 * span


def _contours(problem: str, window):
    """(xs, ys, f - min f, log-spaced levels) over the window."""
    x_lo, x_hi, y_lo, y_hi = window
    xs, ys = np.linspace(x_lo, x_hi, 240), np.linspace(y_lo, y_hi, 240)
    shifted = toy_surface(problem, xs, ys)
    shifted = shifted - np.nanmin(shifted)
    positive = shifted[shifted > 0]
    levels = np.geomspace(max(np.quantile(positive, 0.01), 1e-6), positive.max(), 18) if positive.size else 10
    return xs, ys, shifted, levels


def _draw_contours(ax, surface, window) -> None:
    xs, ys, shifted, levels = surface
    ax.contourf(
        xs,
        ys,
        np.maximum(shifted, np.min(levels) / 2),
        levels=levels,
        cmap="Greys",
        alpha=0.35,
        norm=matplotlib.colors.LogNorm(),
    )
    ax.contour(xs, ys, shifted, levels=levels, colors="0.55", linewidths=0.5)
    ax.set_xlim(window[0], window[1])
    ax.set_ylim(window[2], window[3])
    ax.set_xlabel(axis_label("x0"))
    ax.set_ylabel(axis_label("x1"))


def _draw_path(ax, xy, run, line_key: str, color, vary_momentum: bool) -> None:
    value = run[line_key]
    label = f"{value} (lr={run['lr']:.3g}" if line_key == "optimizer" else f"lr={value:.4g}"
    if vary_momentum:
        label += f", m={fmt_value(run['momentum'])}"
    label += ")" if line_key == "optimizer" else ""
    if run["status"] == "diverged":
        label += " diverged"
    ax.plot(xy[:, 0], xy[:, 1], "-", color=color, lw=1.6, label=label, alpha=0.9)
    ax.plot(xy[-1, 0], xy[-1, 1], "*", color=color, ms=11, mec="black", mew=0.5)
