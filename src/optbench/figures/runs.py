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


def loss_vs_step(runs, traces, path: Path, title: str = "loss vs step per learning rate") -> Path:
    """One line per lr on a log y axis; diverged runs end with an x at their last finite point."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = value_colors(runs["lr"].tolist())
    labelled = set()
    for _, row in runs.sort_values(["lr", "seed"]).iterrows():
        trace = traces[traces["run_id"] == row["run_id"]].sort_values("step")
        loss = trace["loss"].to_numpy(dtype=float)
        ok = np.isfinite(loss) & (loss > 0)
        color = colors[row["lr"]]
        diverged = row["status"] == "diverged"
        label = f"lr={row['lr']:.4g}" + (" (diverged)" if diverged else "")
        ax.plot(
            trace["step"].to_numpy()[ok],
            loss[ok],
            color=color,
            lw=1.5,
            label=None if label in labelled else label,
        )
        labelled.add(label)
        if diverged and ok.any():
            last = np.flatnonzero(ok)[-1]
            ax.plot(trace["step"].to_numpy()[last], loss[last], "x", color=color, ms=8, mew=2)
    ax.set_yscale("log")
    ax.set_xlabel(axis_label("step"))
    ax.set_ylabel(axis_label("loss"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    legend_outside(ax, ncol=1 if len(colors) <= 14 else 2, title="x: diverged")
    return save(fig, path)


def _diverged_from(data) -> float | None:
    """Smallest lr from which every run (at that lr and above) diverged; None if there is no such lr."""
    by_lr = data.groupby("lr")["status"].apply(lambda s: bool((s == "diverged").all())).sort_index()
    start = None
    for lr, all_diverged in by_lr.items():
        start = (lr if start is None else start) if all_diverged else None
    return start


def _draw_sensitivity(ax, data, bound: float | None, logx: bool, legend: bool = True) -> None:  # noqa: C901 - to split (#13)
    """Final loss per lr: ok runs as dots with a median line, 0 as triangles, diverged as x at the top."""
    data = data[data["status"].isin(["ok", "diverged"])].sort_values("lr")
    ok = data[data["status"] == "ok"]
    diverged = data[data["status"] == "diverged"]
    positive = ok[ok["final_loss"] > 0]
    if len(positive):
        median = positive.groupby("lr")["final_loss"].median()
        ax.plot(
            median.index,
            median.to_numpy(),
            "-",
            color="tab:blue",
            lw=1.5,
            label="final loss (median over seeds)" if positive["seed"].nunique() > 1 else "final loss",
        )
        ax.plot(positive["lr"], positive["final_loss"], "o", color="tab:blue", ms=4)
    zero = ok[ok["final_loss"] <= 0]
    floor = positive["final_loss"].min() if len(positive) else 1e-45
    if len(zero):
        ax.plot(
            zero["lr"], [floor] * len(zero), "v", color="tab:blue", ms=7, label="final loss 0 (underflow)"
        )
    top = max(positive["final_loss"].max() if len(positive) else 1.0, 1.0) * 10
    if len(diverged):
        ax.plot(diverged["lr"], [top] * len(diverged), "x", color="tab:red", ms=9, mew=2, label="diverged")
    lrs = data["lr"].to_numpy(dtype=float)
    if len(lrs):
        lo, hi = lrs.min(), lrs.max()
        if bound is not None:
            lo, hi = min(lo, bound), max(hi, bound)
        if logx:
            pad = (hi / lo) ** 0.04 if hi > lo else 1.5
            ax.set_xlim(lo / pad, hi * pad)
        else:
            pad = 0.04 * (hi - lo) if hi > lo else 0.1 * hi
            ax.set_xlim(lo - pad, hi + pad)
        start = _diverged_from(data)
        if start is not None:
            ax.axvspan(start, ax.get_xlim()[1], color="tab:red", alpha=0.08, label="diverged region")
    if bound is not None:
        ax.axvline(bound, color="k", ls="--", lw=1.2, label="analytic bound 2(1+m)/L")
        ax.annotate(
            f"{bound:.3g}",
            (bound, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 4),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
        lr_ticks(ax, np.unique(lrs))
    ax.grid(True, which="major", alpha=0.3)
    if legend:
        legend_outside(ax)


def final_loss_vs_lr(
    runs,
    path: Path,
    bound: float | None = None,
    logx: bool = False,
    title: str = "final loss vs learning rate",
) -> Path:
    """Sensitivity curve: final loss per lr, diverged lrs marked and shaded, the analytic bound dashed."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    _draw_sensitivity(ax, runs, bound, logx)
    ax.set_xlabel(axis_label("lr") + (" (log scale)" if logx else ""))
    ax.set_ylabel(axis_label("final_loss"))
    ax.set_title(title)
    return save(fig, path)


def _group_label(key, by) -> str:
    """``problem=..., optimizer=adam, momentum=0.9``, wrapped so that neighbouring panel titles never overlap."""
    key = key if isinstance(key, tuple) else (key,)
    label = ", ".join(f"{c}={fmt_value(v)}" for c, v in zip(by, key, strict=True)) or "all runs"
    return textwrap.fill(label, 48, break_long_words=False, break_on_hyphens=False)


