"""``lr_sweep``: the headline experiment. Runs one config at many learning rates, finds the largest stable
one and, where the problem has one (plain or heavy-ball SGD on the quadratic), compares it with the
analytic bound lr < 2(1 + m)/L. On every problem it measures the initial sharpness lambda_0 (the top
eigenvalue of the loss's Hessian at the start) and, for SGD, compares the predicted bound 2(1 + m)/lambda_0
with each lr's regime (monotone / catapult / no progress / diverged, ``stability.regime``).

A run counts as *stable* when it did not diverge and its final loss is below its initial loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from optbench.errors import NotApplicable, OptbenchError
from optbench.experiments.stability import (
    BoundCheck,
    PredictionCheck,
    gd_momentum,
    prediction_check,
    regime,
    sgd_stability_bound,
)
from optbench.registry.validate import check_lr
from optbench.spec import RunConfig


def lr_grid(lr_min: float, lr_max: float, num: int, spacing: str = "linear") -> list[float]:
    """``num`` learning rates from lr_min to lr_max, linearly (default) or log spaced."""
    if num < 1:
        raise OptbenchError(f"--num must be >= 1, got {num}")
    check_lr(lr_min, "--min")
    check_lr(lr_max, "--max")
    if lr_min > lr_max:
        raise OptbenchError(f"--min {lr_min} is larger than --max {lr_max}")
    if spacing not in ("linear", "log"):
        raise OptbenchError(f"unknown spacing {spacing!r}; valid: linear, log")
    if num == 1:
        return [lr_min]
    if spacing == "log":
        a, b = math.log10(lr_min), math.log10(lr_max)
        return [10 ** (a + (b - a) * i / (num - 1)) for i in range(num)]
    return [lr_min + (lr_max - lr_min) * i / (num - 1) for i in range(num)]


def analytic_bound(config: RunConfig) -> float | None:
    """2(1 + m)/L for plain/heavy-ball SGD with no scheduler on a problem of constant curvature L."""
    from optbench.registry.problems import build_problem

    momentum = predicted_momentum(config)
    if momentum is None:
        return None
    curvature = build_problem(config.problem, device="cpu").curvature if _is_toy(config.problem) else None
    if curvature is None:
        return None
    return sgd_stability_bound(curvature, momentum)


def predicted_momentum(config: RunConfig) -> float | None:
    """m where the bound 2(1 + m)/lambda applies to ``config``'s runs: heavy-ball SGD at a constant lr."""
    return gd_momentum(config.optimizer, config.momentum) if config.scheduler == "none" else None


def _own_runs(out: Path, order: list[str]) -> set[str]:
    """The runs of this sweep already committed in ``out`` (an interrupted sweep resumes); a folder holding
    runs of another sweep is refused, as its rows would mix into this sweep's table."""
    from optbench import store

    found = store.scan(out)
    others = (found.run_ids | found.damaged_run_ids) - set(order)
    if others:
        raise OptbenchError(
            f"--out {out} holds {len(others)} run(s) of another lr sweep; an lr-sweep folder holds one sweep "
            "(choose another --out)"
        )
    found = store.prepare(out)
    if found.damaged:
        store.warn(store.repair_line(found, set(order)))
    return found.run_ids


def _is_toy(problem: str) -> bool:
    from optbench.registry.problems import is_toy

    return is_toy(problem)


@dataclass
class SweepResult:
    out: Path
    runs: object  # pandas DataFrame (runs.parquet plus `stable`, `initial_loss` and `regime`)
    check: BoundCheck | None
    largest_stable: float | None
    figures: list[Path] = field(default_factory=list)
    sharpness: object = None  # engine.sharpness.SharpnessEstimate: lambda_0, None where not measurable
    sharpness_note: str | None = None  # why there is no lambda_0, or no predicted bound
    prediction: PredictionCheck | None = None

    def sharpness_lines(self) -> list[str]:
        """What the sweep says about the initial sharpness and the bound it predicts."""
        if self.sharpness is None:
            return [f"initial sharpness: {self.sharpness_note}"]
        estimate = self.sharpness
        state = "converged" if estimate.converged else "NOT converged"
        lines = [
            f"initial sharpness lambda_0 = {estimate.value:.6g} (top Hessian eigenvalue, Lanczos: "
            f"{estimate.iterations} Hessian-vector product(s), relative residual {estimate.residual:.1e}, {state})"
        ]
        if self.prediction is not None:
            return lines + self.prediction.sentences()
        return lines + ([f"no predicted bound: {self.sharpness_note}"] if self.sharpness_note else [])


