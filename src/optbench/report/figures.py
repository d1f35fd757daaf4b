"""The report's standard figures: which apply to a results folder, drawn by the figures package."""

from __future__ import annotations

from pathlib import Path

from optbench.errors import OptbenchError
from optbench.figures.style import check_format
from optbench.report.document import Figure
from optbench.report.load import Results, config_of
from optbench.report.tables import _groups, analytic_bounds, varying

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
    "amp-scaling",
)


MAX_SENSITIVITY_PANELS = 24


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


def _run_figures(results: Results, outdir: Path, fmt: str, wanted, figures: _Figures) -> None:  # noqa: C901 - to split (#13)
    from optbench.figures import facets
    from optbench.figures import runs as plots
    from optbench.figures.schedules import schedules as schedules_figure

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
            lambda: schedules_figure(
                _recorded_schedules(done, results.traces),
                outdir / f"lr_schedules.{fmt}",
                ylabel="lr / configured lr",
                title="lr multiplier each scheduler applied (recorded by the engine)",
            ),
        )
    if is_find and wanted("lr-find"):
        from optbench.experiments import lrfind

        def lr_find():
            found = lrfind.analyse_folder(results.folder)
            if found is None:
                return None
            analysis, run = found
            return lrfind.draw(analysis, outdir / f"lr_find.{fmt}", config_of(run))

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
