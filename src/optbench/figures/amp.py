"""The ``bench amp`` figures, drawn from the amp.parquet DataFrame alone (``experiments.amp.amp_schema``);
never imports torch or the benchmark.

* ``scaling_figure`` (amp_scaling.png): speed-up vs width (log x, log y), one panel per fp32 baseline
  (TF32 off, TF32 on); per precision a solid line of the wall-time speed-up with IQR error bars, dotted the
  device-time speed-up (CUDA), dash-dot the CUDA-graph replay's; the ceiling of each precision (its
  matmul rate over the baseline's) is a dashed horizontal line in the same colour.
* ``bars_figure`` (amp.png): the wall-time speed-ups as bars per width; hatched bars are over fp32 with
  TF32, the dashed line at 1.0 is the baseline.

The title says CPU or the GPU name, with torch/CUDA versions.
"""

from __future__ import annotations

from pathlib import Path

from optbench.figures.style import PRECISION_COLORS  # the one palette

PRECISION_ORDER = ("fp32", "fp16", "bf16")
BASELINES = {"": "fp32 (TF32 off)", "_tf32": "fp32 with TF32"}  # column suffix -> what the panel is over
NICE_TICKS = (1 / 16, 1 / 8, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32)
TIME_STYLES = {"": ("-", "wall"), "device_": (":", "device"), "graph_": ("-.", "graph replay")}


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
    batches = sorted(frame["batch"].unique())
    if len(batches) == 1:
        batch = f"batch {int(batches[0])}"
    elif all(b == 2 * w for w, b in zip(frame["width"], frame["batch"], strict=True)):
        batch = "batch 2 x width"
    else:
        batch = f"batch {int(batches[0])}..{int(batches[-1])}"
    return (
        f"Training-step speed-up over fp32 (MLP depth {int(first['depth'])}, {batch}, "
        f"{first['optimizer']})\n{where} · {versions}"
    )


def baseline_names(frame) -> dict[str, str]:
    """Column suffix -> the baseline's name; plain "fp32" where no row had TF32 on (CPU)."""
    if not frame["tf32"].any():
        return {"": "fp32", "_tf32": "fp32 with TF32"}
    return BASELINES


def _series(frame):
    """(label, precision, tf32 of the row, baseline suffix) for every bar / line that has data."""
    out = []
    for suffix, over in baseline_names(frame).items():
        if f"speedup{suffix}" not in frame or frame[f"speedup{suffix}"].isna().all():
            continue
        for precision in PRECISION_ORDER:
            if precision == "fp32" and suffix:
                continue  # over fp32 with TF32: fp32 is the 1.0 line
            tf32 = True if precision == "fp32" else None  # fp32 with TF32 over strict fp32
            part = _rows(frame, precision, tf32)
            if len(part) and part[f"speedup{suffix}"].notna().any():
                name = "fp32 with TF32" if precision == "fp32" else precision
                out.append((f"{name} / {over}", precision, tf32, suffix))
    return out


def _rows(frame, precision: str, tf32):
    part = frame[frame["precision"] == precision]
    if tf32 is not None:
        part = part[part["tf32"] == tf32]
    return part.sort_values("width")


def _values(part, column: str):
    import numpy as np

    if column not in part:
        return np.full(len(part), np.nan)
    return np.array([np.nan if v is None else float(v) for v in part[column]], dtype=float)


# ----------------------------------------------------------------------------------- speed-up vs size


