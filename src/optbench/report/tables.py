"""The report's analysis tables: best cells, status per group, the stability bound against the measured
bracket, invalid/failed reasons, lr-find suggestions against grids."""

from __future__ import annotations

import math
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.grid.summary import summarize
from optbench.report.load import Results, config_of
from optbench.spec import CONFIG_FIELDS


def varying(runs, exclude=("lr", "seed")) -> list[str]:
    """Config columns (besides ``exclude``) that take more than one value."""
    return [c for c in CONFIG_FIELDS if c not in exclude and runs[c].astype(str).nunique() > 1]


def _groups(runs, by: list[str]):
    return list(runs.groupby(by, dropna=False, sort=True)) if by else [((), runs)]


def _key(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def analytic_bounds(runs, by: list[str]) -> dict[tuple, float]:
    """Group key -> 2(1+m)/L where ``optbench.sweep.analytic_bound`` has one (SGD on the quadratic)."""
    from optbench.experiments.sweep import analytic_bound

    bounds = {}
    for key, group in _groups(runs, by):
        try:
            bound = analytic_bound(config_of(group.iloc[0]))
        except OptbenchError:
            bound = None
        if bound is not None:
            bounds[_key(key)] = bound
    return bounds


def stability_table(results: Results):
    """Analytic bound vs the measured bracket, per group (config minus lr and seed) that has a bound.

    An lr is stable when every seed finished ok with its final loss below its initial loss (as in lr-sweep).
    """
    import pandas as pd

    from optbench.experiments.stability import BoundCheck

    runs = results.runs
    by = [c for c in CONFIG_FIELDS if c not in ("lr", "seed")]
    rows = []
    initial = None
    for key, group in _groups(runs, by):
        bound = analytic_bounds(group, []).get(())
        if bound is None or group["lr"].nunique() < 2:
            continue
        if initial is None:
            first = results.traces[results.traces["step"] == 0]
            initial = dict(zip(first["run_id"], first["loss"], strict=True))
        group = group.assign(
            stable=(group["status"] == "ok") & (group["final_loss"] < group["run_id"].map(initial))
        )
        per_lr = group[group["status"].isin(["ok", "diverged"])].groupby("lr")["stable"].all()
        stable = per_lr[per_lr]
        largest = float(stable.index.max()) if len(stable) else None
        above = per_lr[~per_lr & (per_lr.index > (largest or 0))]
        check = BoundCheck(bound, largest, float(above.index.min()) if len(above) else None)
        row = dict(zip(by, _key(key), strict=True))
        rows.append(
            {
                "problem": row["problem"],
                "optimizer": row["optimizer"],
                "momentum": row["momentum"],
                "scheduler": row["scheduler"],
                "analytic bound (lr <)": bound,
                "largest stable lr": check.largest_stable,
                "smallest unstable lr": check.smallest_unstable,
                "agrees": {True: "yes", False: "NO", None: "not tested"}[check.agrees],
            }
        )
    return pd.DataFrame(rows)


def status_table(runs):
    """Runs per status and the lrs where divergence starts, per problem/optimizer (and what else varies,
    an MLP's width, depth and activation as axes of their own, as in the summary)."""
    import pandas as pd

    from optbench.grid.summary import axis_frame, varying_axes

    frame = axis_frame(runs)
    others = [c for c in varying_axes(frame) if c not in ("problem", "optimizer", "lr")]
    by = ["problem", "optimizer", *others][:5]
    rows = []
    for key, group in _groups(frame, by):
        row = dict(zip(by, _key(key), strict=True))
        counts = group["status"].value_counts()
        diverged = group[group["status"] == "diverged"]
        row.update(
            {
                "runs": len(group),
                **{s: int(counts.get(s, 0)) for s in ("ok", "diverged", "invalid", "failed")},
                "smallest diverged lr": float(diverged["lr"].min()) if len(diverged) else None,
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def reasons_table(runs):
    bad = runs[runs["status"].isin(["invalid", "failed"])]
    if bad.empty:
        return None
    table = bad.groupby(["status", "optimizer", "reason"], dropna=False).size().rename("runs").reset_index()
    return table.sort_values("runs", ascending=False).head(20)


def _best_lr(runs, problem: str, optimizer: str, momentum) -> tuple[float, float, int] | None:
    """(best lr, its mean final loss, number of lrs) over a grid's runs of problem + optimizer."""
    part = runs[(runs["problem"] == problem) & (runs["optimizer"] == optimizer)]
    if momentum is not None and not (isinstance(momentum, float) and math.isnan(momentum)):
        same = part[part["momentum"] == momentum]
        part = same if len(same) else part
    if part["lr"].nunique() < 3:
        return None
    summary = summarize(part)
    clean = summary[(summary["ok"] == summary["seeds"]) & summary["final_loss_mean"].notna()]
    if clean.empty:
        return None
    best = clean.loc[clean["final_loss_mean"].idxmin()]
    return float(best["lr"]), float(best["final_loss_mean"]), int(part["lr"].nunique())


def _neighbours(folder: Path, compare: list[Path], limit: int = 200) -> list[Path]:
    """The ``compare`` folders, then the folders beside ``folder`` that have a manifest (each once)."""
    here = folder.resolve()
    siblings = sorted(p for p in here.parent.iterdir() if p.is_dir() and p != here)[:limit]
    found = [Path(c).resolve() for c in compare] + [p for p in siblings if (p / "manifest.json").exists()]
    return [p for p in dict.fromkeys(found) if p != here]


def lr_find_comparison(results: Results, compare: list[Path]):
    """lr-find suggestion vs the best lr of each grid over the same problem and optimizer.

    For an lr-find folder the grids are the folders in ``compare`` and beside DIR; for a grid folder, the
    lr-find folders there. Returns a DataFrame (possibly empty).
    """
    import pandas as pd

    from optbench import store
    from optbench.experiments import lrfind

    rows = []
    own = lrfind.analyse_folder(results.folder) if results.experiment == "lr-find" else None
    for other in _neighbours(results.folder, compare):
        if not (other / store.RUNS_FILE).exists():
            continue
        other_is_find = store.read_manifest(other).get("experiment") == "lr-find"
        if own is not None and not other_is_find:
            analysis, run = own
            finder, grid_runs, grid_name = results.folder, store.read_runs(other), other.name
        elif own is None and other_is_find and results.runs is not None:
            found = lrfind.analyse_folder(other)
            if found is None:
                continue
            analysis, run = found
            finder, grid_runs, grid_name = other, results.runs, results.folder.name
        else:
            continue
        best = _best_lr(grid_runs, run["problem"], run["optimizer"], run["momentum"])
        if best is None:
            continue
        best_lr, best_loss, n_lrs = best
        valley, tenth = analysis.valley_lr, analysis.minimum_lr_div10
        rows.append(
            {
                "lr-find folder": finder.name,
                "grid folder": grid_name,
                "problem": run["problem"],
                "optimizer": run["optimizer"],
                "grid lrs": n_lrs,
                "grid best lr": best_lr,
                "its final loss": best_loss,
                "valley lr": valley,
                "minimum/10 lr": tenth,
                "steepest lr": analysis.steepest_lr,
                "valley / best": valley / best_lr if valley else None,
                "minimum/10 / best": tenth / best_lr if tenth else None,
            }
        )
    return pd.DataFrame(rows)


SHARPNESS_ROWS = 40  # runs in the report's sharpness table (lr order; bench plot DIR --y sharpness for all)


def sharpness_table(results: Results):
    """Per run that tracked its sharpness: lambda at step 0 and at its last measurement against its
    stability threshold (2(1+m)/lr; Adam/AdamW's preconditioned one against (2+2 beta1)/((1-beta1) lr)),
    the run's regime and the largest Lanczos residual. None when no run tracked it."""
    import pandas as pd

    from optbench.figures.stability import tracked_columns

    traces = results.traces
    columns = tracked_columns(traces)
    if not columns:
        return None
    measured = traces[traces[columns].notna().any(axis=1)].sort_values("step")
    runs = results.runs[results.runs["run_id"].isin(set(measured["run_id"]))].sort_values(["lr", "seed"])
    settings = varying(runs, exclude=("lr",))
    by_run = dict(tuple(measured.groupby("run_id")))
    shown = runs.head(SHARPNESS_ROWS)
    shown = shown.assign(regime=regimes(shown, traces))
    rows = [_sharpness_row(run, by_run[run["run_id"]], settings, columns) for _, run in shown.iterrows()]
    return pd.DataFrame(rows)


def regimes(runs, traces) -> list[str | None]:
    """Each run's regime (``experiments.stability.regime``: monotone / catapult / no progress / diverged),
    read over an epoch's minibatches where the run takes minibatches."""
    from optbench.experiments.stability import regime
    from optbench.experiments.sweep import batches_per_epoch

    losses = dict(tuple(traces.sort_values("step").groupby("run_id")["loss"]))
    windows: dict[tuple, int] = {}
    found = []
    for _, run in runs.iterrows():
        key = (
            run["problem"],
            run["init"],
            run["loss"],
            None if _missing(run["batch_size"]) else run["batch_size"],
        )
        if key not in windows:
            try:
                windows[key] = batches_per_epoch(config_of(run))
            except OptbenchError:
                windows[key] = 1
        trace = losses.get(run["run_id"])
        found.append(regime([] if trace is None else trace.to_numpy(float), run["status"], windows[key]))
    return found


def _sharpness_row(run, measured, settings: list[str], columns: list[str]) -> dict:
    from optbench.experiments.stability import run_threshold

    momentum = None if _missing(run["momentum"]) else float(run["momentum"])
    row = {"lr": run["lr"], **{c: run[c] for c in settings}, "status": run["status"], "regime": run["regime"]}
    names = {"sharpness": "λ", "precond_sharpness": "λ(P⁻¹H)"}
    for column in columns:
        values = measured[["step", column]].dropna()
        threshold = run_threshold(column, run["optimizer"], momentum, float(run["lr"]))
        first = values[column].iloc[0] if len(values) else None
        last = values[column].iloc[-1] if len(values) else None
        row[f"first {names[column]}"] = first
        row[f"last {names[column]}"] = last
        row[f"step of last {names[column]}"] = int(values["step"].iloc[-1]) if len(values) else None
        row[f"threshold of {names[column]}"] = threshold
        row[f"last {names[column]} / threshold"] = (
            last / threshold if threshold and last is not None else None
        )
    row["largest residual"] = run.get("sharpness_residual")
    return row


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
