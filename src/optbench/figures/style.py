"""The one style of optbench's figures: the palette, stable colours per registry name, line styles that
stay distinct, axis labels, size bounds, layout helpers and ``save`` (the format from the path's suffix).

Colours are stable per registry name (``name_color``) so one optimizer has one colour in every figure,
whatever its arguments (``steplr`` and ``steplr(step_size=50)`` share steplr's colour; a figure that shows
both tells them apart by line style). Ordered values such as lr use a sequential colormap by rank
(``value_colors``), or, where lines must stay apart within a panel (``bench plot``), the palette in sorted
order (``distinct_colors``). Every figure module takes its colours from here; there is no other palette.
"""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from optbench.errors import OptbenchError  # noqa: E402
from optbench.figures import stamp  # noqa: E402

FORMATS = ("png", "svg", "pdf")
DPI = 120
# No figure is larger than this (inches; at DPI 120: 1920 x 1440 px), however large the grid.
MAX_FIGSIZE = (16.0, 12.0)

# 24 colours that stay apart as lines on white, and apart from the grey of the context lines, the dark
# grey of an optimizer's default and the black of the divergence marks: tab10 without its grey, then 15
# hues picked greedily (each the farthest in CIELAB from all before it). Every pair differs by at least
# ``MIN_COLOUR_DISTANCE`` (ΔE*ab; 2.3 is a just noticeable difference), so no two lines of a panel look alike.
PALETTE = tuple(c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7) + tuple(
    matplotlib.colors.to_rgb(c)
    for c in (
        "#0000ff",
        "#ff1eff",
        "#3c0fa5",
        "#4b5a00",
        "#f0b478",
        "#ff0078",
        "#78004b",
        "#00785a",
        "#0078ff",
        "#965a00",
        "#ff8787",
        "#a5c378",
        "#b400a5",
        "#00d296",
        "#002d78",
    )
)
MIN_COLOUR_DISTANCE = 25.0  # ΔE*ab between any two coloured lines of one panel
GREY = (0.62, 0.62, 0.62)  # context lines: the runs not highlighted
DEFAULT_COLOUR = (0.25, 0.25, 0.25)  # a hue value of None: the optimizer's default (momentum none)
MARK_COLOUR = (0.0, 0.0, 0.0)  # divergence marks: one neutral colour, whichever lines they end
# Precisions keep one colour each in every figure (the AMP bars, a precision axis of a grid).
PRECISION_COLORS = {"fp32": "#9e9e9e", "fp16": "#1f77b4", "bf16": "#ff7f0e"}
# Legend handles are this many font sizes long (8 pt text: 32 pt); every dash pattern below shows one whole
# period, gap included, within it at the lines' width (patterns are in units of the line width, 1.6 pt).
HANDLE_LENGTH = 4.0
# Line styles that stay apart at 1.6 pt and in a legend handle: solid, dashed, dotted, dash-dot, long
# dashes, dash-dot-dot, sparse short dashes, long dash-dot.
DASHES = (
    "-",
    (0, (4, 2)),
    (0, (1, 1.5)),
    (0, (5, 1.5, 1, 1.5)),
    (0, (9, 3)),
    (0, (4, 1.5, 1, 1.5, 1, 1.5)),
    (0, (1.5, 4)),
    (0, (9, 2, 1, 2, 1, 2)),
)
MARKERS = (None, "o", "s", "^")  # a second style dimension, used only past len(DASHES) styles
# Lines of one point each (a per-run y at one x) show no dash: their style is a marker shape instead ("x" and
# "v" are left out: they mark divergence and underflow).
POINT_MARKERS = ("o", "s", "^", "D", "P", "*", "h", "<", ">", "p")
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
    # the ten classic schemes in the order the init report lists them (registry.inits.CLASSIC_INITS)
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
    "sharpness": "sharpness λ_max(H)",
    "precond_sharpness": "precond. sharpness λ_max(P⁻¹H)",
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
        from optbench import registry

        index: dict[str, int] = {}
        for kind in ("optimizers", "schedulers", "problems", "inits", "losses"):
            names = registry.by_kind(kind).names()
            preferred = [n for n in _PREFERRED.get(kind, ()) if n in names]
            for i, name in enumerate(preferred + [n for n in names if n not in preferred]):
                index.setdefault(name, i)
        return index
    except Exception:  # noqa: BLE001 - colours must never break a figure; fall back to hashing
        return {}


def base_name(name) -> str:
    """The registry name of a spec string: ``steplr(step_size=50)`` -> ``steplr``."""
    return str(name).split("(", 1)[0].strip()


def name_color(name: str):
    """The same colour for the same registry name in every figure, whatever the spec's arguments.

    Registry names take the colour of their position in their registry (common names first; 24 colours
    and no registry has more entries, so two optimizers never share one); anything else (an import path)
    is hashed into the same palette.
    """
    base = base_name(name)
    if base in PRECISION_COLORS:
        return matplotlib.colors.to_rgb(PRECISION_COLORS[base])
    index = _registry_index().get(base)
    if index is None:
        index = int(hashlib.md5(base.encode()).hexdigest(), 16)
    return PALETTE[index % len(PALETTE)]


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def value_colors(values) -> dict:
    """Colour per value: registry names by ``name_color``; numbers by rank on viridis (0 to 0.9, so the
    lightest stays visible on white). Rank, not value: 8 lrs get 8 well separated colours."""
    unique = sorted(set(values), key=sort_key)
    if unique and all(_is_number(v) for v in unique):
        cmap = plt.get_cmap("viridis")
        span = max(1, len(unique) - 1)
        return {v: cmap(0.9 * i / span) for i, v in enumerate(unique)}
    return spec_colors(unique)