def scaling_figure(frame):
    """The speed-up-vs-width figure (see module docstring); returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frame.empty:
        raise ValueError("no rows to plot")
    suffixes = [s for s in BASELINES if f"speedup{s}" in frame and frame[f"speedup{s}"].notna().any()]
    suffixes = suffixes or [""]
    fig, axes = plt.subplots(
        1, len(suffixes), figsize=(6.2 * len(suffixes), 4.6), squeeze=False, layout="constrained"
    )
    series = _series(frame)
    for ax, suffix in zip(axes[0], suffixes, strict=True):
        values = [1.0]
        for label, precision, tf32, s in series:
            if s == suffix:
                values += _draw_lines(ax, _rows(frame, precision, tf32), precision, tf32, suffix, label)
        _style_scaling_axes(ax, frame, suffix, values)
    fig.suptitle(plot_title(frame), fontsize=10)
    handles, labels = {}, []
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        labels = list(handles)
        fig.legend(list(handles.values()), labels, loc="outside lower center", ncols=min(3, len(labels)),
                   fontsize=7, frameon=False)  # fmt: skip
    return fig


def _draw_lines(ax, part, precision: str, tf32, suffix: str, label: str) -> list[float]:
    """Wall (with IQR error bars), device and graph speed-ups of one series, and its ceiling."""
    import numpy as np

    color = PRECISION_COLORS.get(precision, "#555555")
    marker = "s" if precision == "fp32" else "o"
    widths = part["width"].to_numpy(dtype=float)
    drawn = []
    for prefix, (style, what) in TIME_STYLES.items():
        y = _values(part, f"{prefix}speedup{suffix}")
        if np.isnan(y).all():
            continue
        err = _values(part, f"speedup{suffix}_err") if prefix == "" else None
        ax.errorbar(
            widths, y, yerr=err, color=color, linestyle=style, marker=marker if prefix == "" else None,
            markersize=4, capsize=3, linewidth=1.6 if prefix == "" else 1.2, label=f"{label}, {what}",
        )  # fmt: skip
        drawn += list(y[~np.isnan(y)])
    ceiling = _values(part, f"ceiling_speedup{suffix}")
    if not np.isnan(ceiling).all():
        value = float(np.nanmedian(ceiling))
        ax.axhline(value, color=color, linestyle="--", linewidth=1.0, label=f"{label}, ceiling {value:.2f}x")
        drawn.append(value)
    return drawn


def _style_scaling_axes(ax, frame, suffix: str, values: list[float]) -> None:
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    widths = sorted(frame["width"].unique())
    ax.set_xticks(widths, [str(int(w)) for w in widths])
    ax.minorticks_off()
    finite = [v for v in values if v and np.isfinite(v) and v > 0]
    ax.set_ylim(min(finite) / 1.35, max(finite) * 1.35)
    low, high = ax.get_ylim()
    ax.set_yticks([t for t in NICE_TICKS if low <= t <= high])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    over = baseline_names(frame)[suffix]
    ax.set_xlabel("MLP width")
    ax.set_ylabel(f"speed-up over {over}")
    ax.set_title(f"over {over}", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)


def plot_scaling(frame, path: Path) -> Path:
    """Write ``scaling_figure(frame)`` to ``path``."""
    from optbench.figures.style import save

    return save(scaling_figure(frame), Path(path))


# ------------------------------------------------------------------------------------------- the bars


def bars_figure(frame):
    """The bar figure (see module docstring); returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if frame.empty:
        raise ValueError("no rows to plot")
    widths = sorted(frame["width"].unique())
    series = _series(frame)
    n = max(1, len(series))
    bar_width = 0.8 / n
    x = np.arange(len(widths))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(widths) * max(1, n / 3)), 4.5), layout="constrained")
    top = 1.0
    for i, (label, precision, tf32, suffix) in enumerate(series):
        part = _rows(frame, precision, tf32).set_index("width")
        values = np.array([_values(part.loc[[w]], f"speedup{suffix}")[0] if w in part.index else np.nan
                           for w in widths])  # fmt: skip
        errors = np.array([_values(part.loc[[w]], f"speedup{suffix}_err")[0] if w in part.index else np.nan
                           for w in widths])  # fmt: skip
        bars = ax.bar(
            x - 0.4 + bar_width * (i + 0.5), np.nan_to_num(values, nan=0.0), bar_width,
            yerr=np.nan_to_num(errors, nan=0.0), capsize=2, label=label,
            color=PRECISION_COLORS.get(precision, "#555555"), hatch="//" if suffix else None,
            edgecolor="black", linewidth=0.5,
        )  # fmt: skip
        _annotate(ax, bars, values, np.nan_to_num(errors))
        if not np.all(np.isnan(values)):
            top = max(top, float(np.nanmax(values + np.nan_to_num(errors))))
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xticks(x, [str(int(w)) for w in widths])
    ax.set_xlabel("MLP width")
    ax.set_ylabel("speed-up (median step time ratio)")
    ax.set_ylim(0, top * 1.2)
    ax.set_title(plot_title(frame), fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # a table with fp32 rows only has no speed-up bars to name
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _annotate(ax, bars, values, errors) -> None:
    import numpy as np

    for bar, value, error in zip(bars, values, errors, strict=True):
        ax.annotate(
            "n/a" if np.isnan(value) else f"{value:.2f}x",
            (bar.get_x() + bar.get_width() / 2, 0.0 if np.isnan(value) else value + error),
            ha="center", va="bottom", fontsize=7, xytext=(0, 3), textcoords="offset points",
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )  # fmt: skip


def plot_amp(frame, path: Path) -> Path:
    """Write ``bars_figure(frame)`` to ``path`` (PNG, SVG or PDF) and return the path."""
    from optbench.figures.style import save

    return save(bars_figure(frame), Path(path))
