"""The grid's summary: one row per group of seeds, with the best cell per optimizer (``summarize``), and the
compact answer a reader wants from a large grid (``summary``: every setting best first, the best one per
optimizer with its stable lr range)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optbench.errors import OptbenchError
from optbench.grid.axes import PROBLEM_OPTIONS
from optbench.spec import CONFIG_FIELDS, Spec, parse_spec

GROUP_COLUMNS = tuple(c for c in CONFIG_FIELDS if c != "seed")


def _problem_without_architecture(problem: str) -> str:
    """The problem spec minus the folded --width/--depth/--activation: what defines the data."""
    spec = parse_spec(problem, what="problem")
    return Spec(spec.name, tuple((k, v) for k, v in spec.kwargs if k not in PROBLEM_OPTIONS)).canonical()


def summarize(runs):
    """One row per group (the config minus the seed), in first-appearance order.

    Columns: the group's config columns, ``seeds`` (runs in the group), ``ok``, ``diverged``, ``invalid``,
    ``failed``, ``final_loss_mean`` / ``final_loss_std`` (over the group's ``ok`` runs; std with ddof=1,
    NaN for a single run), ``reason`` (the first invalid/failed reason) and ``best``: True for the best
    cell of each optimizer per problem and loss, the group with the lowest mean final loss among groups
    where every run is ok. Losses of different problems or loss functions are not comparable; an MLP's
    width, depth and activation are settings like the lr (same data, same loss), so they compete.
    """
    frame = runs.copy()
    for status in ("ok", "diverged", "invalid", "failed"):
        frame[f"_{status}"] = (frame["status"] == status).astype("int64")
    frame["_ok_loss"] = frame["final_loss"].where(frame["status"] == "ok").astype("float64")
    keys = [c for c in GROUP_COLUMNS if c in frame.columns]
    grouped = frame.groupby(keys, dropna=False, sort=False)
    summary = grouped.agg(
        seeds=("run_id", "size"),
        ok=("_ok", "sum"),
        diverged=("_diverged", "sum"),
        invalid=("_invalid", "sum"),
        failed=("_failed", "sum"),
        final_loss_mean=("_ok_loss", "mean"),
        final_loss_std=("_ok_loss", "std"),
        reason=("reason", "first"),
    ).reset_index()
    clean = (summary["ok"] == summary["seeds"]) & summary["final_loss_mean"].notna()
    summary["best"] = False
    candidates = summary[clean]
    if len(candidates):
        comparable = [candidates["problem"].map(_problem_without_architecture), "optimizer"]
        if "loss" in candidates.columns:
            comparable.append("loss")
        best = candidates.groupby(comparable, sort=False)["final_loss_mean"].idxmin()
        summary.loc[best.to_numpy(), "best"] = True
    return summary


# ------------------------------------------------------------------------------------- the compact answer

# The axes a reader compares, in the order tables and figures name them. An MLP's width, depth and
# activation are folded into the problem spec when a grid runs; here they are axes of their own again.
AXIS_ORDER = (
    "problem",
    *PROBLEM_OPTIONS,
    "optimizer",
    "scheduler",
    "lr",
    "momentum",
    "init",
    "loss",
    "precision",
    "device",
    "steps",
    "batch_size",
    "head_lr_scale",
    "freeze",
)
# Columns of the settings table that can be sorted on; higher is better only for accuracy.
SORT_COLUMNS = (
    "final_loss",
    "best_loss",
    "final_val_loss",
    "final_val_acc",
    "wall_time_s",
    "diverged",
    "lr",
)
HIGHER_IS_BETTER = ("final_val_acc",)


def axis_frame(runs):
    """``runs`` with the problem spec split into axes: ``problem`` keeps what defines the data (the name and
    any other argument), and each folded option (width, depth, activation) that some problem sets becomes
    a column of its own (None where a spec leaves it at the default). The full spec stays in
    ``problem_spec``."""
    frame = runs.copy()
    specs = {p: parse_spec(p, what="problem") for p in frame["problem"].unique()}
    frame["problem_spec"] = frame["problem"]
    frame["problem"] = frame["problem"].map({p: _problem_without_architecture(p) for p in specs})
    for option in PROBLEM_OPTIONS:
        values = {p: s.kw.get(option) for p, s in specs.items()}
        if any(v is not None for v in values.values()):
            frame[option] = frame["problem_spec"].map(values).astype(object)
    return frame


def varying_axes(frame) -> list[str]:
    """The axes of ``axis_frame(runs)`` that take more than one value, in ``AXIS_ORDER``."""
    return [c for c in AXIS_ORDER if c in frame.columns and _as_text(frame[c]).nunique() > 1]


def _as_text(column):
    """Values as text, missing ones included ("nan", "None"): what tells settings apart."""
    return column.astype(object).map(str)


def default_by(frame) -> list[str]:
    """What "best" is per: the optimizer, and the problem, scheduler and loss where they vary (losses of
    different problems or loss functions are not comparable; a scheduler is a choice worth seeing)."""
    varying = set(varying_axes(frame))
    return [c for c in ("problem", "optimizer", "scheduler", "loss") if c == "optimizer" or c in varying]


def settings_table(runs, by: list[str] | None = None):
    """One row per setting (every axis but the seed) with the outcome over its seeds, best per ``by`` marked.

    Columns: the axes (``AXIS_ORDER``, problem split), ``seeds`` (runs), ``ok``, ``diverged``, ``invalid``,
    ``failed``, ``final_loss`` (mean over the ok runs) and ``final_loss_std`` (ddof=1; NaN for one run),
    ``best_loss``, ``final_val_loss``, ``final_val_acc`` (means over the ok runs), ``wall_time_s`` (mean),
    ``best`` (the lowest mean final loss per ``by`` among settings where every seed finished ok) and, on best
    rows, ``stable_lr_min``/``stable_lr_max``: the contiguous lrs around the best one, other axes held
    fixed, where every seed finished ok (a range that touches the grid's edge may go on beyond it).
    """
    frame = axis_frame(runs)
    by = list(dict.fromkeys(by)) if by else default_by(frame)  # --by optimizer --by optimizer: once
    unknown = [c for c in by if c not in frame.columns or c not in AXIS_ORDER]
    if unknown:
        valid = [c for c in AXIS_ORDER if c in frame.columns]
        raise OptbenchError(f"unknown --by {unknown[0]!r}; valid: {', '.join(valid)}")
    # losses of different problems or loss functions are never compared: a user's --by keeps them apart too
    by = [c for c in comparable_axes(frame) if c not in by] + by
    axes = [c for c in AXIS_ORDER if c in frame.columns]
    table = _aggregate_seeds(frame, axes)
    table["best"] = False
    table["stable_lr_min"] = float("nan")
    table["stable_lr_max"] = float("nan")
    clean = table[(table["ok"] == table["seeds"]) & table["final_loss"].notna()]
    if len(clean):
        best = clean.groupby([_as_text(clean[c]) for c in by], sort=False)["final_loss"].idxmin()
        table.loc[best.to_numpy(), "best"] = True
        for index in best.to_numpy():
            table.loc[index, ["stable_lr_min", "stable_lr_max"]] = _stable_lr_range(table, index, axes)
    table.attrs["by"] = by
    table.attrs["axes"] = axes
    return table


def _aggregate_seeds(frame, axes: list[str]):
    for status in ("ok", "diverged", "invalid", "failed"):
        frame[f"_{status}"] = (frame["status"] == status).astype("int64")
    ok = frame["status"] == "ok"
    measured = ("final_loss", "best_loss", "final_val_loss", "final_val_acc")
    for column in measured:
        frame[f"_{column}"] = frame[column].where(ok).astype("float64")
    grouped = frame.groupby(axes, dropna=False, sort=False)
    return grouped.agg(
        seeds=("run_id", "size"),
        ok=("_ok", "sum"),
        diverged=("_diverged", "sum"),
        invalid=("_invalid", "sum"),
        failed=("_failed", "sum"),
        final_loss=("_final_loss", "mean"),
        final_loss_std=("_final_loss", "std"),
        best_loss=("_best_loss", "mean"),
        final_val_loss=("_final_val_loss", "mean"),
        final_val_acc=("_final_val_acc", "mean"),
        wall_time_s=("wall_time_s", "mean"),
    ).reset_index()


def _stable_lr_range(table, index, axes: list[str]) -> tuple[float, float]:
    """Walk out from the best row's lr over its siblings (same axes but lr) while every seed finished ok."""
    row = table.loc[index]
    same = np.ones(len(table), dtype=bool)
    for column in axes:
        if column != "lr":
            same &= (_as_text(table[column]) == str(row[column])).to_numpy()
    siblings = table[same].sort_values("lr")
    lrs = siblings["lr"].to_numpy(dtype=float)
    stable = (siblings["ok"] == siblings["seeds"]).to_numpy()
    i = int(np.flatnonzero(lrs == row["lr"])[0])
    lo, hi = i, i
    while lo > 0 and stable[lo - 1]:
        lo -= 1
    while hi < len(lrs) - 1 and stable[hi + 1]:
        hi += 1
    return float(lrs[lo]), float(lrs[hi])


def comparable_axes(table) -> list[str]:
    """The axes whose values make losses incomparable (problem, loss function) that vary in ``table``:
    settings are ranked within each combination of them, never across."""
    return [c for c in ("problem", "loss") if c in table.columns and _as_text(table[c]).nunique() > 1]


def sort_settings(table, sort: str = "final_loss"):
    """The settings table sorted best first on ``sort`` within each problem (and loss function) when they
    differ: their losses are not comparable. Ties (``diverged``, ``lr``) go to the lower final loss;
    settings without a value (every seed diverged) last."""
    check_sort(sort)
    keys = comparable_axes(table) + [sort] + (["final_loss"] if sort != "final_loss" else [])
    ascending = [True] * len(keys)
    ascending[keys.index(sort)] = sort not in HIGHER_IS_BETTER
    ordered = table.sort_values(keys, ascending=ascending, na_position="last", kind="stable")
    ordered = ordered.reset_index(drop=True)
    ordered.attrs = dict(table.attrs)
    return ordered


def check_sort(sort: str, top: int | None = None) -> None:
    """Validate ``--sort`` and ``--top`` (one line naming the bad value)."""
    if sort not in SORT_COLUMNS:
        raise OptbenchError(f"unknown --sort {sort!r}; valid: {', '.join(SORT_COLUMNS)}")
    if top is not None and top < 1:
        raise OptbenchError(f"--top must be >= 1, got {top}")


# Always there to rank on, even when every run diverged (final_loss: the default, "-" throughout).
ALWAYS_SORTABLE = ("final_loss", "diverged", "lr")


def sortable_columns(table) -> list[str]:
    """The ``SORT_COLUMNS`` these settings have a value in (val loss, accuracy: a held-out set only)."""
    return [c for c in SORT_COLUMNS if c in ALWAYS_SORTABLE or bool(table[c].notna().any())]


def check_sort_values(table, sort: str) -> None:
    """Refuse to rank on a column no setting has a value in (it would list the grid in its own order)."""
    valid = sortable_columns(table)
    if sort not in valid:
        raise OptbenchError(
            f"--sort {sort!r}: no run here has a {sort} (only problems with a held-out set measure it); "
            f"valid here: {', '.join(valid)}"
        )


def summary(results, *, by: list[str] | None = None, top: int | None = None, sort: str = "final_loss"):
    """The settings of a grid, best first: ``settings_table`` sorted on ``sort``, the first ``top`` rows.

    ``results`` is a results folder (its runs.parquet) or a runs DataFrame. ``by``: what "best" is per
    (default: the optimizer, and the problem, scheduler and loss where they vary). Best rows carry their
    stable lr range. Example: ``optbench.summary("results/grid", top=10)``.
    """
    check_sort(sort, top)
    runs = load_runs(results) if isinstance(results, (str, Path)) else results
    table = settings_table(runs, by)
    check_sort_values(table, sort)
    table = sort_settings(table, sort)
    return table.head(top) if top is not None else table


def load_runs(folder: str | Path):
    """runs.parquet of a results folder; one-line OptbenchError when there is none or it is empty."""
    from optbench import store

    folder = Path(folder)
    if not (folder / store.RUNS_FILE).exists():
        raise OptbenchError(
            f"no {store.RUNS_FILE} in {str(folder)!r}: not a grid, lr-sweep or lr-find folder"
        )
    runs = store.read_runs(folder)
    if runs.empty:
        raise OptbenchError(f"{str(folder / store.RUNS_FILE)!r} has no runs")
    return runs
