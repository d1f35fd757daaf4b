"""Figures drawn from results DataFrames (never from the engine: plotting reads Parquet, nothing else).

Colours are stable per registry name (``name_color``) so one optimizer has one colour in every figure;
continuous hues such as lr use a sequential colormap ordered by value (``value_colors``).

Every function takes DataFrames (rows of runs.parquet / traces / schedules.parquet) and a ``path``; the
suffix of ``path`` picks the format (``.png``, ``.svg`` or ``.pdf``). Two helpers reach beyond Parquet on
purpose, both into "what can be run", never into the engine: ``schedule_curves`` builds the real scheduler
objects on a dummy optimizer, and ``trajectories`` evaluates the toy function for its contour lines.
"""

from __future__ import annotations

import functools
import hashlib
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from optbench.errors import OptbenchError  # noqa: E402

FORMATS = ("png", "svg", "pdf")

# 20 colours that stay distinguishable as lines on white: tab10, then ten darker, different hues.
_PALETTE = tuple(plt.get_cmap("tab10").colors) + tuple(
    matplotlib.colors.to_rgb(c)
    for c in (
        "#000075",
        "#800000",
        "#008080",
        "#000000",
        "#c9a400",
        "#7570b3",
        "#1b9e77",
        "#f032e6",
        "#6b4226",
        "#4b8b3b",
    )
)
# Names people compare most often come first, so they get the clearest tab10 colours; every other
# registry name follows in sorted order (names of one kind never share a colour).
_PREFERRED = {
    "optimizers": (
        "sgd",
        "adam",
        "adamw",
        "rmsprop",
        "adagrad",
        "nadam",
        "radam",
        "adadelta",
        "adamax",
        "lbfgs",
    ),
    "schedulers": (
        "none",
        "steplr",
        "cosineannealinglr",
        "onecyclelr",
        "exponentiallr",
        "warmup-cosine",
        "step-halving",
        "linearlr",
        "cycliclr",
        "reducelronplateau",
    ),
    "problems": ("quadratic", "rosenbrock", "beale", "rastrigin", "mlp-classification", "mlp-regression"),
    # the ten classic schemes in the order optbench.initplots gives them tab10, so both agree
    "inits": (
        "xavier_uniform",
        "xavier_normal",
        "kaiming_uniform",
        "kaiming_normal",
        "uniform",
        "normal",
        "constant",
        "orthogonal",
        "eye",
        "sparse",
    ),
}
# Precisions keep the colours of the AMP figure (optbench.ampplots.PRECISION_COLORS).
_PRECISION_COLORS = {"fp32": "#9e9e9e", "fp16": "#1f77b4", "bf16": "#ff7f0e"}

# Labels with units for the columns people plot.
AXIS_LABELS = {
    "step": "step (optimizer updates)",
    "loss": "training loss (before the step's update)",
    "lr": "learning rate",
    "grad_norm": "gradient L2 norm",
    "update_norm": "update L2 norm |Δθ|",
    "param_norm": "parameter L2 norm |θ|",
    "x0": "x0 (first coordinate)",
    "x1": "x1 (second coordinate)",
    "val_loss": "held-out loss",
    "val_acc": "held-out accuracy (fraction)",
    "loss_scale": "GradScaler loss scale",
    "final_loss": "final training loss",
    "best_loss": "best training loss",
    "final_val_loss": "final held-out loss",
    "final_val_acc": "final held-out accuracy (fraction)",
    "wall_time_s": "wall time per run (s)",
    "steps_completed": "steps completed",
    "diverged_step": "step of divergence",
    "momentum": "momentum",
}


