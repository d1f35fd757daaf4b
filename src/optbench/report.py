"""``bench report DIR``: one self-contained HTML file (or Markdown with figure files) about a results folder.

The report only reads what is in DIR (never re-runs anything) and shows what applies to it:

- the command line and environment from manifest.json;
- for run folders (runs.parquet: lr-sweep, grid, lr-find): status counts, the best cell per optimizer,
  diverged counts, the analytic stability bound against the measured bracket for toy problems, the
  invalid/failed reasons; figures: loss vs step per lr, final loss vs lr (log x, diverged region shaded,
  bound dashed), the lr x momentum heatmap, trajectories on the contours of 2-D toy functions, the lr
  each scheduler used; for lr-find, the range test with its suggestions, compared with the best lr of
  any grid over the same problem and optimizer found beside DIR (or named with ``compare``);
- schedules.parquet (``bench schedules``): the lr per step of every scheduler;
- the init report's Parquet (layers/gains): its std-per-layer and gain figures, drawn by ``initplots``;
- the AMP benchmark's Parquet: the speed-up bars, drawn by ``ampplots``.

A part whose data or plotting module is absent is skipped. The HTML embeds every figure as a ``data:`` URI
and has no reference to the network: it opens offline. ``standard_figures`` draws the figures alone
(``bench plot DIR --figure NAME``).
"""

from __future__ import annotations

import contextlib
import base64
import html
import importlib
import json
import math
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.errors import OptbenchError
from optbench.spec import CONFIG_FIELDS

REPORT_FORMATS = ("html", "md")
FIGURE_NAMES = (
    "loss-vs-step",
    "sensitivity",
    "heatmap",
    "trajectories",
    "lr-schedules",
    "schedules",
    "lr-find",
    "init-std",
    "init-gains",
    "amp",
)
SCHEDULES_FILE = "schedules.parquet"
MAX_SENSITIVITY_PANELS = 24
ENV_KEYS = ("optbench", "torch", "python", "platform", "cpu", "cpu_count", "cuda_available", "cuda", "gpu")
_NOT_PARAMS = {"command", "argv", "started_at", "ended_at", *ENV_KEYS}

# Files other commands write, by the constant their module defines (fallback: the name used today).
_DATA_FILES = {
    "layers": ("optbench.initprobe", "LAYERS_FILE", "layers.parquet"),
    "gains": ("optbench.initprobe", "GAINS_FILE", "gains.parquet"),
    "amp": ("optbench.amp", "PARQUET_FILE", "amp.parquet"),
}


@dataclass
class Figure:
    name: str
    path: Path | None  # None: the figure could not be drawn, ``caption`` says why
    caption: str


@dataclass
class Table:
    title: str
    frame: Any  # pandas DataFrame
    note: str | None = None


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- reading DIR


def _data_file(kind: str) -> str:
    module, constant, fallback = _DATA_FILES[kind]
    try:
        return getattr(importlib.import_module(module), constant, fallback)
    except ImportError:
        return fallback