def sensitivity(
    runs,
    path: Path,
    by: list[str],
    bounds: dict | None = None,
    logx: bool = True,
    title: str = "final loss vs learning rate",
) -> Path:
    """``final_loss_vs_lr`` as small multiples, one panel per combination of the ``by`` columns.

    ``bounds`` maps a group key (tuple of the ``by`` values) to its analytic bound, where there is one.
    """
    groups = list(runs.groupby(by, dropna=False, sort=True)) if by else [((), runs)]
    n_rows, n_cols = grid_shape(len(groups))
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(4.3 * n_cols + 1.8, 3.3 * n_rows + 0.4),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for ax, (key, data) in zip(axes.flat, groups, strict=False):
        key = key if isinstance(key, tuple) else (key,)
        _draw_sensitivity(ax, data, (bounds or {}).get(key), logx, legend=False)
        ax.set_title(_group_label(key, by), fontsize=9)
    hide_unused(axes, len(groups))
    fig.supxlabel(axis_label("lr") + (" (log scale)" if logx else ""), fontsize=10)
    fig.supylabel(axis_label("final_loss"), fontsize=10)
    figure_legend(fig, axes)
    fig.suptitle(title)
    return save(fig, path)


# ------------------------------------------------------------------------------------- lr x momentum heatmap


def lr_momentum_heatmap(  # noqa: C901 - to split (#13)
    runs, path: Path, by: list[str] | None = None, title: str = "final loss over learning rate x momentum"
) -> Path:
    """Median final loss over seeds per (momentum, lr) cell on a log colour scale, one panel per group.

    A cell whose runs all diverged is drawn hatched red with "div"; "k/n div" marks cells where some seeds
    diverged (the colour is then the median of the others); grey "n/a" cells could not run (invalid/failed).
    """
    from matplotlib.colors import LogNorm

    by = by or []
    data = runs.assign(momentum=runs["momentum"].fillna(-1.0))  # -1: the optimizer's default momentum
    lrs = sorted(data["lr"].unique())
    moms = sorted(data["momentum"].unique())
    ok = data[(data["status"] == "ok") & (data["final_loss"] > 0)]
    finite = ok["final_loss"][np.isfinite(ok["final_loss"])]
    vmin, vmax = (finite.min(), finite.max()) if len(finite) else (1e-3, 1.0)
    if vmax <= vmin:
        vmax = vmin * 10
    norm = LogNorm(vmin=vmin, vmax=vmax)
    cmap = plt.get_cmap("viridis")
    groups = list(data.groupby(by, dropna=False, sort=True)) if by else [((), data)]
    n_rows, n_cols = grid_shape(len(groups), 2)
    cell_w = max(0.55, min(0.9, 9 / max(1, len(lrs))))
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        squeeze=False,
        layout="constrained",
        figsize=(n_cols * (1.6 + cell_w * len(lrs)) + 1.2, n_rows * (1.4 + 0.5 * len(moms)) + 0.4),
    )
    annotate = len(lrs) * len(moms) <= 160
    image = None
    for ax, (key, group) in zip(axes.flat, groups, strict=False):
        values = np.full((len(moms), len(lrs)), np.nan)
        for (mom, lr), cell in group.groupby(["momentum", "lr"]):
            i, j = moms.index(mom), lrs.index(lr)
            cell_ok = cell[(cell["status"] == "ok") & (cell["final_loss"] > 0)]
            n_div, n = int((cell["status"] == "diverged").sum()), len(cell)
            ran = cell["status"].isin(["ok", "diverged"]).any()
            if len(cell_ok):
                values[i, j] = cell_ok["final_loss"].median()
            elif (cell["status"] == "ok").any():  # every ok run reached exactly 0: the best colour
                values[i, j] = 0.0
            if not ran:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.85"))
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="0.3")
            elif n_div == n:
                ax.add_patch(
                    plt.Rectangle(
                        (j - 0.5, i - 0.5),
                        1,
                        1,
                        facecolor="mistyrose",
                        edgecolor="tab:red",
                        hatch="xx",
                        lw=0.0,
                    )
                )
                ax.text(
                    j,
                    i,
                    "div",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="tab:red",
                    weight="bold",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
                )
            elif annotate:
                text = f"{values[i, j]:.2g}"
                if n_div:
                    text += f"\n{n_div}/{n} div"
                shade = norm(max(values[i, j], vmin))
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white" if shade < 0.6 else "black",
                )
        shown = np.where(values == 0.0, vmin, values)  # exact zeros take the lowest colour
        image = ax.imshow(
            np.ma.masked_invalid(shown),
            origin="lower",
            aspect="auto",
            cmap=cmap,
            norm=norm,
            extent=(-0.5, len(lrs) - 0.5, -0.5, len(moms) - 0.5),
        )
        step = max(1, math.ceil(len(lrs) / 10))
        ax.set_xticks(range(0, len(lrs), step), [f"{v:.3g}" for v in lrs[::step]], rotation=45, ha="right")
        ax.set_yticks(range(len(moms)), ["default" if m < 0 else f"{m:.3g}" for m in moms])
        ax.set_xlabel(axis_label("lr"))
        ax.set_ylabel(axis_label("momentum"))
        key = key if isinstance(key, tuple) else (key,)
        if by:
            ax.set_title(_group_label(key, by), fontsize=9)
    hide_unused(axes, len(groups))
    fig.suptitle(title)
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, pad=0.02)
        bar.set_label("median final loss over seeds (log scale)")
    return save(fig, path)


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


