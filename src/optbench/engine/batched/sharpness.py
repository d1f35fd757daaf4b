"""Sharpness of a batch's toy cells, all at once (the batched half of ``engine.tracking``).

The cells of a toy batch are rows of one point tensor [R, d] and share nothing, so the gradient of the sum
of their losses is every cell's own gradient, and one more reverse pass of (gradient · V) gives every
cell's own Hessian-vector product H_r v_r: one batched operator, on which ``sharpness.lanczos_top`` runs
the Lanczos iteration of all rows at once (per-row dot products; a d-dimensional toy needs at most d
products, after which the value is exact). Adam/AdamW cells also get lambda_max(P^-1 H), with P built from
the batch's own optimizer state and tables as ``sharpness.adam_preconditioner`` builds it from torch's.

MLP cells that track sharpness run on the reference engine instead (``support``): see
docs/batched-engine.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from optbench.engine.batched.program import Tables
from optbench.engine.batched.rules import Rule
from optbench.engine.sharpness import Estimates, lanczos_top, start_vectors

PRECONDITIONED_RULES = ("adam", "adamw")  # as engine.tracking.has_adam_preconditioner: Adam, AdamW


def preconditioned(rule: Rule, flags: dict) -> bool:
    return rule.name in PRECONDITIONED_RULES and not flags.get("amsgrad", False)


def toy_operator(fn, points: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """V [R, d] float64 -> the rows' Hessian-vector products H_r v_r [R, d] float64 at ``points``, computed
    in float64 as the reference engine computes a toy's (``ToyProblem.sharpness_loss``)."""
    x = points.detach().double().requires_grad_(True)  # as ToyProblem.sharpness_loss: in float64
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)

    def apply(v: torch.Tensor) -> torch.Tensor:
        (product,) = torch.autograd.grad(gradient, x, grad_outputs=v.to(gradient.dtype), retain_graph=True)
        return product.double()

    return apply


def adam_scale(state: dict[str, torch.Tensor], tables: Tables, t: int) -> torch.Tensor:
    """P^-1/2 [R, d] after t updates: P = (1 - beta1^t)·(sqrt(v) / sqrt(1 - beta2^t) + eps), from the
    second moments v and the hyperparameters of the update just taken (step index t - 1)."""
    second = state["exp_avg_sq"].double()
    one_minus_beta1 = tables.value("one_minus_beta1", t - 1)[0].double()[:, None]  # group 0: toys have one
    bias_correction2_sqrt = tables.value("bias_correction2_sqrt", t - 1)[0].double()[:, None]
    eps = tables.value("eps", t - 1)[0].double()[:, None]
    bias_correction1 = 1 - (1 - one_minus_beta1) ** t
    return (bias_correction1 * (second.sqrt() / bias_correction2_sqrt + eps)).rsqrt()


def measure_toys(fn, points: torch.Tensor, scale: torch.Tensor | None) -> tuple[Estimates, Estimates | None]:
    """(sharpness of every row, and with ``scale`` = P^-1/2 the preconditioned sharpness)."""
    apply = toy_operator(fn, points)
    rows, n = points.shape
    start = start_vectors(rows, n, 0, points.device)
    plain = lanczos_top(apply, start)
    if scale is None:
        return plain, None
    return plain, lanczos_top(lambda v: apply(v * scale) * scale, start)
