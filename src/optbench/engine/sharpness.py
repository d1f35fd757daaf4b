"""Sharpness: the largest eigenvalue of the training loss's Hessian, from Hessian-vector products.

Gradient descent with heavy-ball momentum m is locally stable iff lr < 2(1 + m)/lambda_max, where
lambda_max, the *sharpness*, is the top eigenvalue of the Hessian H of the loss at the current point. On the
quadratic f(x) = 4x^2 it is 8 everywhere (bound 0.25); at Rosenbrock's start (-1.2, 1) the Hessian is
[[1330, 480], [480, 200]] and lambda_max = 1506.4. For Adam-family optimizers the relevant quantity is the
*preconditioned* sharpness lambda_max(P^-1 H), with P the optimizer's diagonal preconditioner
(Cohen et al. 2022: Adam is stable while it stays below (2 + 2 beta1) / ((1 - beta1) lr) = 38/lr at
beta1 = 0.9). The thresholds themselves live in ``experiments.stability`` (``stability_threshold``).

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
from dataclasses import dataclass, field

import torch

LossOf = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]

DEFAULT_TOLERANCE = 1e-4  # relative residual of the top Ritz pair
DEFAULT_MAX_ITERATIONS = 64
# A small residual certifies that the top Ritz value is near *an* eigenvalue, not the largest: when the top
# eigenvalues cluster (Rastrigin's Hessian is diag(2 + 40π² cos 2πx_i)), one product can give a vector
# with a tiny residual whose value sits at the cluster's bottom. No estimate stops before this many
# products (all of them, up to n; enough to resolve a cluster of that size).
MIN_ITERATIONS = 5


@dataclass(frozen=True)
class SharpnessEstimate:
    """lambda_max with the evidence for it: Lanczos steps taken, the relative residual bound
    |beta_k * s_k| / |lambda| of the top Ritz pair, and whether it fell below the tolerance. ``vector``: the
    top Ritz vector (flat, float64), a warm start for the next measurement along a trajectory. A point
    where the loss or its curvature is not finite gives value NaN, residual inf, converged False."""

    value: float
    iterations: int
    residual: float
    converged: bool
    tolerance: float
    vector: torch.Tensor | None = field(default=None, repr=False, compare=False)


@dataclass
class Estimates:
    """The top eigenvalues of C independent operators (one per cell), each with its evidence ([C] each)."""

    values: torch.Tensor  # float64, NaN where the operator was not finite
    iterations: torch.Tensor  # int64
    residuals: torch.Tensor  # float64, inf where not finite
    converged: torch.Tensor  # bool
    vectors: torch.Tensor  # [C, n] float64, the top Ritz vectors
    tolerance: float

    def cell(self, c: int) -> SharpnessEstimate:
        return SharpnessEstimate(
            float(self.values[c]),
            int(self.iterations[c]),
            float(self.residuals[c]),
            bool(self.converged[c]),
            self.tolerance,
            self.vectors[c],
        )


def hessian_vector_product(
    loss_of: LossOf, params: Sequence[torch.Tensor], vector: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """H·v at ``params``: the vector-Jacobian product of the gradient (``torch.func``, reverse over reverse).

    H is symmetric, so v^T H = (H v)^T. Reverse over reverse works for every loss and activation here;
    forward over reverse (``jvp`` of ``grad``) is not supported by some of torch's backward formulas (MSE's
    raises "ZeroTensors are immutable").
    """
    return hessian_operator(loss_of, params)(tuple(v.detach() for v in vector))


def hessian_operator(loss_of: LossOf, params: Sequence[torch.Tensor]):
    """v -> H·v at ``params``, linearised once: the forward pass and the gradient are computed here, and
    each product is one more reverse pass through them (``torch.func.vjp`` of ``torch.func.grad``)."""
    primals = tuple(p.detach() for p in params)
    gradient = torch.func.grad(lambda *ps: loss_of(ps), argnums=tuple(range(len(primals))))
    _, vjp = torch.func.vjp(gradient, *primals)
    return lambda vector: tuple(vjp(tuple(vector)))


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
    start: torch.Tensor | None = None,
) -> SharpnessEstimate:
    """The largest eigenvalue of the Hessian of ``loss_of`` at ``params`` (Lanczos on H·v).

    ``preconditioner``: the diagonal P of an adaptive optimizer (one tensor per parameter, all positive);
    then the result is lambda_max(P^-1 H), computed as lambda_max of the symmetric P^-1/2 H P^-1/2, which has
    the same eigenvalues. Runs in float64 on the parameters' device; the start vector comes from ``seed``,
    plus ``start`` (the previous estimate's ``vector``) where given: a warm start along a trajectory.
    """
    params = tuple(p.detach() for p in params)
    scale = None
    if preconditioner is not None:
        scale = _flatten([q.detach() for q in preconditioner]).double().rsqrt()  # P^-1/2
    hvp = hessian_operator(loss_of, params)

    def apply(v: torch.Tensor) -> torch.Tensor:
        u = v[0] * scale if scale is not None else v[0]
        hu = _flatten(hvp(_unflatten(u.to(params[0].dtype), params))).double()
        return (hu * scale if scale is not None else hu).unsqueeze(0)

    n = sum(p.numel() for p in params)
    first = start_vectors(1, n, seed, params[0].device, None if start is None else start.unsqueeze(0))
    return lanczos_top(apply, first, tolerance=tolerance, max_iterations=max_iterations).cell(0)


def start_vectors(cells: int, n: int, seed: int, device, warm: torch.Tensor | None = None) -> torch.Tensor:
    """[cells, n] float64 unit start vectors: random from ``seed``; with ``warm`` (the previous top Ritz
    vectors), their normalised sum with it. The random half keeps a cold start's component along every
    eigenvector, so a new top direction is found as from a cold start; the old one is reached sooner."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(cells, n, generator=generator, dtype=torch.float64).to(device)
    q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True)
    if warm is not None:
        warm = warm.to(device, torch.float64)
        norm = torch.linalg.vector_norm(warm, dim=1, keepdim=True)
        usable = torch.isfinite(norm) & (norm > 0)
        q = q + torch.where(usable, warm / torch.where(usable, norm, 1.0), 0.0)
    return q / torch.linalg.vector_norm(q, dim=1, keepdim=True)


