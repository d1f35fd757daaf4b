"""Sharpness (top Hessian eigenvalue) against closed forms and against the full Hessian."""

from __future__ import annotations

import math

import pytest
import torch

from optbench.engine.sharpness import (
    adam_preconditioner,
    hessian_vector_product,
    lanczos_top,
    start_vectors,
    top_eigenvalue,
)
from optbench.experiments.stability import stability_threshold


def test_quadratic_has_sharpness_eight_everywhere():
    """f(x) = (2x)^2 = 4x^2: f'' = 8 at every x, so the GD bound 2/L is 0.25."""
    for x in (2.0, -0.3, 1e3):
        estimate = top_eigenvalue(lambda ps: ((2 * ps[0]) ** 2).sum(), [torch.tensor([x])])
        assert estimate.value == pytest.approx(8.0, rel=1e-6) and estimate.converged


def test_rosenbrock_at_its_start_matches_the_closed_form():
    """f = (1 - x)^2 + 100(y - x^2)^2; H = [[2 - 400(y - x^2) + 800x^2, -400x], [-400x, 200]].

    At (-1.2, 1): [[1330, 480], [480, 200]], lambda_max = (1530 + sqrt(1130^2 + 4·480^2)) / 2 = 1506.4.
    """
    x, y = -1.2, 1.0
    h = torch.tensor([[2 - 400 * (y - x**2) + 800 * x**2, -400 * x], [-400 * x, 200.0]], dtype=torch.float64)
    closed_form = (1530 + math.sqrt(1130**2 + 4 * 480**2)) / 2
    assert float(torch.linalg.eigvalsh(h)[-1]) == pytest.approx(closed_form, rel=1e-12)
    assert closed_form == pytest.approx(1506.4, abs=0.05)

    def loss(ps):
        p = ps[0]
        return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

    estimate = top_eigenvalue(loss, [torch.tensor([x, y], dtype=torch.float64)])
    assert estimate.value == pytest.approx(closed_form, rel=1e-10)


def _tiny_mlp(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (16,))
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for p in model.parameters())

    def loss_of(ps):
        out = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x,))
        return torch.nn.functional.cross_entropy(out, y)

    return loss_of, params


def _full_hessian(loss_of, params) -> torch.Tensor:
    flat = torch.cat([p.reshape(-1) for p in params])
    sizes = [p.numel() for p in params]

    def f(v):
        pieces = torch.split(v, sizes)
        return loss_of(tuple(piece.view_as(p) for piece, p in zip(pieces, params, strict=True)))

    return torch.autograd.functional.hessian(f, flat)


def test_tiny_mlp_agrees_with_the_full_hessian():
    loss_of, params = _tiny_mlp()
    exact = float(torch.linalg.eigvalsh(_full_hessian(loss_of, params))[-1])
    estimate = top_eigenvalue(loss_of, params)
    assert estimate.converged
    assert estimate.value == pytest.approx(exact, rel=1e-4)


def test_hessian_vector_product_equals_the_full_hessian_times_v():
    loss_of, params = _tiny_mlp(seed=1)
    hessian = _full_hessian(loss_of, params)
    v = [torch.randn_like(p) for p in params]
    product = torch.cat([t.reshape(-1) for t in hessian_vector_product(loss_of, params, v)])
    torch.testing.assert_close(product, hessian @ torch.cat([t.reshape(-1) for t in v]))


def test_lanczos_finds_the_top_eigenvalue_past_a_larger_negative_one():
    """f = 0.5(3a^2 - 10b^2): eigenvalues 3 and -10. Power iteration would return -10; sharpness is 3."""
    estimate = top_eigenvalue(
        lambda ps: 0.5 * (3 * ps[0][0] ** 2 - 10 * ps[0][1] ** 2), [torch.tensor([1.0, 1.0])]
    )
    assert estimate.value == pytest.approx(3.0, rel=1e-6)


def test_preconditioned_sharpness_is_that_of_p_inverse_h():
    """lambda_max(P^-1 H) for diagonal P, against the dense matrix product."""
    loss_of, params = _tiny_mlp(seed=2)
    hessian = _full_hessian(loss_of, params)
    diagonal = [torch.rand_like(p) + 0.5 for p in params]
    p_inv = torch.diag(1 / torch.cat([d.reshape(-1) for d in diagonal]))
    exact = float(torch.linalg.eigvals(p_inv @ hessian).real.max())
    estimate = top_eigenvalue(loss_of, params, preconditioner=diagonal)
    assert estimate.value == pytest.approx(exact, rel=1e-4)


def test_adam_preconditioner_follows_adams_own_update():
    """One Adam step is lr · P^-1 m_t with P from ``adam_preconditioner``: check it against the real step."""
    torch.manual_seed(0)
    w = torch.randn(7, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(3):
        optimizer.zero_grad()
        (w**4).sum().backward()
        before = w.detach().clone()
        optimizer.step()
    (p,) = adam_preconditioner(optimizer, [w])
    m = optimizer.state[w]["exp_avg"]
    torch.testing.assert_close(before - w.detach(), 0.1 * m / p)


def test_adam_preconditioner_needs_a_step_first():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="not stepped"):
        adam_preconditioner(torch.optim.Adam([w]), [w])


def test_stability_thresholds():
    assert stability_threshold("gd", 0.1) == pytest.approx(20.0)
    assert stability_threshold("gd", 0.1, momentum=0.5) == pytest.approx(30.0)
    assert stability_threshold("adam", 0.01, momentum=0.9) == pytest.approx(3800.0)  # 38 / lr


# ------------------------------------------------------------------------------ many operators at once


def test_batched_lanczos_gives_each_cell_its_own_top_eigenvalue():
    """C symmetric matrices at once: each cell's value is its own eigvalsh maximum, one NaN cell aside."""
    torch.manual_seed(3)
    cells, n = 5, 12
    a = torch.randn(cells, n, n, dtype=torch.float64)
    matrices = a + a.transpose(1, 2)
    matrices[2] = float("nan")  # a diverged cell: must not disturb the others

    def apply(v):
        return torch.einsum("cij,cj->ci", matrices, v)

    estimates = lanczos_top(apply, start_vectors(cells, n, 0, "cpu"))
    for c in (0, 1, 3, 4):
        exact = float(torch.linalg.eigvalsh(matrices[c])[-1])
        assert estimates.values[c].item() == pytest.approx(exact, rel=1e-8)
        assert bool(estimates.converged[c])
    assert math.isnan(estimates.values[2]) and not bool(estimates.converged[2])
    assert math.isinf(estimates.residuals[2])


def test_a_non_finite_point_gives_nan_not_an_error():
    estimate = top_eigenvalue(lambda ps: (ps[0] ** 4).sum(), [torch.tensor([float("inf"), 1.0])])
    assert math.isnan(estimate.value) and not estimate.converged


def test_warm_start_finds_the_same_top_eigenvalue_in_fewer_products():
    loss_of, params = _tiny_mlp(seed=4)
    cold = top_eigenvalue(loss_of, params)
    moved = tuple(p + 0.01 * torch.randn_like(p) for p in params)  # a nearby point, as one step later
    exact = float(torch.linalg.eigvalsh(_full_hessian(loss_of, moved))[-1])
    again_cold = top_eigenvalue(loss_of, moved)
    warm = top_eigenvalue(loss_of, moved, start=cold.vector)
    assert warm.value == pytest.approx(exact, rel=1e-4) and warm.converged
    assert warm.iterations < again_cold.iterations
