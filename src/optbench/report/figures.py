"""The report's standard figures: which apply to a results folder, drawn by the figures package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.figures.names import STANDARD_FIGURES
from optbench.figures.style import check_format
from optbench.report.document import Figure
from optbench.report.load import Results, config_of
from optbench.report.tables import _groups, analytic_bounds, varying

FIGURE_NAMES = STANDARD_FIGURES


MAX_HEATMAP_PANELS = 12
LOSS_LINES_PER_PANEL = 4  # loss-vs-step of a grid: the best few settings per panel, the rest grey


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
            refused = isinstance(err, OptbenchError)
            text = str(err) if refused else f"{type(err).__name__}: {err}"
            self.append(Figure(name, None, f"figure {name!r} not drawn: {text}", refused))
            return
        if path is not None:
            self.append(Figure(name, Path(path), caption))


@dataclass
class _RunFigures:
    """What the run figures of one folder share: the finished runs, what varies, where figures go."""

    results: Results
    outdir: Path
    fmt: str
    done: object  # the ok and diverged runs
    by: list[str]  # config columns besides lr and seed that vary
    what: str  # the fixed problem/optimizer, for titles

    @property
    def lrs(self) -> list:
        return sorted(self.done["lr"].unique())

    def path(self, stem: str) -> Path:
        return self.outdir / f"{stem}.{self.fmt}"

    def titled(self, text: str) -> str:
        return f"{self.what}: {text}" if self.what else text


def _loss_vs_step(ctx: _RunFigures):
    from optbench.figures import facets
    from optbench.figures import runs as plots

    if not ctx.by:
        title = ctx.titled("loss vs step per learning rate")
        return plots.loss_vs_step(ctx.done, ctx.results.traces, ctx.path("loss_vs_step"), title=title)
    title = "training loss vs step"
    return facets.facet_plot(
        ctx.done, ctx.results.traces, ctx.path("loss_vs_step"), top=LOSS_LINES_PER_PANEL, title=title
    ).path


def _bounds(ctx: _RunFigures) -> dict:
    """(problem, optimizer, momentum) -> the analytic bound 2(1+m)/L, where one applies."""
    return analytic_bounds(ctx.done, ["problem", "optimizer", "momentum"]) if len(ctx.lrs) >= 2 else {}


def _sensitivity(ctx: _RunFigures):
    from optbench.figures import runs as plots

    path = ctx.path("final_loss_vs_lr")
    bounds = _bounds(ctx)
    if not ctx.by:
        bound = next(iter(bounds.values()), None)
        title = ctx.titled("final loss vs learning rate")
        predicted = ctx.results.manifest.get("predicted_bound")
        if predicted is not None:  # an lr sweep's own figure: also the bound from lambda_0, the catapults
            from optbench.figures import stability
            from optbench.report.tables import regimes

            runs = ctx.done.assign(regime=regimes(ctx.done, ctx.results.traces))
            return stability.final_loss_vs_lr(
                runs, path, analytic_bound=bound, predicted_bound=predicted, logx=_logx(ctx.lrs), title=title
            )
        return plots.final_loss_vs_lr(ctx.done, path, bound=bound, logx=_logx(ctx.lrs), title=title)
    return plots.sensitivity(ctx.done, path, bounds=bounds, title=ctx.titled("final loss vs learning rate"))


def _heatmap(ctx: _RunFigures):
    from optbench.figures import runs as plots

    by = [c for c in ctx.by if c != "momentum"]
    groups = len(_groups(ctx.done, by))
    if groups > MAX_HEATMAP_PANELS:
        axis = next(c for c in by if c != "optimizer") if len(by) > 1 else by[0]
        value = ctx.done[axis].iloc[0]
        raise OptbenchError(
            f"{groups} lr x momentum panels are too many (max {MAX_HEATMAP_PANELS}); draw a selection, e.g. "
            f"bench plot {ctx.results.folder} --y final_loss --hue momentum --where {axis}={value}"
        )
    title = ctx.titled("final loss over lr x momentum")
    return plots.lr_momentum_heatmap(ctx.done, ctx.path("heatmap_lr_momentum"), by=by, title=title)


def _trajectories(ctx: _RunFigures, figures: _Figures) -> None:
    from optbench.figures import runs as plots

    traces = ctx.results.traces
    planar = traces.groupby("run_id")[["x0", "x1"]].apply(lambda t: t.notna().all(axis=None))
    for problem in sorted(ctx.done["problem"].unique()):
        ids = ctx.done[ctx.done["problem"] == problem]["run_id"]
        if not planar.reindex(ids).fillna(False).astype(bool).all():
            continue
        path = ctx.path(f"trajectories_{_slug(problem)}")
        figures.draw(
            "trajectories",
            f"Iterates of each optimizer on the contour lines of {problem} (start: black dot; last point: star).",
            lambda p=problem, path=path: plots.trajectories(ctx.done, traces, path, p),
        )


def _lr_schedules(ctx: _RunFigures):
    from optbench.figures.schedules import schedules as schedules_figure

    return schedules_figure(
        _recorded_schedules(ctx.done, ctx.results.traces),
        ctx.path("lr_schedules"),
        ylabel="lr / configured lr",
        title="lr multiplier each scheduler applied (recorded by the engine)",
    )


def _lr_find(ctx: _RunFigures):
    from optbench.experiments import lrfind

    found = lrfind.analyse_folder(ctx.results.folder)
    if found is None:
        return None
    analysis, run = found
    return lrfind.draw(analysis, ctx.path("lr_find"), config_of(run))


_CAPTIONS = {
    "loss-vs-step": "Training loss per step: one line per learning rate (diverged runs end in an x).",
    "loss-vs-step-grid": "Training loss per step: the best settings per panel by final loss in colour, "
    "the others grey.",
    "seeds": " Geometric mean over seeds.",
    "sensitivity": "Final loss per learning rate.",
    "sensitivity-diverged": " Red shading: every run diverged from that lr on.",
    "heatmap": "Median final loss over seeds per (lr, momentum) cell, the best framed.",
    "heatmap-diverged": " Hatched red: every seed diverged.",
    "lr-schedules": "The lr each scheduler gave every step, divided by the run's configured lr.",
    "lr-find": "Range test: loss against the lr of each step, the smoothed loss and the three suggestions.",
    "sharpness": "Training loss (top) and sharpness per step, one colour per run, each run's stability "
    "threshold 2(1+m)/lr (Adam: 38/lr at beta1 0.9, on the preconditioned sharpness) dashed in its colour.",
    "predicted": " Dotted: the bound 2(1+m)/lambda_0 predicted from the initial sharpness; orange: the "
    "catapult region (the loss spiked, then converged).",
}


def _run_figures(results: Results, outdir: Path, fmt: str, wanted, figures: _Figures) -> None:
    done = results.runs[results.runs["status"].isin(["ok", "diverged"])]
    if done.empty:
        return
    by = varying(done)
    what = ", ".join(str(done[c].iloc[0]) for c in ("problem", "optimizer") if c not in by)
    ctx = _RunFigures(results, outdir, fmt, done, by, what)
    sweep = len(ctx.lrs) >= 2 and results.experiment != "lr-find"
    # Captions name only what the figure shows: no red region where nothing diverged, no mean of one seed.
    diverged = bool((done["status"] == "diverged").any())
    seeds = done["seed"].nunique() > 1
    if results.experiment != "lr-find" and wanted("loss-vs-step"):  # any grid, one cell included
        caption = _CAPTIONS["loss-vs-step"]
        if by:
            caption = _CAPTIONS["loss-vs-step-grid"] + (_CAPTIONS["seeds"] if seeds else "")
        figures.draw("loss-vs-step", caption, lambda: _loss_vs_step(ctx))
    if sweep and wanted("sensitivity"):
        caption = _CAPTIONS["sensitivity"] + (_CAPTIONS["sensitivity-diverged"] if diverged else "")
        caption += " Dashed: the analytic bound 2(1+m)/L." if _bounds(ctx) else ""
        if not by and results.manifest.get("predicted_bound") is not None:
            caption += _CAPTIONS["predicted"]
        figures.draw("sensitivity", caption, lambda: _sensitivity(ctx))
    if len(ctx.lrs) >= 2 and done["momentum"].astype(object).map(str).nunique() >= 2 and wanted("heatmap"):
        caption = _CAPTIONS["heatmap"] + (_CAPTIONS["heatmap-diverged"] if diverged else "")
        figures.draw("heatmap", caption, lambda: _heatmap(ctx))
    if wanted("trajectories"):
        _trajectories(ctx, figures)
    if results.experiment != "lr-find" and (done["scheduler"] != "none").any() and wanted("lr-schedules"):
        figures.draw("lr-schedules", _CAPTIONS["lr-schedules"], lambda: _lr_schedules(ctx))
    if results.experiment == "lr-find" and wanted("lr-find"):
        figures.draw("lr-find", _CAPTIONS["lr-find"], lambda: _lr_find(ctx))
    _stability_figures(ctx, wanted, figures)


def _stability_figures(ctx: _RunFigures, wanted, figures: _Figures) -> None:
    """The sharpness per step against each run's threshold, where runs tracked it."""
    from optbench.figures import stability

    traces = ctx.results.traces
    if wanted("sharpness") and stability.tracked_columns(traces):
        figures.draw(
            "sharpness",
            _CAPTIONS["sharpness"],
            lambda: stability.sharpness_vs_step(
                ctx.done, traces, ctx.path("sharpness_vs_step"), ctx.titled("loss and sharpness vs step")
            ),
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
    from optbench.figures.schedules import schedules as schedules_figure

    check_format(fmt)
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
            lambda: schedules_figure(
                results.schedules, outdir / f"schedules.{fmt}", notes=notes, title=title
            ),
        )
    from optbench.figures import amp as ampplots
    from optbench.figures import init as initplots

    if results.layers is not None and wanted("init-std"):
        figures.draw(
            "init-std",
            "Std of each layer's output through the deep stack, per init and activation "
            "(drawn by optbench.figures.init).",
            lambda: initplots.plot_std_vs_layer(results.layers, outdir / f"std_vs_layer.{fmt}"),
        )
    if results.gains is not None and wanted("init-gains"):
        figures.draw(
            "init-gains",
            "nn.init.calculate_gain against the measured gain per activation (drawn by "
            "optbench.figures.init).",
            lambda: initplots.plot_gain_table(results.gains, outdir / f"gain_table.{fmt}"),
        )
    if results.amp is not None and len(results.amp) and wanted("amp-scaling"):
        figures.draw(
            "amp-scaling",
            "Speed-up over fp32 against width, with each precision's ceiling dashed and IQR error bars "
            "(drawn by optbench.figures.amp).",
            lambda: ampplots.plot_scaling(results.amp, outdir / f"amp_scaling.{fmt}"),
        )
    if results.amp is not None and len(results.amp) and wanted("amp"):
        figures.draw(
            "amp",
            "Training-step speed-up over fp32 per width and precision (drawn by optbench.figures.amp).",
            lambda: ampplots.plot_amp(results.amp, outdir / f"amp.{fmt}"),
        )
    return list(figures)
