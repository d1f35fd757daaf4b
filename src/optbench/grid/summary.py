"""The grid's summary: one row per group of seeds, with the best cell per optimizer."""

from __future__ import annotations

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