def _module(name: str):
    """A plotting module written by another part of optbench, or None while it does not exist."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@dataclass
class Results:
    """What a results folder holds (each part None where absent); traces are read on first use."""

    folder: Path
    manifest: dict
    runs: Any = None
    schedules: Any = None
    layers: Any = None
    gains: Any = None
    amp: Any = None
    _traces: Any = None

    @property
    def traces(self):
        if self._traces is None:
            from optbench import store

            self._traces = store.read_traces(self.folder)
        return self._traces

    @property
    def experiment(self) -> str | None:
        return self.manifest.get("experiment") or self.manifest.get("command")

    def empty(self) -> bool:
        parts = (self.runs, self.schedules, self.layers, self.amp)
        return all(p is None or len(p) == 0 for p in parts)


def load(folder: Path | str) -> Results:
    """Read every Parquet the report knows about; OptbenchError if DIR is missing or holds none."""
    import pandas as pd

    from optbench import store

    folder = Path(folder)
    if not folder.is_dir():
        raise OptbenchError(f"results folder {str(folder)!r} does not exist")
    results = Results(folder, store.read_manifest(folder))
    if (folder / store.RUNS_FILE).exists():
        results.runs = store.read_runs(folder)
    if (folder / SCHEDULES_FILE).exists():
        results.schedules = pd.read_parquet(folder / SCHEDULES_FILE)
    for kind in ("layers", "gains", "amp"):
        path = folder / _data_file(kind)
        if path.exists():
            setattr(results, kind, pd.read_parquet(path))
    if results.empty():
        raise OptbenchError(
            f"no results in {str(folder)!r}: expected {store.RUNS_FILE}, {SCHEDULES_FILE}, "
            f"{_data_file('layers')} or {_data_file('amp')}"
        )
    return results


# -------------------------------------------------------------------------------------------- run analysis


def _config_of(row) -> Any:
    """The RunConfig of a runs.parquet row (nulls back to None)."""
    from optbench.spec import RunConfig

    values = {}
    for name in CONFIG_FIELDS:
        value = row[name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = None  # momentum / batch_size: the default
        elif hasattr(value, "item"):
            value = value.item()
        values[name] = value
    return RunConfig(**values)


def varying(runs, exclude=("lr", "seed")) -> list[str]:
    """Config columns (besides ``exclude``) that take more than one value."""
    return [c for c in CONFIG_FIELDS if c not in exclude and runs[c].astype(str).nunique() > 1]


def _groups(runs, by: list[str]):
    return list(runs.groupby(by, dropna=False, sort=True)) if by else [((), runs)]


def _key(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def analytic_bounds(runs, by: list[str]) -> dict[tuple, float]:
    """Group key -> 2(1+m)/L where ``optbench.sweep.analytic_bound`` has one (SGD on the quadratic)."""
    from optbench.sweep import analytic_bound

    bounds = {}
    for key, group in _groups(runs, by):
        try:
            bound = analytic_bound(_config_of(group.iloc[0]))
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

    from optbench.stability import BoundCheck

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


def summarize(runs):
    """Per group (config minus seed): seeds, status counts, mean/std final loss, ``best`` per problem and
    optimizer.

    ``optbench.grid.summarize`` when the grid module is there (the same table ``bench grid`` prints),
    else the same definition here: best = lowest mean final loss among groups where every run is ok.
    """
    grid = _module("optbench.grid")
    if grid is not None and hasattr(grid, "summarize"):
        return grid.summarize(runs)
    frame = runs.assign(_ok_loss=runs["final_loss"].where(runs["status"] == "ok"))
    for status in ("ok", "diverged", "invalid", "failed"):
        frame[status] = (frame["status"] == status).astype(int)
    keys = [c for c in CONFIG_FIELDS if c != "seed"]
    summary = (
        frame.groupby(keys, dropna=False, sort=False)
        .agg(
            seeds=("run_id", "size"),
            ok=("ok", "sum"),
            diverged=("diverged", "sum"),
            invalid=("invalid", "sum"),
            failed=("failed", "sum"),
            final_loss_mean=("_ok_loss", "mean"),
            final_loss_std=("_ok_loss", "std"),
            reason=("reason", "first"),
        )
        .reset_index()
    )
    clean = summary[(summary["ok"] == summary["seeds"]) & summary["final_loss_mean"].notna()]
    summary["best"] = False
    if len(clean):
        summary.loc[
            clean.groupby(["problem", "optimizer"])["final_loss_mean"].idxmin().to_numpy(), "best"
        ] = True
    return summary


def best_cells(runs):
    summary = summarize(runs)
    best = summary[summary["best"]].sort_values(["problem", "final_loss_mean"])
    shown = [
        "problem",
        "optimizer",
        "lr",
        "momentum",
        *[c for c in varying(runs) if c not in ("problem", "optimizer", "momentum")],
        "seeds",
        "final_loss_mean",
        "final_loss_std",
    ]
    if runs["final_val_acc"].notna().any():
        acc = runs.groupby([c for c in CONFIG_FIELDS if c != "seed"], dropna=False)["final_val_acc"].mean()
        best = best.merge(acc.rename("final_val_acc_mean").reset_index(), how="left")
        shown.append("final_val_acc_mean")
    return best[[c for c in dict.fromkeys(shown) if c in best.columns]]


def status_table(runs):
    """Runs per status and the lrs where divergence starts, per problem/optimizer (and what else varies)."""
    import pandas as pd

    by = ["problem", "optimizer", *[c for c in varying(runs) if c not in ("problem", "optimizer")]][:4]
    rows = []
    for key, group in _groups(runs, by):
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


# ------------------------------------------------------------------------------------------ lr-find vs grid


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

    from optbench import lrfind, store

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


# ----------------------------------------------------------------------------------------------- figures


def _logx(lrs) -> bool:
    lrs = [v for v in lrs if v > 0]
    return bool(lrs) and max(lrs) / min(lrs) >= 10


class _Figures(list):
    """The figures drawn so far; ``draw`` records a figure, or a note when drawing it failed.

    A report must not die because one figure cannot be drawn (too many panels, a plotting module of another
    command that breaks on this data): the failure is shown where the figure would be.
    """

    def draw(self, name: str, caption: str, fn) -> None:
        try:
            path = fn()
        except Exception as err:  # noqa: BLE001 - shown in the report instead of the figure
            text = str(err) if isinstance(err, OptbenchError) else f"{type(err).__name__}: {err}"
            self.append(Figure(name, None, f"figure {name!r} not drawn: {text}"))
            return
        if path is not None:
            self.append(Figure(name, Path(path), caption))


def _run_figures(results: Results, outdir: Path, fmt: str, wanted, figures: _Figures) -> None:
    from optbench import facets, plots

    runs = results.runs
    done = runs[runs["status"].isin(["ok", "diverged"])]
    if done.empty:
        return
    by = varying(done)
    what = ", ".join(str(done[c].iloc[0]) for c in ("problem", "optimizer") if c not in by)
    lrs = sorted(done["lr"].unique())
    is_find = results.experiment == "lr-find"

    def loss_vs_step():
        path = outdir / f"loss_vs_step.{fmt}"
        if not by:
            return plots.loss_vs_step(
                done, results.traces, path, title=f"{what}: loss vs step per learning rate"
            )
        return facets.facet_plot(
            done,
            results.traces,
            path,
            y="loss",
            x="step",
            hue="lr",
            col=by[0],
            row=by[1] if len(by) > 1 else None,
            logy=True,
            title="training loss vs step per lr",
        ).path

    bounds = analytic_bounds(done, by) if len(lrs) >= 2 else {}

    def sensitivity():
        path = outdir / f"final_loss_vs_lr.{fmt}"
        title = f"{what}: final loss vs learning rate" if what else "final loss vs learning rate"
        if not by:
            return plots.final_loss_vs_lr(done, path, bound=bounds.get(()), logx=_logx(lrs), title=title)
        n_groups = len(_groups(done, by))
        if n_groups > MAX_SENSITIVITY_PANELS:
            raise OptbenchError(
                f"{n_groups} groups are too many panels; draw a selection with bench plot DIR "
                "--y final_loss --x lr --logx --logy --hue ... --where ..."
            )
        return plots.sensitivity(done, path, by=by, bounds=bounds, logx=_logx(lrs), title=title)

    def heatmap():
        return plots.lr_momentum_heatmap(
            done,
            outdir / f"heatmap_lr_momentum.{fmt}",
            by=[c for c in by if c != "momentum"],
            title=f"{what}: final loss over lr x momentum" if what else "final loss over lr x momentum",
        )

    if len(lrs) >= 2 and not is_find and wanted("loss-vs-step"):
        figures.draw(
            "loss-vs-step",
            "Training loss per step, one line per learning rate (mean over seeds, band ±1 "
            "std); an x ends a run that diverged.",
            loss_vs_step,
        )
    if len(lrs) >= 2 and not is_find and wanted("sensitivity"):
        figures.draw(
            "sensitivity",
            "Sensitivity: final loss per learning rate; red x = diverged, the shaded region "
            "is where every run diverged"
            + ("; the dashed line is the analytic bound 2(1+m)/L" if bounds else "")
            + ".",
            sensitivity,
        )
    if len(lrs) >= 2 and done["momentum"].astype(str).nunique() >= 2 and wanted("heatmap"):
        figures.draw(
            "heatmap",
            "Median final loss over seeds per (lr, momentum) cell; hatched red 'div' = every "
            "seed diverged, 'k/n div' = some did, grey n/a = could not run.",
            heatmap,
        )
    if wanted("trajectories"):
        traces = results.traces
        planar = traces.groupby("run_id")[["x0", "x1"]].apply(lambda t: t.notna().all(axis=None))
        for problem in sorted(done["problem"].unique()):
            ids = done[done["problem"] == problem]["run_id"]
            if not planar.reindex(ids).fillna(False).astype(bool).all():
                continue
            path = outdir / f"trajectories_{_slug(problem)}.{fmt}"
            figures.draw(
                "trajectories",
                f"Iterates of each optimizer on the contour lines of {problem} (start: "
                "black dot; last point: star).",
                lambda p=problem, path=path: plots.trajectories(done, traces, path, p),
            )
    if not is_find and (done["scheduler"] != "none").any() and wanted("lr-schedules"):
        figures.draw(
            "lr-schedules",
            "The lr each scheduler gave every step of a run, divided by the run's "
            "configured lr (one run per scheduler).",
            lambda: plots.schedules(
                _recorded_schedules(done, results.traces),
                outdir / f"lr_schedules.{fmt}",
                ylabel="lr / configured lr",
                title="lr multiplier each scheduler applied (recorded by the engine)",
            ),
        )
    if is_find and wanted("lr-find"):
        from optbench import lrfind

        def lr_find():
            found = lrfind.analyse_folder(results.folder)
            if found is None:
                return None
            analysis, run = found
            return lrfind.draw(analysis, outdir / f"lr_find.{fmt}", _config_of(run))

        figures.draw(
            "lr-find",
            "Learning-rate range test: loss per step against the lr that step used "
            "(exponential ramp), the bias-corrected EMA and the three suggestions.",
            lr_find,
        )


def _recorded_schedules(runs, traces):
    import pandas as pd

    frames = []
    for scheduler, group in runs.groupby("scheduler", sort=True):
        run = group.sort_values(["status", "steps_completed"], ascending=[False, False]).iloc[0]
        trace = traces[traces["run_id"] == run["run_id"]].sort_values("step")
        frames.append(
            pd.DataFrame({"scheduler": scheduler, "step": trace["step"], "lr": trace["lr"] / run["lr"]})
        )
    return pd.concat(frames, ignore_index=True)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text).strip("_")[:60]


def standard_figures(
    results: Results, outdir: Path, fmt: str = "png", only: set[str] | None = None
) -> list[Figure]:
    """Every standard figure that applies to ``results`` (or only the names in ``only``), drawn in ``outdir``."""
    from optbench import plots

    plots.check_format(fmt)
    unknown = set(only or ()) - set(FIGURE_NAMES)
    if unknown:
        raise OptbenchError(f"unknown figure {sorted(unknown)[0]!r}; valid: {', '.join(FIGURE_NAMES)}")

    def wanted(name: str) -> bool:
        return only is None or name in only

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    figures = _Figures()
    if results.runs is not None and len(results.runs):
        _run_figures(results, outdir, fmt, wanted, figures)
    if results.schedules is not None and wanted("schedules"):
        notes = results.manifest.get("schedule_notes", {})
        params = results.manifest.get("schedules", {})
        title = "lr per step of every scheduler"
        if params:
            title += f" (base lr {params.get('lr')}, {params.get('steps')} steps)"
        figures.draw(
            "schedules",
            "The lr each step uses, from the real scheduler objects on a dummy SGD optimizer "
            "(defaults derived from the run length).",
            lambda: plots.schedules(results.schedules, outdir / f"schedules.{fmt}", notes=notes, title=title),
        )
    initplots = _module("optbench.initplots")
    if initplots is not None and results.layers is not None and wanted("init-std"):
        figures.draw(
            "init-std",
            "Std of each layer's output through the deep stack, per init and activation "
            "(drawn by optbench.initplots).",
            lambda: initplots.plot_std_vs_layer(results.layers, outdir / f"std_vs_layer.{fmt}"),
        )
    if initplots is not None and results.gains is not None and wanted("init-gains"):
        figures.draw(
            "init-gains",
            "nn.init.calculate_gain against the measured gain per activation (drawn by optbench.initplots).",
            lambda: initplots.plot_gain_table(results.gains, outdir / f"gain_table.{fmt}"),
        )
    ampplots = _module("optbench.ampplots")
    if ampplots is not None and results.amp is not None and len(results.amp) and wanted("amp"):
        figures.draw(
            "amp",
            "Training-step speed-up over fp32 per width and precision (drawn by optbench.ampplots).",
            lambda: ampplots.plot_amp(results.amp, outdir / f"amp.{fmt}"),
        )
    return list(figures)


# ---------------------------------------------------------------------------------------------- sections


def _header(results: Results) -> Section:
    import pandas as pd

    manifest = results.manifest
    section = Section("Command and environment")
    if not manifest:
        section.text.append("This folder has no manifest.json: command and environment unknown.")
        return section
    argv = manifest.get("argv") or []
    argv = [str(a) for a in argv]
    if argv and Path(argv[0]).name in ("bench", "__main__.py"):  # the CLI (or python -m optbench)
        command = shlex.join(["bench", *argv[1:]])
    else:  # the Python API from a script, or a test runner: show what really ran
        command = shlex.join(argv) if argv else f"{manifest.get('command', '?')} (no argv recorded)"
    section.text.append(f"Command: `{command}`")
    when = f"started {manifest.get('started_at')}, ended {manifest.get('ended_at') or 'not recorded (interrupted?)'}"
    section.text.append(f"Experiment: {results.experiment or 'unknown'}; {when}.")
    env = [(k, manifest[k]) for k in ENV_KEYS if k in manifest]
    section.tables.append(Table("Environment", pd.DataFrame(env, columns=["key", "value"])))
    params = [(k, _compact(v)) for k, v in manifest.items() if k not in _NOT_PARAMS]
    if params:
        section.tables.append(
            Table("Parameters recorded in the manifest", pd.DataFrame(params, columns=["key", "value"]))
        )
    return section


def _compact(value, limit: int = 240) -> str:
    """One line of JSON (floats to 6 significant digits), cut at ``limit`` characters."""

    def shorten(v):
        if isinstance(v, float):
            return float(f"{v:.6g}")
        if isinstance(v, dict):
            return {k: shorten(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [shorten(x) for x in v]
        return v

    text = value if isinstance(value, str) else json.dumps(shorten(value), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _run_sections(results: Results, compare: list[Path]) -> list[Section]:
    runs = results.runs
    sections = []
    overview = Section("Runs")
    counts = runs["status"].value_counts()
    overview.text.append(
        f"{len(runs)} runs: "
        + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("ok", "diverged", "invalid", "failed"))
        + ". Varying: "
        + (", ".join(f"{c} ({runs[c].astype(str).nunique()})" for c in varying(runs, ("seed",))) or "nothing")
        + f"; seeds per cell: {runs['seed'].nunique()}."
    )
    if results.experiment != "lr-find":
        overview.tables.append(
            Table(
                "Best cell per optimizer (per problem and loss)",
                best_cells(runs),
                "Lowest mean final loss over seeds among cells where every seed finished ok.",
            )
        )
    overview.tables.append(Table("Status per group", status_table(runs)))
    reasons = reasons_table(runs)
    if reasons is not None:
        overview.tables.append(Table("Invalid and failed runs", reasons))
    sections.append(overview)
    if (runs["problem"].map(_is_toy)).any():
        table = stability_table(results)
        if len(table):
            stability = Section("Stability bound vs measurement")
            stability.text.append(
                "SGD (heavy ball m) on a quadratic of curvature L is stable iff lr < 2(1+m)/L. "
                "Measured: an lr is stable when every seed ends ok below its initial loss; the "
                "bound agrees when largest stable < bound <= smallest unstable."
            )
            stability.tables.append(Table("Analytic bound vs measured bracket", table))
            sections.append(stability)
    if results.experiment == "lr-find":
        sections.append(_lr_find_section(results, compare))
    else:
        comparison = lr_find_comparison(results, compare)
        if len(comparison):
            section = Section("lr-find suggestions vs this grid")
            section.tables.append(Table("Range-test suggestion against the grid's best lr", comparison))
            sections.append(section)
    return sections


def _is_toy(problem: str) -> bool:
    try:
        from optbench.problems import is_toy

        return is_toy(problem)
    except OptbenchError:
        return False


def _lr_find_section(results: Results, compare: list[Path]) -> Section:
    import pandas as pd

    section = Section("Learning-rate range test")
    info = results.manifest.get("lr_find", {})
    params = results.manifest.get("lr_find_params", {})
    run = results.runs.iloc[0]
    section.text.append(
        f"{run['problem']} with {run['optimizer']}: lr from {params.get('start')} to {params.get('end')} over "
        f"{params.get('steps')} steps (ExponentialLR), loss smoothed by an EMA with beta {params.get('beta')}; "
        f"stopped: {info.get('stopped_because', '?')} after {info.get('stop_step', '?')} steps. Suggested lr "
        f"(valley rule): {_fmt(results.manifest.get('suggested_lr'))}."
    )
    rules = [
        (
            "valley",
            info.get("valley_lr"),
            "longest decreasing stretch of the smoothed loss, about half way down",
        ),
        ("steepest", info.get("steepest_lr"), "most negative slope of the smoothed loss against log lr"),
        ("minimum/10", info.get("minimum_lr_div10"), "lr at the smallest smoothed loss, divided by 10"),
    ]
    section.tables.append(Table("Suggestions", pd.DataFrame(rules, columns=["rule", "lr", "meaning"])))
    comparison = lr_find_comparison(results, compare)
    if len(comparison):
        section.tables.append(
            Table(
                "Against the best lr of grids over the same problem and optimizer",
                comparison,
                "Grids found beside this folder (or named with --compare); best = lowest mean "
                "final loss over seeds.",
            )
        )
    else:
        section.text.append(
            "No grid over the same problem and optimizer was found beside this folder "
            "(name one with --compare) to compare the suggestion with."
        )
    return section


def _other_sections(results: Results) -> list[Section]:
    import pandas as pd

    sections = []
    if results.schedules is not None:
        section = Section("LR schedulers")
        notes = results.manifest.get("schedule_notes", {})
        if notes:
            section.tables.append(
                Table("Notes", pd.DataFrame(sorted(notes.items()), columns=["scheduler", "note"]))
            )
        sections.append(section)
    if results.layers is not None:
        section = Section("Init report")
        layers = results.layers
        rows = []
        for (init, act), group in layers.groupby(["init", "activation"], sort=False):
            bad = group[~group["finite"].astype(bool)]["layer"]
            last = group[group["layer"] == group["layer"].max()]["act_std"]
            rows.append(
                {
                    "init": init,
                    "activation": act,
                    "first non-finite layer": int(bad.min()) if len(bad) else None,
                    "std of the last layer": float(last.mean()) if len(last) else None,
                }
            )
        section.tables.append(Table("Activation std per init", pd.DataFrame(rows)))
        if results.gains is not None:
            section.tables.append(Table("Gains", results.gains))
        if _module("optbench.initplots") is None:
            section.text.append("(optbench.initplots is not installed: figures skipped.)")
        sections.append(section)
    if results.amp is not None:
        section = Section("Mixed precision (AMP)")
        shown = [
            c
            for c in (
                "width",
                "depth",
                "batch",
                "precision",
                "tf32",
                "median_s",
                "iqr_s",
                "speedup",
                "peak_mem_bytes",
                "device",
                "device_name",
            )
            if c in results.amp.columns
        ]
        section.tables.append(Table("Step time per width and precision", results.amp[shown]))
        if "warning" in results.amp.columns:
            warnings = list(
                dict.fromkeys(w for text in results.amp["warning"].dropna() for w in str(text).split("\n"))
            )
            section.text += [f"Warning: {w}" for w in warnings[:10]]
        if _module("optbench.ampplots") is None:
            section.text.append("(optbench.ampplots is not installed: figure skipped.)")
        sections.append(section)
    return sections


# Which section each figure belongs to.
_FIGURE_SECTION = {
    "loss-vs-step": "Runs",
    "sensitivity": "Runs",
    "heatmap": "Runs",
    "trajectories": "Runs",
    "lr-schedules": "Runs",
    "lr-find": "Learning-rate range test",
    "schedules": "LR schedulers",
    "init-std": "Init report",
    "init-gains": "Init report",
    "amp": "Mixed precision (AMP)",
}


def build_sections(
    results: Results, outdir: Path, fmt: str = "png", compare: list[Path] | None = None
) -> list[Section]:
    sections = [_header(results)]
    if results.runs is not None and len(results.runs):
        sections += _run_sections(results, list(compare or []))
    sections += _other_sections(results)
    by_title = {s.title: s for s in sections}
    for figure in standard_figures(results, outdir, fmt):
        by_title.get(_FIGURE_SECTION[figure.name], sections[-1]).figures.append(figure)
    return sections


# --------------------------------------------------------------------------------------------- rendering


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item") and not isinstance(value, str):
        with contextlib.suppress(ValueError, AttributeError):
            value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    return str(value)


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    frame = table.frame
    return [str(c) for c in frame.columns], [[_fmt(v) for v in row] for row in frame.itertuples(index=False)]


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1180px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #eee; }
h3 { font-size: 1.05em; margin-bottom: .3em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; } code, pre { background: #f6f6f6; font-size: .85em; }
pre { padding: .6em; overflow-x: auto; } nav ul { columns: 2; } .note { color: #666; font-size: .85em; }
"""


