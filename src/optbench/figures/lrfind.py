"""The lr range test figure: loss against lr with the suggestions marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from optbench.figures.style import (  # noqa: E402
    axis_label,
    legend_outside,
    save,
)


def lr_find(
    lrs,
    losses,
    smoothed,
    suggestions: dict,
    path: Path,
    valley: tuple[int, int] | None = None,
    stop: int | None = None,
    title: str = "learning-rate range test",
) -> Path:
    """Loss vs lr (log x): raw loss faint, bias-corrected EMA bold, the suggestions marked.

    ``suggestions`` maps a label to (lr, index into ``lrs``); ``valley`` (first, last index) is shaded;
    ``stop`` is the index where the test stopped (smoothed loss > 4x its minimum or diverged).
    """
    lrs, losses, smoothed = (np.asarray(v, dtype=float) for v in (lrs, losses, smoothed))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.plot(lrs, losses, color="0.7", lw=0.8, label="loss per step")
    end = len(smoothed) if stop is None else stop
    ax.plot(lrs[:end], smoothed[:end], color="tab:blue", lw=2, label="smoothed loss (EMA, bias-corrected)")
    if valley is not None:
        ax.axvspan(lrs[valley[0]], lrs[valley[1]], color="tab:green", alpha=0.1, label="longest valley")
    markers = {"steepest": ("v", "tab:red"), "valley": ("o", "tab:green"), "minimum/10": ("s", "tab:purple")}
    for label, (lr, _index) in suggestions.items():
        if lr is None:
            continue
        marker, color = markers.get(label, ("D", "k"))
        ax.plot(
            lr,
            np.interp(np.log(lr), np.log(lrs[:end]), smoothed[:end]),
            marker,
            color=color,
            ms=9,
            mec="black",
            mew=0.6,
            label=f"{label}: lr = {lr:.3g}",
            zorder=5,
        )
    if stop is not None and stop < len(lrs):
        ax.axvline(lrs[stop], color="0.4", ls=":", lw=1, label=f"stopped at lr = {lrs[stop]:.3g}")
    finite = smoothed[:end][np.isfinite(smoothed[:end])]
    if finite.size:  # the kept smoothed curve fills the height; the raw loss and the blow-up may leave it
        lo, hi = finite.min(), finite.max()
        pad = 0.08 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-12
        ax.set_ylim(lo - pad, hi + pad)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale; grows exponentially per step)")
    ax.set_ylabel(axis_label("loss"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    legend_outside(ax)
    return save(fig, path)
