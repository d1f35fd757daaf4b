"""Sharpness: the largest eigenvalue of the training loss's Hessian, from Hessian-vector products.

Gradient descent with heavy-ball momentum m is locally stable iff lr < 2(1 + m)/lambda_max, where
lambda_max, the *sharpness*, is the top eigenvalue of the Hessian H of the loss at the current point. On the
quadratic f(x) = 4x^2 it is 8 everywhere (bound 0.25); at Rosenbrock's start (-1.2, 1) the Hessian is
[[1330, 480], [480, 200]] and lambda_max = 1506.4. For Adam-family optimizers the relevant quantity is the
*preconditioned* sharpness lambda_max(P^-1 H), with P the optimizer's diagonal preconditioner
(Cohen et al. 2022: Adam is stable while it stays below (2 + 2 beta1) / ((1 - beta1) lr) = 38/lr at
beta1 = 0.9).

H is never formed. A Hessian-vector product is reverse-over-reverse differentiation of the loss
(``torch.func.vjp`` of ``torch.func.grad``), about the cost of two gradients; the top eigenvalue comes from
the Lanczos iteration on those products (with full reorthogonalisation: a few dozen products give
lambda_max to 1e-4 relative on the problems here, where plain power iteration needs many more when the top
two eigenvalues are close). The estimate records how many products it took and whether it met its
tolerance, so a trace can say how far to trust each value.

The loss is given as a pure function of the parameters, ``loss_of(params) -> scalar``, evaluated on a fixed
batch: sharpness is a property of one loss surface, not of a stream of minibatches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

LossOf = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]

DEFAULT_TOLERANCE = 1e-4  # relative residual of the top Ritz pair
DEFAULT_MAX_ITERATIONS = 64


@dataclass(frozen=True)
class SharpnessEstimate:
    """lambda_max with the evidence for it: Lanczos steps taken, the relative residual bound
    |beta_k * s_k| / |lambda| of the top Ritz pair, and whether it fell below the tolerance."""

    value: float
    iterations: int
    residual: float
    converged: bool
    tolerance: float


def hessian_vector_product(
    loss_of: LossOf, params: Sequence[torch.Tensor], vector: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """H·v at ``params``: the vector-Jacobian product of the gradient (``torch.func``, reverse over reverse).

    H is symmetric, so v^T H = (H v)^T. Reverse over reverse works for every loss and activation here;
    forward over reverse (``jvp`` of ``grad``) is not supported by some of torch's backward formulas (MSE's
    raises "ZeroTensors are immutable").
    """
    primals = tuple(p.detach() for p in params)
    gradient = torch.func.grad(lambda *ps: loss_of(ps), argnums=tuple(range(len(primals))))
    _, vjp = torch.func.vjp(gradient, *primals)
    return tuple(vjp(tuple(v.detach() for v in vector)))


def _flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    pieces, start = [], 0
    for t in like:
        pieces.append(flat[start : start + t.numel()].view_as(t))
        start += t.numel()
    return tuple(pieces)


def top_eigenvalue(
    loss_of: LossOf,
    params: Sequence[torch.Tensor],
    *,
    preconditioner: Sequence[torch.Tensor] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    seed: int = 0,
) -> SharpnessEstimate:
    """The largest eigenvalue of the Hessian of ``loss_of`` at ``params`` (Lanczos on H·v).

    ``preconditioner``: the diagonal P of an adaptive optimizer (one tensor per parameter, all positive);
    then the result is lambda_max(P^-1 H), computed as lambda_max of the symmetric P^-1/2 H P^-1/2, which has
    the same eigenvalues. Runs in float64 on the parameters' device; the start vector comes from ``seed``.
    """
    params = tuple(p.detach() for p in params)
    scale = None
    if preconditioner is not None:
        scale = _flatten([q.detach() for q in preconditioner]).double().rsqrt()  # P^-1/2

    def apply(v: torch.Tensor) -> torch.Tensor:
        u = v * scale if scale is not None else v
        hu = _flatten(hessian_vector_product(loss_of, params, _unflatten(u.to(params[0].dtype), params)))
        hu = hu.double()
        return hu * scale if scale is not None else hu

    n = sum(p.numel() for p in params)
    return _lanczos_top(apply, n, params[0].device, tolerance, min(max_iterations, n), seed)


def _lanczos_top(
    apply, n: int, device, tolerance: float, max_iterations: int, seed: int
) -> SharpnessEstimate:
    """Top eigenvalue of the symmetric operator ``apply`` on R^n (Lanczos, full reorthogonalisation)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(n, generator=generator, dtype=torch.float64).to(device)
    basis = [q / torch.linalg.vector_norm(q)]
    alphas: list[float] = []
    betas: list[float] = []
    value, residual = math.nan, math.inf
    for k in range(1, max_iterations + 1):
        w = apply(basis[-1])
        alpha = float(torch.dot(w, basis[-1]))
        stack = torch.stack(basis)
        w = w - stack.T @ (stack @ w)  # full reorthogonalisation (twice is enough)
        w = w - stack.T @ (stack @ w)
        beta = float(torch.linalg.vector_norm(w))
        alphas.append(alpha)
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        ritz_values, ritz_vectors = torch.linalg.eigh(tridiagonal)
        value = float(ritz_values[-1])
        residual = abs(beta * float(ritz_vectors[-1, -1])) / max(abs(value), 1e-30)
        if residual <= tolerance or beta <= 1e-12 * max(abs(value), 1.0) or k == n:
            return SharpnessEstimate(value, k, residual, True, tolerance)
        betas.append(beta)
        basis.append(w / beta)
    return SharpnessEstimate(value, max_iterations, residual, residual <= tolerance, tolerance)


def adam_preconditioner(
    optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """The diagonal P of an Adam-family optimizer's current step, in Cohen et al. 2022's convention.

    Adam's update is lr · m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1 - beta1^t), i.e.
    lr · P^-1 m with P = (1 - beta1^t) · (sqrt(v / (1 - beta2^t)) + eps), m the EMA of gradients. With P
    fixed, that EMA-momentum iteration is stable iff lambda_max(P^-1 H) < (2 + 2 beta1) / ((1 - beta1) lr).
    Raises ValueError before the first step (no second-moment estimate yet) or for other optimizers.
    """
    group = optimizer.param_groups[0]
    if "betas" not in group or "eps" not in group:
        raise ValueError(f"{type(optimizer).__name__} has no Adam-style preconditioner")
    beta1, beta2 = group["betas"]
    eps = group["eps"]
    diagonal = []
    for p in params:
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            raise ValueError("the optimizer has not stepped yet: no second-moment estimate")
        t = float(state["step"])
        v_hat = state["exp_avg_sq"] / (1 - beta2**t)
        diagonal.append((1 - beta1**t) * (v_hat.sqrt() + eps))
    return diagonal


def stability_threshold(optimizer_kind: str, lr: float, momentum: float = 0.0) -> float:
    """Where the (preconditioned) sharpness stops being stable for this lr.

    ``"gd"``: heavy-ball gradient descent, lambda_max < 2(1 + m)/lr. ``"adam"``: EMA momentum with
    beta1 = ``momentum``, lambda_max(P^-1 H) < (2 + 2 beta1)/((1 - beta1) lr) (38/lr at beta1 = 0.9).
    """
    if optimizer_kind == "gd":
        return 2 * (1 + momentum) / lr
    if optimizer_kind == "adam":
        return (2 + 2 * momentum) / ((1 - momentum) * lr)
    raise ValueError(f"unknown optimizer kind {optimizer_kind!r}; valid: gd, adam")
