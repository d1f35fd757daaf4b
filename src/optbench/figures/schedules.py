"""The schedules figure: small multiples of the lr each step uses, one panel per scheduler."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optbench.figures.style import (  # noqa: E402
    grid_shape,
    hide_unused,
    name_color,
    save,
)


def schedules(
    curves,
    path: Path,
    notes: dict | None = None,
    ylabel: str = "learning rate",
    title: str = "lr per step of every scheduler",
) -> Path:
    """Small multiples, one panel per scheduler (same axes everywhere): the lr each step uses."""
    notes = notes or {}
    names = list(dict.fromkeys(list(curves["scheduler"].unique()) + list(notes)))
    n_rows, n_cols = grid_shape(len(names), 4 if len(names) > 9 else 3)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(3.3 * n_cols, 2.1 * n_rows + 0.5),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for ax, name in zip(axes.flat, names, strict=False):
        data = curves[curves["scheduler"] == name].sort_values("step")
        if len(data):
            ax.plot(data["step"], data["lr"], color=name_color(name), lw=1.6)
            ax.fill_between(data["step"], data["lr"], color=name_color(name), alpha=0.12)
        if name in notes:
            ax.text(
                0.5,
                0.5 if not len(data) else 0.93,
                textwrap.fill(notes[name], 38),
                transform=ax.transAxes,
                ha="center",
                va="center" if not len(data) else "top",
                fontsize=6.5,
                color="0.2",
                bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.85, "pad": 2},
            )
        ax.set_title(name if len(name) <= 34 else name[:32] + "…", fontsize=8.5)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    hide_unused(axes, len(names))
    top = float(curves["lr"].max()) if len(curves) else 1.0
    axes[0, 0].set_ylim(0, top * 1.06 if top > 0 else 1.0)  # shared by every panel
    fig.supxlabel("step (optimizer updates)", fontsize=9)
    fig.supylabel(ylabel, fontsize=9)
    fig.suptitle(title)
    return save(fig, path)
