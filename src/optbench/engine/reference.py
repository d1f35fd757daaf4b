"""The reference run engine: one RunConfig -> one trace, using the real torch optimizer and scheduler.

Per step t (0-based), in this order::

    record lr (the lr this step's update uses), param values/norm, val metrics (every eval_every steps),
    sharpness (every sharpness_every steps: ``engine.tracking``)
    zero_grad -> forward (loss_t, before the update) -> backward -> optimizer.step -> scheduler.step

Per-step values stay on the run's device (lists of small tensors) and are stacked and copied to the host
once at the end; the only host syncs during the loop are a divergence check every ``CHECK_EVERY`` steps
(and the loss fed to ReduceLROnPlateau, which needs a float). For toy problems only the point and the
gradient are kept per step; param and update norms are derived from them at the end.

Divergence is data: a run diverges at the first step whose loss is non-finite or larger than
``DIVERGENCE_FACTOR`` x max(initial loss, 1). The run then stops with status ``diverged`` and
``diverged_step`` = that step; the trace keeps every row up to and including it.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from optbench.engine.summary import summary_of
from optbench.engine.tracking import SharpnessTracker
from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.optimizers import build_optimizer, needs_closure
from optbench.registry.precision import autocast_context, check_precision, device_type
from optbench.registry.problems import Problem, problem_of
from optbench.registry.schedulers import Scheduler, build_scheduler
from optbench.registry.validate import check_lr
from optbench.spec import TRACE_COLUMNS, RunConfig, RunSummary, parse_spec, summary_row

DIVERGENCE_FACTOR = 1e6
CHECK_EVERY = 32


@dataclass
class RunResult:
    config: RunConfig
    summary: RunSummary
    trace: dict[str, np.ndarray]  # TRACE_COLUMNS except run_id, one array per column

    @property
    def run_id(self) -> str:
        return self.config.run_id()

    def summary_row(self) -> dict:
        """One row of runs.parquet: run_id, config columns, summary columns."""
        return summary_row(self.run_id, self.config, self.summary)

    def trace_rows(self) -> dict[str, list]:
        """Columns of traces.parquet for this run (run_id repeated)."""
        n = len(self.trace["step"])
        return {"run_id": [self.run_id] * n, **{k: self.trace[k] for k in TRACE_COLUMNS if k != "run_id"}}


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    if len(tensors) == 1:
        return torch.linalg.vector_norm(tensors[0])
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _empty_trace() -> dict[str, np.ndarray]:
    return {k: np.empty(0) for k in TRACE_COLUMNS if k != "run_id"}


def run(config: RunConfig) -> RunResult:
    """Run one config to completion or divergence. Never raises for a bad cell: returns status
    ``invalid`` (cannot be built: not applicable, bad arguments) or ``failed`` (broke while running)."""
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            summary, trace = _run(config)
        except OptbenchError as err:
            summary, trace = RunSummary(status="invalid", reason=str(err)), _empty_trace()
        except Exception as err:  # noqa: BLE001 - a crashing cell is data, recorded with its reason
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            summary, trace = RunSummary(status="failed", reason=last), _empty_trace()
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    summary.warnings = "\n".join(messages) or None
    summary.wall_time_s = time.perf_counter() - started
    return RunResult(config, summary, trace)


def _run(cfg: RunConfig) -> tuple[RunSummary, dict[str, np.ndarray]]:
    check_lr(cfg.lr)
    setup = _build(cfg)
    record = _Record(lrs=np.full(cfg.steps, np.nan))
    if setup.coords is not None:
        record.points.append(setup.coords.detach().clone())  # x_0; the loop appends x_1 .. x_T
    diverged_step, done = _step_loop(cfg, setup, record)
    end = diverged_step + 1 if diverged_step is not None else done
    trace = _assemble_trace(setup, record, end)
    return _summarize(setup, trace, diverged_step, done), trace


@dataclass
class _Setup:
    """What one run is made of: the problem, the real optimizer and scheduler, the precision."""

    problem: Problem
    optimizer: torch.optim.Optimizer
    knob: str | None  # which optimizer argument --momentum set
    scheduler: Scheduler
    params: list[torch.Tensor]
    coords: torch.Tensor | None  # toy problems: the point
    closure_needed: bool
    precision: str
    scaler: torch.amp.GradScaler | None
    tracker: SharpnessTracker | None = None


@dataclass
class _Record:
    """Per-step values, kept on the device as small tensors in lists (an append costs far less than an
    indexed write) and stacked and copied to the host once at the end."""

    lrs: np.ndarray
    losses: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor] = field(default_factory=list)  # toys: the raw gradient, norms taken at the end
    grad_norms: list[torch.Tensor] = field(default_factory=list)  # MLPs: the global gradient norm
    update_norms: list[torch.Tensor] = field(default_factory=list)
    param_norms: list[torch.Tensor] = field(default_factory=list)
    points: list[torch.Tensor] = field(default_factory=list)  # toys: x_0 .. x_T
    evals: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)
    scales: list[torch.Tensor] = field(default_factory=list)  # GradScaler's scale used by each step


def _build(cfg: RunConfig) -> _Setup:
    torch.manual_seed(cfg.seed)
    problem = problem_of(cfg)
    groups = problem.param_groups(cfg.lr, cfg.head_lr_scale, cfg.freeze)
    optimizer, knob = build_optimizer(cfg.optimizer, groups, cfg.lr, cfg.momentum)
    scheduler = build_scheduler(cfg.scheduler, optimizer, cfg.steps, cfg.lr)
    if getattr(scheduler.impl, "cycle_momentum", False):  # CyclicLR/OneCycleLR: torch's default is True
        warnings.warn(
            f"scheduler {cfg.scheduler!r} cycles the optimizer's momentum (cycle_momentum=True), "
            "overriding --momentum; pass cycle_momentum=False to keep the optimizer's own",
            UserWarning,
            stacklevel=1,
        )
    closure_needed = needs_closure(cfg.optimizer)
    precision, scaler = _precision_setup(cfg, problem, closure_needed)
    tracker = None
    if cfg.sharpness_every:
        tracker = SharpnessTracker(cfg.sharpness_every, cfg.steps, problem, optimizer, problem.trainable)
    return _Setup(
        problem,
        optimizer,
        knob,
        scheduler,
        problem.trainable,
        problem.coords(),
        closure_needed,
        precision,
        scaler,
        tracker,
    )


def _step_loop(cfg: RunConfig, run: _Setup, record: _Record) -> tuple[int | None, int]:
    """Take the steps; return (diverged step or None, steps done)."""
    problem, params, scaler = run.problem, run.params, run.scaler
    threshold = -math.inf
    done = 0

    def closure():  # zero_grad, forward (under autocast for fp16/bf16), backward
        for p in params:  # = optimizer.zero_grad(set_to_none=True), minus its ~10 us profiler wrapper
            p.grad = None
        if run.precision == "fp32":
            loss = problem.loss(t)
            loss.backward()
            return loss
        with autocast_context(run.precision, cfg.device):
            loss = problem.loss(t)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return loss

    for t in range(cfg.steps):
        before = _record_before_step(cfg, run, record, t)
        loss = closure()
        value = loss.detach()
        record.losses.append(value)
        _record_gradient(run, record)
        _optimizer_step(run, closure)
        _record_after_step(run, record, before)
        if run.scheduler.impl is not None:
            run.scheduler.step(value)
        done = t + 1

        if t == 0:  # one sync to fix the divergence threshold from the initial loss
            initial = float(loss.detach())
            threshold = DIVERGENCE_FACTOR * max(abs(initial), 1.0) if math.isfinite(initial) else -math.inf
        if (t + 1) % CHECK_EVERY == 0 or t == cfg.steps - 1:
            window_start = (t // CHECK_EVERY) * CHECK_EVERY
            bad = _first_diverged(torch.stack(record.losses[window_start:]), threshold)
            if bad is not None:
                return window_start + bad, done
    return None, done


def _optimizer_step(run: _Setup, closure) -> None:
    if run.closure_needed:
        run.optimizer.step(closure)
    elif run.scaler is not None:
        run.scaler.step(run.optimizer)  # skipped when the unscaled gradient has inf/nan
        run.scaler.update()
    else:
        run.optimizer.step()


def _record_before_step(cfg: RunConfig, run: _Setup, record: _Record, t: int) -> list[torch.Tensor] | None:
    """The lr this step uses, the held-out metrics on evaluation steps; for MLPs a copy of the parameters
    (returned) to measure the update."""
    record.lrs[t] = run.optimizer.param_groups[0]["lr"]
    if run.tracker is not None:
        run.tracker.before_step(t)
    if run.problem.eval_every and (t % run.problem.eval_every == 0 or t == cfg.steps - 1):
        with autocast_context(run.precision, cfg.device):
            record.evals[t] = run.problem.evaluate()
    if run.coords is None:
        return [p.detach().clone() for p in run.params]
    return None


def _record_gradient(run: _Setup, record: _Record) -> None:
    if run.scaler is not None:
        record.scales.append(_scale_tensor(run.scaler))
        run.scaler.unscale_(run.optimizer)  # norms below are of the true gradient
    if run.coords is not None:
        record.grads.append(run.coords.grad.clone())  # a fresh leaf each step (zero_grad sets it to None)
    else:
        record.grad_norms.append(
            _global_norm([p.grad if p.grad is not None else torch.zeros_like(p) for p in run.params])
        )


def _record_after_step(run: _Setup, record: _Record, before: list[torch.Tensor] | None) -> None:
    if run.coords is not None:
        record.points.append(run.coords.detach().clone())
    else:
        record.update_norms.append(
            _global_norm([p.detach() - b for p, b in zip(run.params, before, strict=True)])
        )
        record.param_norms.append(_global_norm(before))


def _assemble_trace(run: _Setup, record: _Record, end: int) -> dict[str, np.ndarray]:
    """The trace columns of the first ``end`` steps, copied to the host once."""
    nan = np.full(end, np.nan)
    trace = {"step": np.arange(end, dtype=np.int64), "lr": record.lrs[:end]}
    trace["loss"] = _host(torch.stack([v.float() for v in record.losses[:end]]))
    if run.coords is not None:
        x = torch.stack(
            record.points[: end + 1]
        )  # [end + 1, d]: the point before each step, and after the last
        trace["grad_norm"] = _host(torch.linalg.vector_norm(torch.stack(record.grads[:end]), dim=1))
        trace["param_norm"] = _host(torch.linalg.vector_norm(x[:end], dim=1))
        trace["update_norm"] = _host(torch.linalg.vector_norm(x[1:] - x[:-1], dim=1))
        x_host = _host(x[:end])
        trace["x0"] = x_host[:, 0]
        trace["x1"] = x_host[:, 1] if x_host.shape[1] > 1 else nan
    else:
        trace["grad_norm"] = _host(torch.stack(record.grad_norms[:end]))
        trace["update_norm"] = _host(torch.stack(record.update_norms[:end]))
        trace["param_norm"] = _host(torch.stack(record.param_norms[:end]))
        trace["x0"], trace["x1"] = nan, nan.copy()
    trace["val_loss"], trace["val_acc"] = np.full(end, np.nan), np.full(end, np.nan)
    for t, (val_loss, val_acc) in record.evals.items():
        if t < end:
            trace["val_loss"][t] = float(val_loss)
            if val_acc is not None:
                trace["val_acc"][t] = float(val_acc)
    trace["loss_scale"] = np.full(end, np.nan)
    trace["skipped_step"] = np.zeros(end, dtype=bool)
    tracked = run.tracker is not None
    trace["sharpness"] = run.tracker.sharpness[:end] if tracked else np.full(end, np.nan)
    trace["precond_sharpness"] = run.tracker.precond_sharpness[:end] if tracked else np.full(end, np.nan)
    if run.scaler is not None:
        # GradScaler halves its scale exactly when it skipped a step, so a drop marks the skip.
        scale = _host(torch.stack([*record.scales, _scale_tensor(run.scaler)]))
        trace["loss_scale"] = scale[:end]
        trace["skipped_step"] = scale[1 : end + 1] < scale[:end]
    return trace


def _summarize(run: _Setup, trace: dict[str, np.ndarray], diverged_step: int | None, done: int) -> RunSummary:
    """The runs-table row: ``diverged`` at the first bad loss; ``failed`` when GradScaler skipped every
    step (the parameters never changed, so the final loss says nothing about the optimizer); else ``ok``."""
    end = len(trace["loss"])
    summary = RunSummary(**summary_of(trace, diverged_step, done), momentum_knob=run.knob)
    if run.tracker is not None:
        for name, value in run.tracker.summary_fields().items():
            setattr(summary, name, value)
    if summary.status == "ok" and end and trace["skipped_step"].all():
        scales = trace["loss_scale"]
        summary.status = "failed"
        summary.reason = (
            f"GradScaler skipped all {end} steps (inf/nan gradients at every loss scale from "
            f"{scales[0]:g} down to {scales[-1]:g}): the parameters never changed"
        )
    return summary


def _precision_setup(cfg: RunConfig, problem, closure_needed: bool):
    """(autocast precision name, GradScaler or None); invalid combinations raise NotApplicable."""
    spec = parse_spec(cfg.precision, what="precision")
    use_scaler = spec.kw.get("scaler", spec.name == "fp16")
    if spec.name == "fp32":
        if use_scaler:
            raise NotApplicable("GradScaler with fp32: there is nothing to scale")
        return "fp32", None
    if problem.coords() is not None:
        raise NotApplicable(
            f"{spec.name} autocast only changes matmul-like ops; the toy function "
            f"{problem.name!r} has none, so its result would be fp32 labelled {spec.name}"
        )
    if use_scaler and spec.name == "bf16":
        raise NotApplicable(
            "GradScaler with bf16: bf16 has fp32's exponent range, loss scaling does not apply"
        )
    if use_scaler and closure_needed:
        raise NotApplicable(
            "LBFGS re-evaluates its closure inside step(); GradScaler cannot unscale or "
            "skip such a step (fp16 with a scaler is not applicable to lbfgs)"
        )
    check_precision(spec.name, cfg.device)
    options = {k: v for k, v in spec.kw.items() if k != "scaler"}
    if options and not use_scaler:
        raise NotApplicable(f"GradScaler options {sorted(options)} given without a scaler")
    scaler = torch.amp.GradScaler(device_type(cfg.device), **options) if use_scaler else None
    return spec.name, scaler


def _scale_tensor(scaler) -> torch.Tensor:
    """The scaler's current scale without a host sync (GradScaler keeps it as a 1-element tensor)."""
    scale = getattr(scaler, "_scale", None)
    if scale is None:  # before the first scale() call
        return torch.tensor(scaler.get_scale(), dtype=torch.float64)
    return scale.detach().reshape(()).to(torch.float64, copy=True)


def _first_diverged(losses: torch.Tensor, threshold: float) -> int | None:
    bad = ~torch.isfinite(losses) | (losses > threshold)
    if not bool(bad.any()):
        return None
    return int(bad.nonzero()[0, 0])


def _host(values: torch.Tensor) -> np.ndarray:
    return values.detach().to("cpu", torch.float64).numpy()