def axis_label(column: str) -> str:
    return AXIS_LABELS.get(column, column)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise OptbenchError(f"unknown figure format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def figure_path(folder: Path, stem: str, fmt: str = "png") -> Path:
    return Path(folder) / f"{stem}.{check_format(fmt)}"


# ------------------------------------------------------------------------------------------------ colours


@functools.cache
def _registry_index() -> dict[str, int]:
    """Position of each name in its (sorted) registry: names of one kind never share a colour."""
    try:
        from optbench import registries

        index: dict[str, int] = {}
        for kind in ("optimizers", "schedulers", "problems", "inits", "losses"):
            names = registries.by_kind(kind).names()
            preferred = [n for n in _PREFERRED.get(kind, ()) if n in names]
            for i, name in enumerate(preferred + [n for n in names if n not in preferred]):
                index.setdefault(name, i)
        return index
    except Exception:  # noqa: BLE001 - colours must never break a figure; fall back to hashing
        return {}


def name_color(name: str):
    """The same colour for the same registry name in every figure.

    Registry names take the colour of their position in their registry (common names first; 20 colours
    and no registry has more entries, so two optimizers never share one); anything else (a spec with arguments, an import
    path) is hashed into the same palette.
    """
    if str(name) in _PRECISION_COLORS:
        return matplotlib.colors.to_rgb(_PRECISION_COLORS[str(name)])
    index = _registry_index().get(str(name))
    if index is None:
        index = int(hashlib.md5(str(name).encode()).hexdigest(), 16)
    return _PALETTE[index % len(_PALETTE)]


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def value_colors(values) -> dict:
    """Colour per value: registry names by ``name_color``; numbers by rank on the viridis colormap."""
    unique = sorted(set(values), key=_sort_key)
    if unique and all(_is_number(v) for v in unique):
        cmap = plt.get_cmap("viridis")
        span = max(1, len(unique) - 1)
        return {v: cmap(0.92 * i / span) for i, v in enumerate(unique)}
    return {v: name_color(v) for v in unique}


def _sort_key(value):
    """Sort numbers numerically, then everything else as text (None/NaN last)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (2, 0.0, "")
    if _is_number(value):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def fmt_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "default"
    if _is_number(value):
        return f"{value:.4g}"
    return str(value)


def save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) and close it."""
    path = Path(path)
    if path.suffix.lstrip(".") not in FORMATS:
        raise OptbenchError(f"unknown figure format {path.suffix!r} for {path}; valid: {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata=_metadata(path))
    plt.close(fig)
    return path


def _metadata(path: Path) -> dict:
    # Reproducible files: no creation date in SVG/PDF output.
    suffix = path.suffix.lstrip(".")
    if suffix == "svg":
        return {"Date": None}
    if suffix == "pdf":
        return {"CreationDate": None}
    return {}


def legend_outside(ax, **kwargs) -> None:
    """Legend to the right of the axes, where it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            fontsize=8,
            **kwargs,
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


def _draw_sensitivity(ax, data, bound: float | None, logx: bool, legend: bool = True) -> None:
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


def lr_ticks(ax, lrs, max_ticks: int = 7) -> None:
    """Log-x ticks at the measured lrs (at most ``max_ticks``, evenly chosen) instead of crowded minors."""
    from matplotlib.ticker import NullFormatter

    lrs = [v for v in sorted(lrs) if v > 0]
    if not lrs:
        return
    gap = max(math.log10(lrs[-1] / lrs[0]), 0.3) / max_ticks  # ticks at least this far apart in decades
    ticks = [lrs[0]]
    for v in lrs[1:]:
        if math.log10(v / ticks[-1]) >= gap:
            ticks.append(v)
    if ticks[-1] != lrs[-1] and math.log10(lrs[-1] / ticks[-1]) < gap:
        ticks[-1] = lrs[-1]  # keep the largest lr labelled rather than its neighbour
    elif ticks[-1] != lrs[-1]:
        ticks.append(lrs[-1])
    ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


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


def hide_unused(axes, used: int) -> None:
    """Hide the panels past the first ``used``. With a shared x axis only the bottom row has tick labels,
    so the panel above a hidden one gets its own back."""
    n_cols = axes.shape[1]
    for index in range(used, axes.size):
        row, col = divmod(index, n_cols)
        axes[row, col].set_visible(False)
        if row > 0:
            axes[row - 1, col].xaxis.set_tick_params(which="both", labelbottom=True)


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, cols) for n panels: one row up to max_cols panels, then about square (4 -> 2 x 2)."""
    n = max(1, n)
    cols = n if n <= max_cols else min(max_cols, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


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
    n_rows, n_cols = _grid(len(groups))
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


def figure_legend(
    fig, axes, title: str | None = None, loc: str = "outside right upper", ncol: int = 1
) -> None:
    """One legend for all panels (of a constrained-layout figure), right of them; labels deduplicated."""
    seen: dict[str, object] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen.keys()),
            loc=loc,
            fontsize=8,
            title=title,
            ncol=ncol,
            title_fontsize=8,
            frameon=False,
        )


# ------------------------------------------------------------------------------------- lr x momentum heatmap


def lr_momentum_heatmap(
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
    n_rows, n_cols = _grid(len(groups), 2)
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

    from optbench.problems import build_problem

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
    n_rows, n_cols = _grid(len(panels), 2)
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


# ---------------------------------------------------------------------------------------- lr schedules


def schedule_curves(
    steps: int = 100, lr: float = 0.01, schedulers: list[str] | None = None, metric: float = 1.0
):
    """lr per step from the real scheduler objects (``optbench.schedulers.build_scheduler``).

    Each scheduler drives an SGD optimizer over one dummy parameter; per step we record
    ``param_groups[0]['lr']`` (the lr that step's update uses), then call ``optimizer.step()`` and
    ``scheduler.step()`` in PyTorch's order. ReduceLROnPlateau needs a metric: it is fed the constant
    ``metric``, so it sees no improvement and cuts the lr by ``factor`` every ``patience + 1`` steps.
    Returns (DataFrame[scheduler, step, lr], notes: {scheduler: text}); a scheduler that cannot be built
    gets no rows and a note with the reason.
    """
    import warnings

    import pandas as pd
    import torch

    from optbench.schedulers import build_scheduler, canonical_scheduler
    from optbench.schedulers import schedulers as registry

    names = schedulers if schedulers is not None else registry.names()
    rows, notes = [], {}
    for text in names:
        name = canonical_scheduler(text)
        param = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.SGD([param], lr=lr)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                handle = build_scheduler(name, optimizer, steps, lr)
                values = []
                for _ in range(steps):
                    values.append(optimizer.param_groups[0]["lr"])
                    optimizer.step()
                    handle.step(torch.tensor(metric))
        except Exception as err:  # noqa: BLE001 - a scheduler that cannot run is shown as a note
            notes[name] = f"could not build: {err}"
            continue
        if handle.needs_metric:
            notes[name] = f"fed a constant loss {metric:g}"
        rows += [{"scheduler": name, "step": t, "lr": v} for t, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["scheduler", "step", "lr"]), notes


def schedules_experiment(
    steps: int = 100,
    lr: float = 0.01,
    schedulers: list[str] | None = None,
    out: Path | str | None = None,
    fmt: str = "png",
    command: str = "schedules",
) -> Path:
    """``bench schedules``: write DIR/schedules.parquet (scheduler, step, lr), the figure and the manifest."""
    from optbench import store

    check_format(fmt)
    if steps < 1:
        raise OptbenchError(f"--steps must be >= 1, got {steps}")
    if not (lr > 0 and math.isfinite(lr)):
        raise OptbenchError(f"--lr must be a positive learning rate, got {lr}")
    if schedulers is not None:  # unknown names are user errors, before anything is written
        from optbench.schedulers import canonical_scheduler

        schedulers = [canonical_scheduler(s) for s in schedulers]
    out = Path(out) if out is not None else store.default_out("schedules")
    manifest = store.start_manifest(
        out, command, {"experiment": "schedules", "schedules": {"steps": steps, "lr": lr}}
    )
    curves, notes = schedule_curves(steps, lr, schedulers)
    import pyarrow as pa

    store.write_parquet_atomic(pa.Table.from_pandas(curves, preserve_index=False), out / "schedules.parquet")
    path = schedules(
        curves,
        out / f"schedules.{fmt}",
        notes,
        title=f"lr per step of every scheduler (base lr {lr:g}, {steps} steps)",
    )
    store.finish_manifest(out, manifest, schedule_notes=notes, files=["schedules.parquet", path.name])
    return path


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
    n_rows, n_cols = _grid(len(names), 4 if len(names) > 9 else 3)
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


# ---------------------------------------------------------------------------------------- lr range test


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
