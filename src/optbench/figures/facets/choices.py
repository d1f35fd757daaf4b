"""The choices of a faceted figure: which columns make panels, colours and line styles, which scales, which
rows (``--where``); every default resolved into one ``FacetSpec`` (see the package docstring)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.spec import TRACE_COLUMNS

BANDS = ("std", "ci95", "range", "none")
MAX_PANELS = 24
MAX_LEGEND = 24  # legend entries, section titles included
TOP_DEFAULT = 6
LOG_Y = ("loss", "val_loss", "grad_norm", "update_norm", "final_loss", "best_loss", "final_val_loss")
PANEL_SIZE = (3.5, 2.6)  # inches per panel before the figure is bounded
LEGEND_WIDTH = 2.3  # inches beside the panels


@dataclass
class FacetSpec:
    """What one faceted figure shows, every default resolved (``resolve``)."""

    y: str
    x: str
    kind: str  # "trace": y per step; "run": y per run
    hue: str | None
    col: str | None
    row: str | None
    style_by: list[str]  # varying axes not named above: they set the line style
    logy: bool
    logx: bool
    band: str = "std"
    top: int = TOP_DEFAULT


@dataclass
class FacetResult:
    path: Path | None
    rows: list = field(default_factory=list)  # row values, top to bottom ([None] without a row axis)
    cols: list = field(default_factory=list)  # col values, left to right ([None] without a col axis)
    lines: int = 0  # lines drawn over all panels (highlighted and grey)
    highlighted: int = 0  # lines drawn in colour
    split_by: list[str] = field(default_factory=list)  # varying axes that set the line style
    spec: FacetSpec | None = None
    panels: list = field(default_factory=list)  # (row value, col value) of each drawn axes, in fig.axes order
    colours: dict = field(default_factory=dict)  # hue value -> colour of the highlighted lines
    shape: tuple[int, int] = (
        1,
        1,
    )  # (rows, cols) of the drawn grid: 4 col panels without a row wrap to 2 x 2

    @property
    def n_axes(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def layout(self) -> str:
        """What is drawn: ``2 x 2 panels``, or ``5 panels on 2 x 3`` where the last row is not full."""
        rows, cols = self.shape
        if self.n_axes == 1:
            return "1 panel"
        return (
            f"{rows} x {cols} panels"
            if rows * cols == self.n_axes
            else f"{self.n_axes} panels on {rows} x {cols}"
        )


def _numeric(frame, column: str) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])


def check_columns(runs, *, y: str, x: str, hue: str | None, col: str | None, row: str | None) -> str:
    """Validate the column choices; return ``"trace"`` or ``"run"`` (where y lives)."""
    trace_numeric = [c for c in TRACE_COLUMNS if c not in ("run_id", "skipped_step")]
    run_numeric = [c for c in runs.columns if c != "run_id" and _numeric(runs, c)]
    if y in trace_numeric:
        kind = "trace"
        if x not in trace_numeric:
            hint = " (per-run; with it use a per-run --y such as final_loss)" if x in runs.columns else ""
            raise OptbenchError(
                f"unknown --x {x!r} for per-step --y {y!r}{hint}; valid: {', '.join(trace_numeric)}"
            )
    elif y in run_numeric:
        kind = "run"
        if x not in run_numeric:
            raise OptbenchError(f"unknown --x {x!r} for per-run --y {y!r}; valid: {', '.join(run_numeric)}")
    else:
        valid = ", ".join(dict.fromkeys(trace_numeric + run_numeric))
        raise OptbenchError(f"unknown --y {y!r}; valid: {valid}")
    for option, value in (("--hue", hue), ("--col", col), ("--row", row)):
        if value is not None and (value not in runs.columns or value == "run_id"):
            group_cols = [c for c in runs.columns if c not in ("run_id", "problem_spec")]
            raise OptbenchError(f"unknown {option} {value!r}; valid: {', '.join(group_cols)}")
    return kind


def _check_distinct(hue: str | None, col: str | None, row: str | None, x: str) -> None:
    named = [(o, v) for o, v in (("--hue", hue), ("--col", col), ("--row", row), ("--x", x)) if v]
    for i, (option, value) in enumerate(named):
        for other, same in named[i + 1 :]:
            if value == same:
                raise OptbenchError(
                    f"{option} and {other} both name {value!r}; each needs a column of its own "
                    "(--hue/--col/--row none leaves one out)"
                )


def _auto_panels(varying: list[str], col: str | None, row: str | None, given: set[str]):
    """col = optimizer, row = problem/scheduler/loss, each where it varies and is not named elsewhere."""
    candidates = [c for c in ("optimizer", "problem", "scheduler", "loss") if c in varying and c not in given]
    if col == "auto":
        col = candidates.pop(0) if candidates else None
    if row == "auto":
        row = next((c for c in candidates if c != col), None)
    return col, row


def resolve(
    runs,
    *,
    y: str = "loss",
    x: str | None = None,
    hue: str | None = "auto",
    col: str | None = "auto",
    row: str | None = "auto",
    logy: bool | None = None,
    logx: bool | None = None,
    band: str = "std",
    top: int = TOP_DEFAULT,
) -> FacetSpec:
    """Fill the defaults from the data (module docstring); ``"auto"`` means choose, None means leave out.

    ``runs`` is ``grid.summary.axis_frame(runs)`` (the problem spec split into axes)."""
    from optbench.grid.summary import varying_axes

    if band not in BANDS:
        raise OptbenchError(f"unknown --band {band!r}; valid: {', '.join(BANDS)}")
    if top < 1:
        raise OptbenchError(f"--top must be >= 1, got {top}")
    x = x or ("step" if y in TRACE_COLUMNS else "lr")
    named = {v for v in (hue, col, row) if v not in (None, "auto")}
    given = {k: (None if v == "auto" else v) for k, v in (("hue", hue), ("col", col), ("row", row))}
    kind = check_columns(runs, y=y, x=x, **given)
    varying = [c for c in varying_axes(runs) if c != x]
    col, row = _auto_panels(varying, col, row, named | {x})
    if hue == "auto":
        rest = [c for c in varying if c not in (col, row) and c not in named]
        hue = max(rest, key=lambda c: runs[c].astype(object).map(str).nunique()) if rest else None
    _check_distinct(hue, col, row, x)
    style_by = [c for c in varying if c not in (hue, col, row)]
    if logy is None:
        logy = y in LOG_Y
    if logx is None:
        values = runs[x] if x in runs.columns else None
        logx = x == "lr" and values is not None and values.min() > 0 and values.max() / values.min() >= 10
    return FacetSpec(y, x, kind, hue, col, row, style_by, bool(logy), bool(logx), band, top)


# ----------------------------------------------------------------------------------------- the data


def parse_where(items: list[str] | None, runs) -> list[tuple[str, str]]:
    """``column=value`` filters (value compared as text, numbers also numerically)."""
    filters = []
    for item in items or []:
        column, sep, value = item.partition("=")
        column = column.strip()
        if not sep or column not in runs.columns:
            raise OptbenchError(
                f"bad --where {item!r}: expected COLUMN=VALUE with COLUMN one of "
                f"{', '.join(c for c in runs.columns if c not in ('run_id', 'problem_spec'))}"
            )
        filters.append((column, value.strip()))
    return filters


def apply_where(runs, filters: list[tuple[str, str]]):
    for column, value in filters:
        mask = runs[column].astype(object).map(str) == value
        with contextlib.suppress(TypeError, ValueError):
            mask |= (runs[column].astype(float) - float(value)).abs() <= 1e-12 * max(1.0, abs(float(value)))
        runs = runs[mask]
    if runs.empty:
        raise OptbenchError(f"no runs left after --where {' '.join(f'{c}={v}' for c, v in filters)}")
    return runs


def default_name(y: str, x: str, hue: str | None, col: str | None, row: str | None) -> str:
    parts = [f"{y}_vs_{x}"] + [f"by_{c}" for c in (hue, col, row) if c and c != "auto"]
    return "plot_" + "_".join(parts)
