"""Sharpness along a run: the reference engine measures it every ``sharpness_every`` steps.

At step t (t = 0, K, 2K, ...), before the step's forward pass, at the parameters whose loss step t records:

    sharpness_t          lambda_max of the Hessian of the problem's fixed-batch loss (``Problem.sharpness_loss``)
    precond_sharpness_t  Adam/AdamW only, from t = 1: lambda_max(P^-1 H), P the preconditioner of the update
                         just taken (``adam_preconditioner``: the optimizer's current state)

Measuring reads the parameters and the optimizer's state and writes nothing: the Lanczos start vectors come
from a generator of their own (never torch's global one), the products from ``torch.func`` (no ``.grad`` is
touched), so a run with tracking has the same loss and parameters, bit for bit, as one without. Each
measurement starts from the previous one's top vector (a warm start) and records whether it converged.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from optbench.engine.sharpness import SharpnessEstimate, adam_preconditioner, top_eigenvalue
from optbench.registry.problems import Problem


def has_adam_preconditioner(optimizer: torch.optim.Optimizer) -> bool:
    """Adam and AdamW (and their subclasses) without AMSGrad: where ``adam_preconditioner`` is the
    preconditioner of the update (AMSGrad divides by the running maximum instead; NAdam, RAdam and Adamax
    scale the step otherwise)."""
    adam = isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
    return adam and not any(group.get("amsgrad", False) for group in optimizer.param_groups)


class SharpnessTracker:
    """One run's sharpness measurements: per-step arrays (NaN where not measured) and their evidence."""

    def __init__(self, every: int, steps: int, problem: Problem, optimizer: torch.optim.Optimizer, params):
        self.every, self.optimizer, self.params = every, optimizer, list(params)
        self.loss_of = problem.sharpness_loss()  # NotApplicable for a problem without a fixed batch
        self.adam = has_adam_preconditioner(optimizer)
        self.sharpness = np.full(steps, np.nan)
        self.precond_sharpness = np.full(steps, np.nan)
        self.estimates: list[SharpnessEstimate] = []
        self._warm: dict[str, torch.Tensor | None] = {"sharpness": None, "precond": None}

    def before_step(self, t: int) -> None:
        if t % self.every:
            return
        self.sharpness[t] = self._measure("sharpness", None)
        if self.adam and t > 0:
            try:
                preconditioner = adam_preconditioner(self.optimizer, self.params)
            except ValueError:  # no second moment yet (e.g. GradScaler skipped every step so far)
                return
            self.precond_sharpness[t] = self._measure("precond", preconditioner)

    def _measure(self, kind: str, preconditioner) -> float:
        estimate = top_eigenvalue(
            self.loss_of, self.params, preconditioner=preconditioner, start=self._warm[kind]
        )
        self.estimates.append(estimate)
        if math.isfinite(estimate.value):
            self._warm[kind] = estimate.vector
        return estimate.value

    def summary_fields(self) -> dict:
        """``sharpness_residual``: the largest relative residual of the finite estimates (None if there is
        none); ``sharpness_unconverged``: how many of them missed the tolerance."""
        finite = [e for e in self.estimates if math.isfinite(e.value)]
        return {
            "sharpness_residual": max((e.residual for e in finite), default=None),
            "sharpness_unconverged": sum(not e.converged for e in finite),
        }


def initial_sharpness(config) -> SharpnessEstimate:
    """lambda_0: the sharpness at the start of ``config``'s run (the problem built as the reference engine
    builds it: same seed, init, frozen layers), the value its trace records at step 0. NotApplicable
    for a problem without a fixed evaluation batch."""
    from optbench.registry.problems import problem_of

    torch.manual_seed(config.seed)
    problem = problem_of(config)
    problem.param_groups(config.lr, config.head_lr_scale, config.freeze)  # sets the frozen layers
    return top_eigenvalue(problem.sharpness_loss(), problem.trainable)
