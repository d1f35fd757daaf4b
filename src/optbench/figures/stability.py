"""Figures of stability: the sharpness along each run against its threshold (the edge-of-stability picture),
and final loss vs lr with the bound predicted from the initial sharpness and the catapult region.

Drawn from results DataFrames (runs.parquet rows, traces with the ``sharpness`` / ``precond_sharpness``
columns); the thresholds come from ``experiments.stability`` (2(1+m)/lr for heavy-ball SGD,
(2 + 2 beta1)/((1 - beta1) lr) = 38/lr for Adam/AdamW's preconditioned sharpness).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from optbench.errors import OptbenchError  # noqa: E402
from optbench.experiments.stability import run_threshold  # noqa: E402
from optbench.figures.runs import draw_sensitivity  # noqa: E402
from optbench.figures.style import (  # noqa: E402
    axis_label,
    figure_legend,
    fmt_value,
    legend_outside,
    save,
    value_colors,
)

SHARPNESS_COLUMNS = ("sharpness", "precond_sharpness")
MAX_RUNS = 8  # runs drawn in the sharpness figure (evenly chosen by lr when there are more)
MAX_DIVERGED = 2  # of which diverged ones, when others are left out
THRESHOLD_NAMES = {"sharpness": "2(1+m)/lr", "precond_sharpness": "(2+2β1)/((1-β1)lr)"}


def tracked_columns(traces) -> list[str]:
    """The sharpness columns with at least one measured value (none in a folder written before them)."""
    return [c for c in SHARPNESS_COLUMNS if c in traces.columns and traces[c].notna().any()]


def sharpness_figure(runs, traces, title: str = "sharpness vs step"):
    """Training loss (top) and each tracked sharpness column (below) per step, one colour per run, with the
    run's stability threshold dashed in its colour. At most ``MAX_RUNS`` runs (evenly chosen by lr)."""
    columns = tracked_columns(traces)
    if not columns:
        raise OptbenchError("no run of this folder tracked its sharpness (--sharpness-every K)")
    measured = set(traces.loc[traces[columns].notna().any(axis=1), "run_id"])
    chosen = _choose(runs[runs["run_id"].isin(measured)])
    labels = _labels(chosen)
    colors = value_colors(list(range(len(chosen))))
    fig, axes = plt.subplots(
        1 + len(columns), 1, figsize=(8.0, 2.6 + 2.6 * len(columns)), sharex=True, layout="constrained"
    )
    by_run = {run_id: trace.sort_values("step") for run_id, trace in traces.groupby("run_id")}
    for i, (_, run) in enumerate(chosen.iterrows()):
        trace, color = by_run[run["run_id"]], colors[i]
        _draw_loss(axes[0], trace, color, labels[i])
        for ax, column in zip(axes[1:], columns, strict=True):
            _draw_sharpness(ax, trace, column, run, color)
    _finish(axes, columns)
    figure_legend(fig, axes, loc="outside right upper")
    axes[0].set_title(textwrap.fill(title, 72), fontsize=10)
    return fig


def sharpness_vs_step(runs, traces, path: Path, title: str = "sharpness vs step") -> Path:
    """``sharpness_figure`` saved to ``path``."""
    return save(sharpness_figure(runs, traces, title), path)


def _choose(runs):
    """At most ``MAX_RUNS`` runs in lr order: the smallest ``MAX_DIVERGED`` diverged lrs, the rest evenly
    chosen among the runs that did not diverge (their sharpness is the story; a diverged one ends early)."""
    ordered = runs.sort_values(["lr", "seed", "run_id"])
    diverged = ordered[ordered["status"] == "diverged"]
    finished = ordered[ordered["status"] != "diverged"]
    diverged = diverged.iloc[: max(MAX_DIVERGED, MAX_RUNS - len(finished))]
    room = MAX_RUNS - len(diverged)
    if len(finished) > room:
        picks = sorted({round(i * (len(finished) - 1) / max(room - 1, 1)) for i in range(room)})
        finished = finished.iloc[picks]
    return pd.concat([finished, diverged]).sort_values(["lr", "seed", "run_id"])


