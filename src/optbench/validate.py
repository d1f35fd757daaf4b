"""Validate a RunConfig at the boundary and put every spec string into canonical form.

Unknown names, malformed specs and impossible values are user errors (OptbenchError: the CLI prints one
line, exit 2). Combinations that are valid in general but cannot run together (SparseAdam on dense
weights, an init on a toy function) are left to the engine, which records them as ``invalid`` cells.
"""

from __future__ import annotations

import math

from optbench.errors import OptbenchError
from optbench.spec import PRECISIONS, RunConfig, parse_spec


def check_device(device: str) -> str:
    """``auto`` -> cuda if available else cpu; ``cuda``/``cuda:N`` must exist."""
    from optbench.precision import resolve_device

    return resolve_device(device)


SCALER_OPTIONS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval")


def canonical_precision(text: str) -> str:
    """``fp32``, ``fp16`` (autocast + GradScaler) or ``bf16`` (autocast); ``fp16(scaler=False)`` and
    ``bf16(scaler=True)`` are accepted so that such cells can be recorded (the latter as invalid);
    GradScaler options pass through: ``fp16(init_scale=1024.0, growth_interval=100)``."""
    spec = parse_spec(text, what="precision")
    if spec.name not in PRECISIONS:
        raise OptbenchError(f"unknown precision {spec.name!r}; valid: {', '.join(PRECISIONS)}")
    unknown = set(spec.kw) - {"scaler", *SCALER_OPTIONS}
    if unknown or not isinstance(spec.kw.get("scaler", True), bool):
        raise OptbenchError(f"precision {text!r}: options are scaler=True/False, {', '.join(SCALER_OPTIONS)}")
    return spec.canonical()


def canonical_config(config: RunConfig) -> RunConfig:
    """The same config with canonical spec strings, the loss resolved and the device checked."""
    from optbench.inits import canonical_init
    from optbench.losses import canonical_loss
    from optbench.optimizers import canonical_optimizer
    from optbench.problems import canonical_problem, default_loss
    from optbench.schedulers import canonical_scheduler

    if not (isinstance(config.lr, (int, float)) and config.lr > 0 and math.isfinite(config.lr)):
        raise OptbenchError(f"learning rate must be positive and finite, got {config.lr}")
    if config.momentum is not None and not (0 <= config.momentum < 1 or config.momentum == 1):
        raise OptbenchError(f"momentum must be in [0, 1], got {config.momentum}")
    if config.steps < 1:
        raise OptbenchError(f"--steps must be >= 1, got {config.steps}")
    if config.batch_size is not None and config.batch_size < 1:
        raise OptbenchError(f"--batch-size must be >= 1, got {config.batch_size}")
    if not config.head_lr_scale > 0:
        raise OptbenchError(f"--head-lr-scale must be positive, got {config.head_lr_scale}")
    if config.freeze < 0:
        raise OptbenchError(f"--freeze must be >= 0, got {config.freeze}")
    problem = canonical_problem(config.problem)
    loss = config.loss
    if loss == "auto":
        loss = default_loss(problem)
    elif loss != "none":
        loss = canonical_loss(loss)
    return config.replace(
        problem=problem,
        optimizer=canonical_optimizer(config.optimizer),
        scheduler=canonical_scheduler(config.scheduler),
        init=canonical_init(config.init),
        loss=loss,
        device=check_device(config.device),
        precision=canonical_precision(config.precision),
        lr=float(config.lr),
        momentum=None if config.momentum is None else float(config.momentum),
    )
