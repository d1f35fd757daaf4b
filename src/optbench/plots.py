"""Figures drawn from results DataFrames (never from the engine: plotting reads Parquet, nothing else).

Colours are stable per registry name (``name_color``) so one optimizer has one colour in every figure;
continuous hues such as lr use a sequential colormap.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_PALETTE = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors


def name_color(name: str):
    """The same colour for the same registry name in every figure."""
    digest = int(hashlib.md5(str(name).encode()).hexdigest(), 16)
    return _PALETTE[digest % len(_PALETTE)]


def save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_vs_step(runs, traces, path: Path, title: str = "loss vs step per learning rate") -> Path:
    """One line per lr on a log y axis; diverged runs end with an x at their last finite point."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lrs = sorted(runs["lr"].unique())
    cmap = plt.get_cmap("viridis")
    for i, row in runs.sort_values("lr").iterrows():
        trace = traces[traces["run_id"] == row["run_id"]].sort_values("step")
        loss = trace["loss"].to_numpy()
        ok = np.isfinite(loss) & (loss > 0)
        color = cmap(lrs.index(row["lr"]) / max(1, len(lrs) - 1))
        label = f"lr={row['lr']:.4g}" + (" (diverged)" if row["status"] == "diverged" else "")
        ax.plot(trace["step"].to_numpy()[ok], loss[ok], color=color, label=label, lw=1.5)
        if row["status"] == "diverged" and ok.any():
            last = np.flatnonzero(ok)[-1]
            ax.plot(trace["step"].to_numpy()[last], loss[last], "x", color=color, ms=8, mew=2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (before the step's update)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return save(fig, path)


def final_loss_vs_lr(runs, path: Path, bound: float | None = None, logx: bool = False,
                     title: str = "final loss vs learning rate") -> Path:
    """Sensitivity curve: final loss per lr, diverged lrs marked and shaded, the analytic bound dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    data = runs.sort_values("lr")
    ok = data[data["status"] == "ok"]
    diverged = data[data["status"] == "diverged"]
    positive = ok[ok["final_loss"] > 0]
    ax.plot(positive["lr"], positive["final_loss"], "o-", color="tab:blue", label="final loss (ok)")
    zero = ok[ok["final_loss"] <= 0]
    if len(zero):
        floor = positive["final_loss"].min() if len(positive) else 1e-45
        ax.plot(zero["lr"], [floor] * len(zero), "v", color="tab:blue", label="final loss 0 (underflow)")
    if len(diverged):
        top = max(ok["final_loss"].max() if len(ok) else 1.0, 1.0) * 10
        ax.plot(diverged["lr"], [top] * len(diverged), "x", color="tab:red", ms=9, mew=2, label="diverged")
        ax.axvspan(diverged["lr"].min(), data["lr"].max(), color="tab:red", alpha=0.08, label="diverged region")
    if bound is not None:
        ax.axvline(bound, color="k", ls="--", lw=1.2, label=f"analytic bound lr = {bound:.4g}")
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