def lr_sweep(
    lr_min: float = 0.01,
    lr_max: float = 0.5,
    num: int = 10,
    *,
    spacing: str = "linear",
    base: RunConfig | None = None,
    out: Path | str | None = None,
    plots: bool = True,
    command: str = "lr-sweep",
) -> SweepResult:
    """Run ``base`` at each lr of the grid, write the results folder and (optionally) the two figures.

    ``out``: a new or empty folder, or one this same sweep was writing (an interrupted sweep resumes: its
    committed runs are not run again); a folder holding other runs, or another command's, is refused.
    """
    from optbench import store
    from optbench.engine.reference import run
    from optbench.registry.validate import canonical_config, check_buildable

    lrs = lr_grid(lr_min, lr_max, num, spacing)
    base = canonical_config(base or RunConfig())
    configs = [base.replace(lr=lr) for lr in lrs]
    check_buildable(configs)  # a value no run accepts stops here, before the folder is made
    order = [c.run_id() for c in configs]
    out = store.check_out(out, "lr-sweep") if out is not None else store.default_out("lr-sweep")
    with store.results_folder(out, "lr-sweep"):
        done = _own_runs(out, order)
        manifest = store.start_manifest(out, command, {"experiment": "lr-sweep", "lrs": lrs})
        for config, run_id in zip(configs, order, strict=True):
            if run_id not in done:
                store.commit_run(out, run(config))
        store.consolidate_runs(out, order=order)
        traces = store.read_traces(out)
        result = _analyse(out, base, store.read_runs(out), traces)
        if plots:
            result.figures += _draw(result, base, traces, logx=spacing == "log")
        check, prediction = result.check, result.prediction
        store.finish_manifest(
            out,
            manifest,
            largest_stable_lr=result.largest_stable,
            analytic_bound=check.bound if check else None,
            bound_agrees=check.agrees if check else None,
            initial_sharpness=result.sharpness.value if result.sharpness is not None else None,
            predicted_bound=prediction.bound if prediction else None,
            prediction_agrees=prediction.agrees if prediction else None,
        )
    return result


def _analyse(out: Path, base: RunConfig, runs, traces) -> SweepResult:
    """Which runs are stable, the largest stable lr, and the bracket around the analytic bound."""
    first = traces[traces["step"] == 0].set_index("run_id")["loss"]
    runs["initial_loss"] = runs["run_id"].map(first).astype(float)  # NaN: the run has no step
    runs["stable"] = (runs["status"] == "ok") & (runs["final_loss"] < runs["initial_loss"])
    losses = traces.sort_values("step").groupby("run_id")["loss"].apply(lambda s: s.to_numpy(float))
    window = batches_per_epoch(base)
    runs["regime"] = [
        regime(losses.get(run_id, []), status, window)
        for run_id, status in zip(runs["run_id"], runs["status"], strict=True)
    ]
    stable, unstable = runs[runs["stable"]], runs[~runs["stable"] & runs["status"].isin(["ok", "diverged"])]
    largest_stable = float(stable["lr"].max()) if len(stable) else None
    bound = analytic_bound(base)
    check = None
    if bound is not None:
        above = unstable[unstable["lr"] > (largest_stable or 0)]
        check = BoundCheck(bound, largest_stable, float(above["lr"].min()) if len(above) else None)
    result = SweepResult(out, runs, check, largest_stable)
    _predict(result, base)
    return result


def batches_per_epoch(config: RunConfig) -> int:
    """Minibatches per epoch of ``config``'s runs: 1 for a toy or a full-batch MLP (every step's loss is of
    the same data), more where each step's loss is of another batch."""
    from optbench.registry.problems import build_problem

    if _is_toy(config.problem):
        return 1
    try:
        problem = build_problem(
            config.problem, init=config.init, loss=config.loss, steps=1, batch_size=config.batch_size
        )
    except OptbenchError:
        return 1  # the runs are invalid: there are no regimes to judge
    index, rows = getattr(problem, "batch_index", None), getattr(problem, "x_train", None)
    return 1 if index is None or rows is None else max(1, rows.shape[0] // index.shape[-1])


def _predict(result: SweepResult, base: RunConfig) -> None:
    """lambda_0 of ``base`` and, for heavy-ball SGD, the bound it predicts checked against the regimes."""
    from optbench.engine.tracking import initial_sharpness

    try:
        result.sharpness = initial_sharpness(base)
    except NotApplicable as err:
        result.sharpness_note = f"not measured ({err})"
        return
    momentum = predicted_momentum(base)
    if momentum is None:
        result.sharpness_note = (
            f"2(1+m)/lambda_0 bounds heavy-ball SGD at a constant lr, not {base.optimizer}"
            + (f" with scheduler {base.scheduler}" if base.scheduler != "none" else "")
            + " (--sharpness-every K tracks the sharpness, and Adam's preconditioned sharpness, per step)"
        )
        return
    result.prediction = prediction_check(result.sharpness.value, momentum, result.runs)
    if result.prediction is None:
        result.sharpness_note = f"lambda_0 = {result.sharpness.value:.4g} is not positive: no bound follows"


def _draw(result: SweepResult, base: RunConfig, traces, logx: bool) -> list[Path]:
    from optbench.figures import runs as figures
    from optbench.figures import stability

    out, what = result.out, f"{base.problem}, {base.optimizer}"
    bound = result.check.bound if result.check else None  # there is a check where there is a bound
    drawn = [
        figures.loss_vs_step(result.runs, traces, out / "loss_vs_step.png", title=f"{what}: loss vs step"),
        stability.final_loss_vs_lr(
            result.runs,
            out / "final_loss_vs_lr.png",
            analytic_bound=bound,
            predicted_bound=result.prediction.bound if result.prediction else None,
            logx=logx,
            title=f"{what}: final loss vs lr",
        ),
    ]
    if stability.tracked_columns(traces):
        title = f"{what}: loss and sharpness vs step (dashed: each lr's stability threshold)"
        drawn.append(stability.sharpness_vs_step(result.runs, traces, out / "sharpness_vs_step.png", title))
    return drawn
