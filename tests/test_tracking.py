"""Sharpness along a run (``sharpness_every``): closed forms, real Adam state, a run left bit-identical,
the edge of stability on a small MLP, and the Problem hook it rests on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench.engine import run
from optbench.engine.sharpness import DEFAULT_TOLERANCE, top_eigenvalue
from optbench.engine.tracking import initial_sharpness
from optbench.errors import NotApplicable
from optbench.registry.problems import Problem, build_problem
from optbench.registry.validate import canonical_config
from optbench.spec import TRACE_COLUMNS, RunConfig

EOS_PROBLEM = "mlp-regression(activation='tanh', depth=2, n_train=256, width=32)"


def _measured(trace, column="sharpness"):
    values = trace[column]
    steps = np.flatnonzero(~np.isnan(values))
    return steps, values[steps]


def test_quadratic_sharpness_is_eight_at_every_measured_step_and_null_between():
    result = run(RunConfig(problem="quadratic", lr=0.1, steps=25, sharpness_every=6))
    steps, values = _measured(result.trace)
    assert steps.tolist() == [0, 6, 12, 18, 24]
    assert values.tolist() == [8.0] * 5  # f'' = 2 * 2^2, exactly
    assert np.isnan(result.trace["precond_sharpness"]).all()  # SGD has no preconditioner
    assert result.summary.sharpness_unconverged == 0
    assert result.summary.sharpness_residual <= DEFAULT_TOLERANCE


def test_rosenbrock_start_is_measured_at_step_zero():
    result = run(RunConfig(problem="rosenbrock", lr=1e-4, steps=3, sharpness_every=2))
    closed_form = (1530 + math.sqrt(1130**2 + 4 * 480**2)) / 2
    assert result.trace["sharpness"][0] == pytest.approx(closed_form, rel=1e-6)


def test_without_tracking_the_columns_are_null_and_the_summary_fields_none():
    result = run(RunConfig(problem="quadratic", lr=0.1, steps=5))
    assert np.isnan(result.trace["sharpness"]).all() and np.isnan(result.trace["precond_sharpness"]).all()
    assert result.summary.sharpness_residual is None and result.summary.sharpness_unconverged is None


@pytest.mark.parametrize(
    "config",
    [
        RunConfig(
            problem="mlp-classification(n_train=128, width=16)",
            optimizer="adam",
            lr=0.01,
            steps=40,
            batch_size=32,
            head_lr_scale=0.5,
            freeze=1,
        ),
        RunConfig(problem="rosenbrock", optimizer="sgd", momentum=0.9, lr=1e-3, steps=40, scheduler="steplr"),
        RunConfig(problem="mlp-regression(n_train=64, width=8)", optimizer="lbfgs", lr=0.5, steps=6),
    ],
    ids=["mlp-adam-frozen-head", "toy-sgd-steplr", "mlp-lbfgs"],
)
def test_measuring_does_not_perturb_the_run(config):
    """Loss, norms, points, val metrics: bit for bit the same with sharpness_every=K as with 0."""
    plain, tracked = run(config), run(config.replace(sharpness_every=5))
    assert tracked.summary.status == plain.summary.status == "ok"
    for column in TRACE_COLUMNS:
        if column in ("run_id", "sharpness", "precond_sharpness"):
            continue
        np.testing.assert_array_equal(tracked.trace[column], plain.trace[column], err_msg=column)
    assert np.isfinite(tracked.trace["sharpness"][::5]).all()


def test_adam_preconditioned_sharpness_follows_the_real_optimizer_state():
    """precond_sharpness at step t: lambda_max(P^-1 H) with P from Adam's state after t real steps, here
    recomputed by hand with torch.optim.Adam and the dense 2x2 Hessian of Rosenbrock."""
    config = RunConfig(problem="rosenbrock", optimizer="adam", lr=0.01, steps=12, sharpness_every=4)
    trace = run(config).trace
    assert math.isnan(trace["precond_sharpness"][0])  # no second moment before the first step
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=0.01)
    f = build_problem("rosenbrock").fn
    for t in range(1, 9):
        optimizer.zero_grad()
        f(x).backward()
        optimizer.step()
        if t in (4, 8):
            state = optimizer.state[x]
            p = (1 - 0.9**t) * ((state["exp_avg_sq"] / (1 - 0.999**t)).sqrt() + 1e-8)
            h = torch.autograd.functional.hessian(f, x.detach().double())
            exact = float(torch.linalg.eigvals(torch.diag(1 / p.double()) @ h).real.max())
            assert trace["precond_sharpness"][t] == pytest.approx(exact, rel=1e-5)


def test_amsgrad_and_other_optimizers_have_no_preconditioned_column():
    for optimizer in ("adam(amsgrad=True)", "rmsprop", "nadam"):
        trace = run(
            RunConfig(problem="beale", optimizer=optimizer, lr=1e-3, steps=5, sharpness_every=2)
        ).trace
        assert np.isnan(trace["precond_sharpness"]).all()
        assert np.isfinite(trace["sharpness"][[0, 2, 4]]).all()


def test_mlp_hook_is_the_training_loss_on_the_whole_small_training_set():
    """The fixed batch of a small MLP problem is its training set: sharpness_loss at the model's own weights
    equals the mean loss over x_train, and its Lanczos value agrees with the full Hessian's eigvalsh."""
    torch.manual_seed(0)
    problem = build_problem("mlp-regression(n_train=48, width=6, depth=1, in_dim=3)", steps=1)
    problem.param_groups(0.1)
    loss_of = problem.sharpness_loss()
    params = tuple(p.detach() for p in problem.trainable)
    with torch.no_grad():
        direct = problem.loss_module(problem.model(problem.x_train), problem.y_train)
    assert float(loss_of(params)) == pytest.approx(float(direct), rel=1e-6)
    flat = torch.cat([p.reshape(-1) for p in params]).double()
    sizes = [p.numel() for p in params]

    def of_flat(v):
        pieces = torch.split(v, sizes)
        return loss_of(tuple(x.view_as(p).float() for x, p in zip(pieces, params, strict=True))).double()

    exact = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(of_flat, flat))[-1])
    assert top_eigenvalue(loss_of, params).value == pytest.approx(exact, rel=1e-4)