def lanczos_top(
    apply,
    start: torch.Tensor,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> Estimates:
    """Top eigenvalue of C independent symmetric operators at once (Lanczos, full reorthogonalisation).

    ``apply`` maps [C, n] float64 vectors to the C products; ``start`` [C, n] unit vectors. Every dot product
    and norm is per cell, so the cells never mix: a cell whose operator gives inf/nan ends with NaN and
    the others go on. A cell stops at its own convergence (its values are kept from then on); the loop
    runs until every cell has stopped, at most ``min(max_iterations, n)`` products.
    """
    cells, n = start.shape
    budget = min(max_iterations, n)
    device = start.device
    result = Estimates(
        torch.full((cells,), math.nan, dtype=torch.float64, device=device),
        torch.zeros(cells, dtype=torch.int64, device=device),
        torch.full((cells,), math.inf, dtype=torch.float64, device=device),
        torch.zeros(cells, dtype=torch.bool, device=device),
        torch.zeros(cells, n, dtype=torch.float64, device=device),
        tolerance,
    )
    basis, alphas, betas = [start], [], []
    running = torch.ones(cells, dtype=torch.bool, device=device)
    for k in range(1, budget + 1):
        w = apply(basis[-1])
        alphas.append((w * basis[-1]).sum(1))
        stack = torch.stack(basis, 1)  # [C, k, n]
        for _ in range(2):  # full reorthogonalisation (twice is enough)
            w = w - torch.einsum("ck,ckn->cn", torch.einsum("ckn,cn->ck", stack, w), stack)
        beta = torch.linalg.vector_norm(w, dim=1)
        value, top, residual, finite = _ritz(alphas, betas, beta)
        small = beta <= 1e-12 * value.abs().clamp_min(1.0)
        settled = (residual <= tolerance) & (k >= min(MIN_ITERATIONS, n))
        stop = running & (~finite | settled | small | (k == budget))
        if bool(stop.any()):
            _record(result, stop, k, value, residual, finite & (settled | small | (k == n)))
            result.vectors[stop] = torch.einsum("ck,ckn->cn", top, stack)[stop]
            running &= ~stop
            if not bool(running.any()):
                break
        betas.append(torch.where(running, beta, 0.0))
        divisor = torch.where(running & (beta > 0), beta, 1.0)
        basis.append(torch.where(running[:, None], w / divisor[:, None], 0.0))
    return result


def _ritz(alphas: list, betas: list, beta: torch.Tensor):
    """The top Ritz value, its vector in the Krylov basis [C, k], the residual bound and which cells are
    finite, from the tridiagonal matrices [C, k, k] of every cell."""
    tridiagonal = torch.diag_embed(torch.stack(alphas, 1))
    if betas:
        off = torch.stack(betas, 1)
        tridiagonal = tridiagonal + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    finite = torch.isfinite(tridiagonal).all(2).all(1) & torch.isfinite(beta)
    ritz_values, ritz_vectors = torch.linalg.eigh(torch.where(finite[:, None, None], tridiagonal, 0.0))
    value, top = ritz_values[:, -1], ritz_vectors[:, :, -1]
    residual = (beta * top[:, -1]).abs() / value.abs().clamp_min(1e-30)
    return value, top, torch.where(finite, residual, math.inf), finite


def _record(result: Estimates, stop, k: int, value, residual, converged) -> None:
    result.values[stop] = torch.where(torch.isfinite(residual), value, math.nan)[stop]
    result.iterations[stop] = k
    result.residuals[stop] = residual[stop]
    result.converged[stop] = converged[stop]


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