def trajectories(runs, traces, path: Path, problem: str, title: str | None = None) -> Path:  # noqa: C901 - to split (#13)
    """Paths of the iterates on the contour lines of a 2-D toy function, one line per optimizer.

    With several optimizers: one panel per lr when there are at most 4 lrs, else one panel with each
    optimizer at its best lr. With one optimizer: one line per lr (at most 8, evenly chosen). "Best" means
    the lowest final loss over the remaining columns (momentum, scheduler, seed).
    """
    runs = runs[(runs["problem"] == problem) & runs["status"].isin(["ok", "diverged"])]
    if runs.empty:
        raise OptbenchError(f"no finished runs of {problem!r} to draw")
    optimizers = sorted(runs["optimizer"].unique())
    lrs = sorted(runs["lr"].unique())
    panels: list[tuple[str, object]] = []
    if len(optimizers) > 1 and len(lrs) <= 4:
        for lr in lrs:
            panels.append((f"lr = {lr:.4g}", _pick_best(runs[runs["lr"] == lr], "optimizer")))
        line_key = "optimizer"
    elif len(optimizers) > 1:
        panels.append(("each optimizer at its best lr", _pick_best(runs, "optimizer")))
        line_key = "optimizer"
    else:
        chosen = lrs if len(lrs) <= 8 else [lrs[round(i * (len(lrs) - 1) / 7)] for i in range(8)]
        panels.append((f"{optimizers[0]}, one line per lr", _pick_best(runs[runs["lr"].isin(chosen)], "lr")))
        line_key = "lr"

    paths = {}
    for _, picked in panels:
        for run_id in picked["run_id"]:
            trace = traces[traces["run_id"] == run_id].sort_values("step")
            paths[run_id] = trace[["x0", "x1"]].to_numpy(dtype=float)
    # Window: every non-diverged path (diverged ones would stretch it to 1e9), padded by 15 %.
    keep = [paths[r] for _, p in panels for r, s in zip(p["run_id"], p["status"], strict=True) if s == "ok"]
    keep = keep or [paths[r][:3] for r in paths]
    points = np.concatenate([p[np.isfinite(p).all(1)] for p in keep])
    (x_lo, y_lo), (x_hi, y_hi) = points.min(0), points.max(0)
    span = max(x_hi - x_lo, y_hi - y_lo, 0.5)
    x_lo, x_hi = x_lo - 0.15 * span, x_hi + 0.15 * span
    y_lo, y_hi = y_lo - 0.15 * span, y_hi + 0.15 * span
    xs, ys = np.linspace(x_lo, x_hi, 240), np.linspace(y_lo, y_hi, 240)
    surface = toy_surface(problem, xs, ys)
    shifted = surface - np.nanmin(surface)
    positive = shifted[shifted > 0]
    levels = np.geomspace(max(np.quantile(positive, 0.01), 1e-6), positive.max(), 18) if positive.size else 10

    colors = value_colors(runs[line_key].tolist())
    vary_momentum = runs["momentum"].astype(str).nunique() > 1
    n_rows, n_cols = grid_shape(len(panels), 2)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(5.4 * n_cols + 2.2, 4.6 * n_rows + 0.4), squeeze=False, layout="constrained"
    )
    for ax, (panel_title, picked) in zip(axes.flat, panels, strict=False):
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
        for _, run in picked.iterrows():
            xy = paths[run["run_id"]]
            value = run[line_key]
            label = f"{value} (lr={run['lr']:.3g}" if line_key == "optimizer" else f"lr={value:.4g}"
            if vary_momentum:
                label += f", m={fmt_value(run['momentum'])}"
            label += ")" if line_key == "optimizer" else ""
            if run["status"] == "diverged":
                label += " diverged"
            color = colors[value]
            ax.plot(xy[:, 0], xy[:, 1], "-", color=color, lw=1.6, label=label, alpha=0.9)
            ax.plot(xy[-1, 0], xy[-1, 1], "*", color=color, ms=11, mec="black", mew=0.5)
        start = next(iter(paths.values()))[0]
        ax.plot(*start, "o", color="black", ms=6, label="start")
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_xlabel(axis_label("x0"))
        ax.set_ylabel(axis_label("x1"))
        ax.set_title(panel_title, fontsize=9)
    hide_unused(axes, len(panels))
    figure_legend(fig, axes, loc="outside right center")
    fig.suptitle(
        title or f"{problem}: iterates on contour lines of f - min f (log-spaced); * = last point",
        fontsize=10,
    )
    return save(fig, path)
