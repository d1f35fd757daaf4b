"""The reference run engine: one RunConfig -> one trace, using the real torch optimizer and scheduler.

Per step t (0-based), in this order::

    record lr (the lr this step's update uses), param values/norm, val metrics (every eval_every steps)
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
from dataclasses import dataclass

import numpy as np
import torch

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.optimizers import build_optimizer, needs_closure
from optbench.registry.precision import autocast_context, check_precision, device_type
from optbench.registry.problems import build_problem
from optbench.registry.schedulers import build_scheduler
from optbench.spec import TRACE_COLUMNS, RunConfig, RunSummary, parse_spec

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
        s = self.summary
        return {
            "run_id": self.run_id,
            **self.config.to_dict(),
            "status": s.status,
            "final_loss": s.final_loss,
            "best_loss": s.best_loss,
            "diverged_step": s.diverged_step,
            "steps_completed": s.steps_completed,
            "wall_time_s": s.wall_time_s,
            "reason": s.reason,
            "momentum_knob": s.momentum_knob,
            "final_val_loss": s.final_val_loss,
            "final_val_acc": s.final_val_acc,
            "warnings": s.warnings,
            "engine": s.engine,
            "exactness": s.exactness,
        }

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


def _run(cfg: RunConfig) -> tuple[RunSummary, dict[str, np.ndarray]]:  # noqa: C901 - to split (#13)
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise OptbenchError(f"Invalid learning rate: {cfg.lr}")
    torch.manual_seed(cfg.seed)
    problem = build_problem(
        cfg.problem,
        init=cfg.init,
        loss=cfg.loss,
        device=cfg.device,
        seed=cfg.seed,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
    )
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
    params = problem.trainable
    coords = problem.coords()
    closure_needed = needs_closure(cfg.optimizer)
    precision, scaler = _precision_setup(cfg, problem, closure_needed)

    steps = cfg.steps
    # Per-step values stay on the device as small tensors in lists (an append costs far less than an
    # indexed write) and are stacked and copied to the host once at the end.
    losses: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []  # toy problems: the raw gradient; norms taken once at the end
    grad_norms: list[torch.Tensor] = []  # MLPs: the global gradient norm
    update_norms: list[torch.Tensor] = []
    param_norms: list[torch.Tensor] = []
    points: list[torch.Tensor] = [coords.detach().clone()] if coords is not None else []  # x_0 .. x_T
    evals: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    scales: list[torch.Tensor] = []  # GradScaler scale used by each step, then the one after the last
    lrs = np.full(steps, np.nan)
    threshold = -math.inf
    diverged_step = None
    done = 0

    def closure():  # zero_grad, forward (under autocast for fp16/bf16), backward
        for p in params:  # = optimizer.zero_grad(set_to_none=True), minus its ~10 us profiler wrapper
            p.grad = None
        if precision == "fp32":
            loss = problem.loss(t)
            loss.backward()
            return loss
        with autocast_context(precision, cfg.device):
            loss = problem.loss(t)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return loss

    for t in range(steps):
        lrs[t] = optimizer.param_groups[0]["lr"]
        if problem.eval_every and (t % problem.eval_every == 0 or t == steps - 1):
            with autocast_context(precision, cfg.device):
                evals[t] = problem.evaluate()
        if coords is None:
            before = [p.detach().clone() for p in params]

        loss = closure()
        value = loss.detach()
        losses.append(value)
        if scaler is not None:
            scales.append(_scale_tensor(scaler))
            scaler.unscale_(optimizer)  # norms below are of the true gradient
        if coords is not None:
            grads.append(coords.grad.clone())  # a fresh leaf each step (zero_grad sets it to None)
        else:
            grad_norms.append(
                _global_norm([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
            )
        if closure_needed:
            optimizer.step(closure)
        elif scaler is not None:
            scaler.step(optimizer)  # skipped when the unscaled gradient has inf/nan
            scaler.update()
        else:
            optimizer.step()
        if coords is not None:
            points.append(coords.detach().clone())
        else:
            update_norms.append(_global_norm([p.detach() - b for p, b in zip(params, before, strict=True)]))
            param_norms.append(_global_norm(before))
        if scheduler.impl is not None:
            scheduler.step(value)
        done = t + 1

        if t == 0:  # one sync to fix the divergence threshold from the initial loss
            initial = float(loss.detach())
            threshold = DIVERGENCE_FACTOR * max(abs(initial), 1.0) if math.isfinite(initial) else -math.inf
        if (t + 1) % CHECK_EVERY == 0 or t == steps - 1:
            window_start = (t // CHECK_EVERY) * CHECK_EVERY
            bad = _first_diverged(torch.stack(losses[window_start:]), threshold)
            if bad is not None:
                diverged_step = window_start + bad
                break

    end = diverged_step + 1 if diverged_step is not None else done
    nan = np.full(end, np.nan)
    trace = {"step": np.arange(end, dtype=np.int64), "lr": lrs[:end]}
    trace["loss"] = _host(torch.stack([v.float() for v in losses[:end]]))
    if coords is not None:
        x = torch.stack(points[: end + 1])  # [end + 1, d]: the point before each step, and after the last
        trace["grad_norm"] = _host(torch.linalg.vector_norm(torch.stack(grads[:end]), dim=1))
        trace["param_norm"] = _host(torch.linalg.vector_norm(x[:end], dim=1))
        trace["update_norm"] = _host(torch.linalg.vector_norm(x[1:] - x[:-1], dim=1))
        x_host = _host(x[:end])
        trace["x0"] = x_host[:, 0]
        trace["x1"] = x_host[:, 1] if x_host.shape[1] > 1 else nan
    else:
        trace["grad_norm"] = _host(torch.stack(grad_norms[:end]))
        trace["update_norm"] = _host(torch.stack(update_norms[:end]))
        trace["param_norm"] = _host(torch.stack(param_norms[:end]))
        trace["x0"], trace["x1"] = nan, nan.copy()
    trace["val_loss"], trace["val_acc"] = np.full(end, np.nan), np.full(end, np.nan)
    for t, (val_loss, val_acc) in evals.items():
        if t < end:
            trace["val_loss"][t] = float(val_loss)
            if val_acc is not None:
                trace["val_acc"][t] = float(val_acc)
    trace["loss_scale"] = np.full(end, np.nan)
    trace["skipped_step"] = np.zeros(end, dtype=bool)
    if scaler is not None:
        # GradScaler halves its scale exactly when it skipped a step, so a drop marks the skip.
        scale = _host(torch.stack([*scales, _scale_tensor(scaler)]))
        trace["loss_scale"] = scale[:end]
        trace["skipped_step"] = scale[1 : end + 1] < scale[:end]
    losses = trace["loss"]
    finite = losses[np.isfinite(losses)]
    val_loss, val_acc = trace["val_loss"], trace["val_acc"]
    summary = RunSummary(
        status="diverged" if diverged_step is not None else "ok",
        final_loss=float(losses[-1]) if end else None,
        best_loss=float(finite.min()) if finite.size else None,
        diverged_step=diverged_step,
        steps_completed=diverged_step if diverged_step is not None else done,
        momentum_knob=knob,
        final_val_loss=_last_finite(val_loss),
        final_val_acc=_last_finite(val_acc),
    )
    return summary, trace


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


def _last_finite(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite[-1]) if finite.size else None