def _labels(runs) -> list[str]:
    """``lr=0.1`` plus the settings that differ between the drawn runs."""
    varying = [c for c in ("problem", "optimizer", "momentum", "seed") if runs[c].astype(str).nunique() > 1]
    return [
        ", ".join([f"lr={run['lr']:.4g}", *(f"{c}={fmt_value(run[c])}" for c in varying)])
        + (" (diverged)" if run["status"] == "diverged" else "")
        for _, run in runs.iterrows()
    ]


def _draw_loss(ax, trace, color, label: str) -> None:
    loss = trace["loss"].to_numpy(float)
    ok = np.isfinite(loss) & (loss > 0)
    ax.plot(trace["step"].to_numpy()[ok], loss[ok], color=color, lw=1.2, label=label)


def _draw_sharpness(ax, trace, column: str, run, color) -> None:
    values = trace[column].to_numpy(float)
    ok = np.isfinite(values)
    ax.plot(trace["step"].to_numpy()[ok], values[ok], "-", marker=".", ms=3, color=color, lw=1.3)
    threshold = run_threshold(column, run["optimizer"], _momentum(run), float(run["lr"]))
    if threshold is not None:
        ax.axhline(threshold, color=color, ls="--", lw=1.0, alpha=0.9)


def _momentum(run) -> float | None:
    value = run["momentum"]
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def _finish(axes, columns: list[str]) -> None:
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss", fontsize=9)
    for ax, column in zip(axes[1:], columns, strict=True):
        values = np.concatenate([line.get_ydata() for line in ax.get_lines()]).astype(float)
        if values.size and np.nanmin(values) > 0:
            ax.set_yscale("log")
        ax.set_ylabel(axis_label(column), fontsize=9)
        ax.plot([], [], "--", color="0.3", lw=1.0, label=f"threshold {THRESHOLD_NAMES[column]}")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].set_xlabel(axis_label("step"))


# --------------------------------------------------------------------------------------- final loss vs lr


def bound_figure(
    runs,
    *,
    analytic_bound: float | None = None,
    predicted_bound: float | None = None,
    logx: bool = False,
    title: str = "final loss vs learning rate",
):
    """``figures.runs.final_loss_vs_lr`` plus the bound predicted from the initial sharpness (dotted) and,
    where ``runs`` has a ``regime`` column, the catapult region shaded (the lrs whose loss spiked, then
    converged)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    draw_sensitivity(ax, runs, analytic_bound, logx, legend=False)
    if predicted_bound is not None:
        _include(ax, predicted_bound, logx)
        ax.axvline(predicted_bound, color="tab:purple", ls=":", lw=1.6, label="predicted bound 2(1+m)/λ₀")
    if "regime" in runs.columns:
        _shade_catapults(ax, runs, logx)
    ax.set_xlabel(axis_label("lr") + (" (log scale)" if logx else ""))
    ax.set_ylabel(axis_label("final_loss"))
    ax.set_title(title)
    legend_outside(ax)
    return fig


def final_loss_vs_lr(runs, path: Path, **options) -> Path:
    """``bound_figure`` saved to ``path``."""
    return save(bound_figure(runs, **options), path)


def _include(ax, value: float, logx: bool) -> None:
    """Widen the x limits to show ``value``."""
    lo, hi = ax.get_xlim()
    pad = 1.1 if logx else 0.04 * (hi - lo)
    if value <= lo:
        ax.set_xlim(value / pad if logx else value - pad, hi)
    elif value >= hi:
        ax.set_xlim(lo, value * pad if logx else value + pad)


def _shade_catapults(ax, runs, logx: bool) -> None:
    """Shade from half way below the smallest catapult lr to half way above the largest (to the next lrs)."""
    lrs = np.unique(runs["lr"].to_numpy(float))
    catapults = np.unique(runs.loc[runs["regime"] == "catapult", "lr"].to_numpy(float))
    if not catapults.size:
        return
    i, j = np.searchsorted(lrs, catapults[0]), np.searchsorted(lrs, catapults[-1])
    lo, hi = ax.get_xlim()

    def middle(a: float, b: float) -> float:
        return float(np.sqrt(a * b)) if logx else (a + b) / 2

    left = middle(lrs[i - 1], lrs[i]) if i > 0 else lo
    right = middle(lrs[j], lrs[j + 1]) if j + 1 < len(lrs) else hi
    ax.axvspan(left, right, color="tab:orange", alpha=0.15, lw=0, label="catapult: spike, then converges")
    ax.set_xlim(lo, hi)
