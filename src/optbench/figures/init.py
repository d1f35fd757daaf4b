"""Figures of the init report, drawn from its DataFrames only (never imports the engine).

``std_vs_layer.png``: one panel per activation (and a zoom on [1e-2, 1e2] below it), one solid line per
init (each seed), its mean-field theory dashed in the same colour, log y axis; non-finite and zero values
are not drawn and the first non-finite layer is marked with an x on the float32-max line. ``gain_table.png``: ``nn.init.calculate_gain`` against
the measured gains, one group of bars per activation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optbench.figures.style import PALETTE, plt, save, spec_colors

FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4e38: beyond it a float32 activation is inf
FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)  # 1.4e-45: below it, exactly 0


def plot_std_vs_layer(layers, path: Path, title: str | None = None) -> Path:
    """Std of each layer's output against depth; ``layers`` has the columns of layers.parquet.

    Each activation gets two panels: the full range (explosion to float32's max, vanishing to 0) and a zoom
    on [1e-2, 1e2], where "stays O(1)" and "slowly decays" can be told apart.
    """
    activations = list(dict.fromkeys(layers["activation"]))
    inits = list(dict.fromkeys(layers["init"]))
    seeds = layers["seed"].nunique()
    ncols = min(len(activations), 3)
    chunks = -(-len(activations) // ncols)
    fig, axes = plt.subplots(
        2 * chunks,
        ncols,
        figsize=(4.6 * ncols + 2.4, 6.4 * chunks),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 2] * chunks},
    )
    colours = spec_colors(inits)  # variants of one scheme (normal, normal(std=0.0625)) in its shades
    for index, activation in enumerate(activations):
        row, col = 2 * (index // ncols), index % ncols
        _draw_activation(
            axes[row, col],
            axes[row + 1, col],
            layers[layers["activation"] == activation],
            inits,
            colours,
            seeds,
        )
        axes[row, col].set_title(f"activation: {activation}")
        if col == 0:
            axes[row, col].set_ylabel("std of the layer's output")
            axes[row + 1, col].set_ylabel("zoom")
    full_axes = [axes[2 * (i // ncols), i % ncols] for i in range(len(activations))]
    low = min(ax.get_ylim()[0] for ax in full_axes)  # one scale for every full-range panel
    for ax in full_axes:
        ax.set_ylim(low, FLOAT32_MAX * 1e3)
    for index in range(len(activations), chunks * ncols):
        row, col = 2 * (index // ncols), index % ncols
        axes[row, col].set_visible(False)
        axes[row + 1, col].set_visible(False)
    legend_w = 2.4 / fig.get_figwidth()
    fig.legend(
        handles=_legend_handles(inits, colours),
        loc="center left",
        bbox_to_anchor=(1 - legend_w, 0.5),
        fontsize=8,
        frameon=False,
    )
    depth = int(layers["layer"].max()) + 1 if len(layers) else 0
    fig.suptitle(
        title or f"Std of each layer's output in a {depth}-layer MLP (N(0,1) input, {seeds} seed(s))"
    )
    fig.tight_layout(rect=(0, 0, 1 - legend_w, 1))
    return save(fig, path)


def _draw_activation(full, zoom, panel, inits, colours, seeds: int) -> None:
    """One activation's pair of panels: every init's measured std per seed (solid) and theory (dashed)."""
    # Inits with identical weights (xavier_normal and kaiming_normal on square layers) draw identical lines:
    # earlier ones are drawn wider so they still show under the later ones.
    widths = np.linspace(3.2, 1.2, len(inits)) if len(inits) > 1 else [1.6]
    for init, lw in zip(inits, widths, strict=True):
        runs = panel[panel["init"] == init]
        for _, run in runs.groupby("seed"):
            _draw_measured(full, zoom, run.sort_values("layer"), colours[init], lw, seeds)
        theory = runs[runs["seed"] == runs["seed"].min()].sort_values("layer")
        values = theory["theory_std"].to_numpy(dtype=float)
        shown = np.isfinite(values) & (values >= FLOAT32_TINY) & (values <= FLOAT32_MAX)
        for ax in (full, zoom):
            ax.plot(theory["layer"][shown], values[shown], "--", color=colours[init], lw=1.0)
    full.axhline(FLOAT32_MAX, color="grey", ls=":", lw=1)
    zoom.set_ylim(1e-2, 1e2)
    zoom.set_xlabel("layer (0-based)")
    for ax in (full, zoom):
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)


def _draw_measured(full, zoom, run, colour, lw: float, seeds: int) -> None:
    std = run["act_std"].to_numpy(dtype=float)
    drawn = np.isfinite(std) & (std > 0)  # log axis: inf/nan and exact zeros are left out
    for ax in (full, zoom):
        ax.plot(run["layer"][drawn], std[drawn], color=colour, lw=lw, alpha=0.9 if seeds == 1 else 0.5)
    bad = run.loc[~run["finite"].astype(bool), "layer"]
    if len(bad):
        full.plot([bad.min()], [FLOAT32_MAX], "x", color=colour, ms=9, mew=2)


def _legend_handles(inits, colours) -> list:
    handles = [plt.Line2D([], [], color=colours[i], lw=2, label=i) for i in inits]
    return handles + [
        plt.Line2D([], [], color="grey", ls="--", label="theory (mean-field)"),
        plt.Line2D([], [], color="grey", ls="", marker="x", mew=2, label="first non-finite layer"),
        plt.Line2D([], [], color="grey", ls=":", label="float32 max"),
    ]


def plot_gain_table(gains, path: Path) -> Path:
    """``calculate_gain`` next to the measured std and RMS gains, with the numbers on the bars."""
    columns = (
        ("calculate_gain", "nn.init.calculate_gain", PALETTE[0]),
        ("measured_gain", "measured std(x) / std(act(x))", PALETTE[1]),
        ("measured_rms_gain", "measured std(x) / rms(act(x))", PALETTE[2]),
    )
    n = len(gains)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * n + 1.5), 4.2))
    x = np.arange(n)
    bar = 0.27
    for j, (column, label, colour) in enumerate(columns):
        values = gains[column].to_numpy(dtype=float)
        bars = ax.bar(x + (j - 1) * bar, values, bar, label=label, color=colour)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(x)
    ax.set_xticklabels(
        [
            f"{a}\n(gain of {nl})" if nl not in (a, "linear") else a
            for a, nl in zip(gains["activation"], gains["nonlinearity"], strict=True)
        ]
    )
    ax.set_ylabel("gain")
    ax.set_ylim(0, float(np.nanmax(gains[[c for c, _, _ in columns]].to_numpy(dtype=float))) * 1.2)
    samples = int(gains["samples"].iloc[0]) if n else 0
    ax.set_title(f"Init gain by formula and measured on {samples:,} N(0,1) samples")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return save(fig, path)