def _html_text(text: str) -> str:
    """Paragraph text: ```blocks``` become <pre>, `code` becomes <code>, the rest is escaped."""
    if text.count("```") >= 2:
        before, _, rest = text.partition("```")
        block, _, after = rest.partition("```")
        return _html_text(before) + f"<pre>{html.escape(block.strip())}</pre>" + _html_text(after)
    if not text.strip():
        return ""
    parts = text.split("`")
    out = "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))
    return f"<p>{out}</p>"


def _html_table(table: Table) -> str:
    head, rows = _cells(table)
    numeric = [all(_is_numeric_text(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"<h3>{html.escape(table.title)}</h3>"]
    if table.note:
        lines.append(f'<p class="note">{html.escape(table.note)}</p>')
    lines.append(
        "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
    )
    for row in rows:
        cells = "".join(
            f"<td{' class=num' if numeric[i] else ''}>{html.escape(v)}</td>" for i, v in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _is_numeric_text(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text == "–"


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".svg": "image/svg+xml"}[path.suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def render_html(sections: list[Section], title: str) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", "<nav><ul>"]
    body += [f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections)]
    body.append("</ul></nav>")
    for i, section in enumerate(sections):
        body.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>')
        body += [_html_text(t) for t in section.text]
        body += [_html_table(t) for t in section.tables]
        for figure in section.figures:
            if figure.path is None:
                body.append(f'<p class="note">{html.escape(figure.caption)}</p>')
                continue
            body.append(
                f'<figure><img src="{_data_uri(figure.path)}" alt="{html.escape(figure.name)}">'
                f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
            )
        body.append("</section>")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    # Text may quote URLs (torch warnings do); write "://" as an entity so the file names no network address.
    return page.replace("://", "&#58;//")


def render_markdown(sections: list[Section], title: str, base: Path) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for text in section.text:
            lines += [text, ""]
        for table in section.tables:
            head, rows = _cells(table)
            lines += [f"**{table.title}**", ""]
            if table.note:
                lines += [f"_{table.note}_", ""]
            lines.append("| " + " | ".join(h.replace("|", "\\|") for h in head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += [
                "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in row) + " |"
                for row in rows
            ]
            lines.append("")
        for figure in section.figures:
            if figure.path is None:
                lines += [f"_{figure.caption}_", ""]
                continue
            lines += [
                f"![{figure.name}]({figure.path.relative_to(base).as_posix()})",
                "",
                f"_{figure.caption}_",
                "",
            ]
    return "\n".join(lines)


def build_report(
    folder: Path | str,
    fmt: str = "html",
    figure_format: str = "png",
    compare: list[Path | str] | None = None,
    out: Path | str | None = None,
) -> Path:
    """Write DIR/report.html (figures embedded) or DIR/report.md (+ DIR/report_files/); return its path."""
    from optbench import store

    if fmt not in REPORT_FORMATS:
        raise OptbenchError(f"unknown report format {fmt!r}; valid: {', '.join(REPORT_FORMATS)}")
    if fmt == "html" and figure_format not in ("png", "svg"):
        raise OptbenchError(f"--figure-format {figure_format!r} cannot be embedded in HTML; valid: png, svg")
    for other in compare or []:
        if not Path(other).is_dir():
            raise OptbenchError(f"--compare folder {str(other)!r} does not exist")
    results = load(folder)
    folder = Path(folder)
    title = f"optbench report: {folder.resolve().name}"
    compare = [Path(c) for c in compare or []]
    if fmt == "md":
        target = Path(out) if out is not None else folder / "report.md"
        figdir = target.parent / f"{target.stem}_files"
        sections = build_sections(results, figdir, figure_format, compare)
        store.write_text_atomic(render_markdown(sections, title, target.parent), target)
        return target
    target = Path(out) if out is not None else folder / "report.html"
    with tempfile.TemporaryDirectory(prefix="optbench-report-") as tmp:
        sections = build_sections(results, Path(tmp), figure_format, compare)
        store.write_text_atomic(render_html(sections, title), target)
    return target
