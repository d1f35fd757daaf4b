"""The ``bench amp`` bar plot: speed-up over fp32 per width, one bar per precision (and TF32 setting).

Reads only the amp.parquet DataFrame (``optbench.amp.amp_schema``); never imports torch or the benchmark.
Colours name the precision, hatching marks bars measured with TF32 matmuls allowed, the dashed line at
1.0 is fp32. The title says CPU or the GPU name, with torch/CUDA versions.
"""

from __future__ import annotations

from pathlib import Path

from optbench.figures.style import PRECISION_COLORS  # the one palette

PRECISION_ORDER = ("fp32", "fp16", "bf16")


def plot_title(frame) -> str:
    """E.g. ``Training-step speed-up over fp32 (MLP depth 3, batch 512, adamw)`` + a device line."""
    first = frame.iloc[0]
    on_gpu = str(first["device"]).startswith("cuda")
    where = f"GPU: {first['device_name']}" if on_gpu else f"CPU: {first['device_name']}"
    versions = f"torch {first['torch_version']}"
    if on_gpu:
        versions += f", CUDA {first['cuda_version']}"
    else:
        versions += f", {int(first['num_threads'])} thread(s)"
    return (
        f"Training-step speed-up over fp32 (MLP depth {int(first['depth'])}, batch {int(first['batch'])}, "
        f"{first['optimizer']})\n{where} · {versions}"
    )


def plot_amp(frame, path: Path) -> Path:
    """Write the bar plot of ``frame`` (rows of amp.parquet) to ``path`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if frame.empty:
        raise ValueError("no rows to plot")
    widths = sorted(frame["width"].unique())
    precisions = [p for p in PRECISION_ORDER if p in set(frame["precision"])]
    tf32_modes = sorted(frame["tf32"].unique())
    series = [(p, t) for t in tf32_modes for p in precisions]
    n = len(series)
    bar_width = 0.8 / n
    x = np.arange(len(widths))

    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(widths) * max(1, n / 3)), 4.5), layout="constrained")
    top = 1.0
    for i, (precision, tf32) in enumerate(series):
        part = frame[(frame["precision"] == precision) & (frame["tf32"] == tf32)].set_index("width")
        values = [part["speedup"].get(w, np.nan) if w in part.index else np.nan for w in widths]
        values = np.array([np.nan if v is None else float(v) for v in values])
        label = precision if len(tf32_modes) == 1 else f"{precision}, TF32 {'on' if tf32 else 'off'}"
        positions = x - 0.4 + bar_width * (i + 0.5)
        bars = ax.bar(
            positions,
            np.nan_to_num(values, nan=0.0),
            bar_width,
            label=label,
            color=PRECISION_COLORS.get(precision, "#555555"),
            hatch="//" if tf32 else None,
            edgecolor="black",
            linewidth=0.5,
        )
        for bar, value in zip(bars, values, strict=True):
            text = "n/a" if np.isnan(value) else f"{value:.2f}x"
            height = 0.0 if np.isnan(value) else value
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, height),
                ha="center",
                va="bottom",
                fontsize=8,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
                xytext=(0, 3),
                textcoords="offset points",
            )
        if not np.all(np.isnan(values)):
            top = max(top, float(np.nanmax(values)))
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xticks(x, [str(w) for w in widths])
    ax.set_xlabel("MLP width")
    ax.set_ylabel("speed-up over fp32 (median step time ratio)")
    ax.set_ylim(0, top * 1.2)
    ax.set_title(plot_title(frame), fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside the bars
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