def test_frozen_layers_are_left_out_of_the_hessian():
    torch.manual_seed(0)
    problem = build_problem("mlp-classification(n_train=64, width=8)", steps=1)
    problem.param_groups(0.1, freeze=1)
    params = tuple(p.detach() for p in problem.trainable)
    assert len(params) == 4  # the frozen first layer's weight and bias are constants of the loss
    assert math.isfinite(top_eigenvalue(problem.sharpness_loss(), params).value)


def test_a_problem_without_a_fixed_batch_cannot_be_measured():
    class Streaming(Problem):
        name = "streaming"

    with pytest.raises(NotApplicable, match="no fixed evaluation batch"):
        Streaming().sharpness_loss()


def test_initial_sharpness_is_the_traces_first_value():
    config = canonical_config(
        RunConfig(problem="mlp-regression(n_train=64, width=8)", lr=0.05, steps=3, sharpness_every=2, seed=3)
    )
    assert initial_sharpness(config).value == run(config).trace["sharpness"][0]


def test_sharpness_every_must_be_a_whole_number_at_least_zero():
    from optbench.errors import OptbenchError

    for bad in (-1, 2.5, True):
        with pytest.raises(OptbenchError, match="--sharpness-every"):
            canonical_config(RunConfig(sharpness_every=bad))
    assert canonical_config(RunConfig(sharpness_every=None)).sharpness_every == 0


def test_full_batch_gradient_descent_reaches_the_edge_of_stability():
    """Cohen et al. 2021 on a CI-sized net: full-batch GD at lr 0.1 from sharpness 4.6; progressive
    sharpening takes it to 2/lr = 20, where it stays (within 10%) for the second half of the run while the
    loss keeps falling, not monotonically. (~1.5 s: 1,000 steps, 50 measurements.)"""
    config = RunConfig(problem=EOS_PROBLEM, lr=0.1, steps=1000, batch_size=256, sharpness_every=20)
    result = run(canonical_config(config))
    assert result.summary.status == "ok"
    steps, values = _measured(result.trace)
    assert values[0] == pytest.approx(4.58, abs=0.01)
    second_half = values[steps >= 500]
    near = np.abs(second_half / 20.0 - 1) < 0.10
    assert near.mean() >= 0.9, second_half
    loss = result.trace["loss"]
    assert loss[-1] < 0.1 * loss[0]
    assert (np.diff(loss) > 0).sum() > 10  # it falls, but not monotonically


def test_adam_under_a_scaler_that_skipped_every_step_so_far_measures_no_preconditioned_value():
    """fp16 with a GradScaler at scale 1e30: the first steps overflow and are skipped, so Adam has no
    second moment yet at step 2; the run goes on (no preconditioned value there), it does not fail."""
    config = RunConfig(
        problem="mlp-regression(n_train=64, width=8)",
        optimizer="adam",
        lr=0.01,
        steps=4,
        precision="fp16(init_scale=1e30)",
        sharpness_every=2,
    )
    result = run(canonical_config(config))
    assert result.summary.status in ("ok", "failed") and "not stepped" not in (result.summary.reason or "")
    assert np.isfinite(result.trace["sharpness"][0])