def lab(colour) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour or an array of them (last axis RGB[A]): L* 0 (black) to 100 (white)."""
    rgb = np.asarray(colour, dtype=float)[..., :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def colour_distance(a, b) -> float:
    """ΔE*ab: the Euclidean distance of two colours in CIELAB."""
    return float(np.linalg.norm(lab(matplotlib.colors.to_rgb(a)) - lab(matplotlib.colors.to_rgb(b))))


def _apart(colours) -> bool:
    """No two of ``colours`` (nor one and the grey, dark grey or black the figures reserve) look alike."""
    points = lab(
        np.array([matplotlib.colors.to_rgb(c) for c in [*colours, GREY, DEFAULT_COLOUR, MARK_COLOUR]])
    )
    gaps = np.linalg.norm(points[:, None] - points[None], axis=-1)
    gaps[np.diag_indices(len(points))] = np.inf
    return bool(gaps[: len(colours)].min() >= MIN_COLOUR_DISTANCE) if len(colours) else True


def distinct_colors(values) -> dict:
    """A colour per value such that every two differ by at least ``MIN_COLOUR_DISTANCE``.

    Registry names keep their ``spec_colors`` where those stay apart (one optimizer, one colour in every
    figure); otherwise (numbers, shades or hashed names that come close, a precision's grey) the values take
    ``PALETTE`` in sorted order, so the legend reads in order and a value has one colour in all panels. More
    values than ``PALETTE`` has colours raise OptbenchError: no two lines may look alike."""
    unique = sorted(set(values), key=sort_key)
    if len(unique) > len(PALETTE):
        raise OptbenchError(
            f"{len(unique)} colours needed but only {len(PALETTE)} stay distinct; name the varying columns "
            "with --hue/--col/--row, lower --top or narrow the runs with --where"
        )
    if unique and not any(_is_number(v) for v in unique):
        named = spec_colors(unique)
        if _apart(list(named.values())):
            return named
    return {v: PALETTE[i] for i, v in enumerate(unique)}


_SHADES = (0.0, -0.45, 0.45, -0.7, 0.25, -0.25)  # <0: towards black, >0: towards white


def spec_colors(names) -> dict:
    """``name_color`` per spec; specs of one registry name (``steplr``, ``steplr(gamma=0.5)``) keep its hue
    in different shades (darker, then lighter), so they stay one family yet never look alike."""
    colors, seen = {}, {}
    for name in dict.fromkeys(names):
        base = base_name(name)
        shade = _SHADES[seen.get(base, 0) % len(_SHADES)]
        seen[base] = seen.get(base, 0) + 1
        rgb = np.array(name_color(name)[:3])
        target = np.ones(3) if shade > 0 else np.zeros(3)
        colors[name] = tuple(rgb + abs(shade) * (target - rgb))
    return colors


def line_styles(keys) -> dict:
    """A distinct (linestyle, marker) per key, in order: the dashes first, then dashes with markers.

    ``len(DASHES) * len(MARKERS)`` keys at most; more raise OptbenchError (no two lines may look alike).
    """
    keys = list(dict.fromkeys(keys))
    limit = len(DASHES) * len(MARKERS)
    if len(keys) > limit:
        raise OptbenchError(
            f"{len(keys)} line styles needed but only {limit} stay distinct; name the varying columns "
            "with --hue/--col/--row or narrow the runs with --where"
        )
    return {key: (DASHES[i % len(DASHES)], MARKERS[i // len(DASHES)]) for i, key in enumerate(keys)}


def marker_styles(keys) -> dict:
    """A distinct ("none", marker shape) per key, in order, for lines of one point each (a dash would not
    show); more than ``len(POINT_MARKERS)`` keys raise OptbenchError."""
    keys = list(dict.fromkeys(keys))
    if len(keys) > len(POINT_MARKERS):
        raise OptbenchError(
            f"{len(keys)} marker shapes needed (every line is one point) but only {len(POINT_MARKERS)} stay "
            "distinct; name the varying columns with --hue/--col/--row or narrow the runs with --where"
        )
    return {key: ("none", POINT_MARKERS[i]) for i, key in enumerate(keys)}


def bounded_figsize(width: float, height: float) -> tuple[float, float]:
    """``(width, height)`` in inches, scaled down (aspect kept) to fit ``MAX_FIGSIZE``."""
    scale = min(1.0, MAX_FIGSIZE[0] / width, MAX_FIGSIZE[1] / height)
    return width * scale, height * scale


def sort_key(value):
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
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=stamp.metadata(path))
    plt.close(fig)
    return path


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


# -------------------------------------------------------------------------------------------------- layout


def lr_ticks(ax, lrs, max_ticks: int = 7) -> None:
    """Log-x ticks at the measured lrs (at most ``max_ticks``, evenly chosen) instead of crowded minors."""
    from matplotlib.ticker import NullFormatter

    lrs = [v for v in sorted(lrs) if v > 0]
    if not lrs or (len(lrs) > 2 * max_ticks and lrs[-1] / lrs[0] >= 100):
        return  # a dense grid over 2+ decades: the default ticks at 0.001, 0.01, ... read better
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


def hide_unused(axes, used: int) -> None:
    """Hide the panels past the first ``used``. With a shared x axis only the bottom row has tick labels,
    so the panel above a hidden one gets its own back."""
    n_cols = axes.shape[1]
    for index in range(used, axes.size):
        row, col = divmod(index, n_cols)
        axes[row, col].set_visible(False)
        if row > 0:
            axes[row - 1, col].xaxis.set_tick_params(which="both", labelbottom=True)


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, cols) for n panels: one row up to max_cols panels, then about square (4 -> 2 x 2)."""
    n = max(1, n)
    cols = n if n <= max_cols else min(max_cols, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


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
