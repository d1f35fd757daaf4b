"""The reference engine: closed forms on the quadratic, trace columns, divergence as data, seeds, bad cells."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

import optbench
from optbench.engine.reference import DIVERGENCE_FACTOR, run
from optbench.registry.problems import build_problem
from optbench.spec import TRACE_COLUMNS, RunConfig

# ---------------------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("lr", [0.01, 0.1, 0.2, 0.24])
def test_sgd_on_quadratic_matches_closed_form(lr):
    result = run(RunConfig(problem="quadratic", optimizer="sgd", lr=lr, steps=50))
    t = np.arange(50)
    np.testing.assert_allclose(result.trace["loss"], 16 * (1 - 8 * lr) ** (2 * t), rtol=1e-5, atol=1e-30)
    assert result.summary.status == "ok"


def test_trace_columns_on_the_quadratic():
    """x_t = 2(1 - 8·lr)^t; step 0 is the initial loss; lr is the lr of that step's update;
    grad = 8x_t, update = lr·8x_t, param_norm = |x_t| (all before that step's update)."""
    lr, steps = 0.05, 12
    result = run(RunConfig(problem="quadratic", lr=lr, steps=steps))
    trace = result.trace
    assert set(trace) == set(TRACE_COLUMNS) - {"run_id"}
    assert all(len(column) == steps for column in trace.values())
    x = 2 * (1 - 8 * lr) ** np.arange(steps)
    assert trace["step"].tolist() == list(range(steps))
    assert trace["loss"][0] == 16.0
    np.testing.assert_allclose(trace["x0"], x, rtol=1e-5)
    np.testing.assert_allclose(trace["param_norm"], np.abs(x), rtol=1e-5)
    np.testing.assert_allclose(trace["grad_norm"], 8 * np.abs(x), rtol=1e-5)
    np.testing.assert_allclose(trace["update_norm"], lr * 8 * np.abs(x), rtol=1e-5)
    assert (trace["lr"] == lr).all()
    for column in ("x1", "val_loss", "val_acc", "loss_scale"):
        assert np.isnan(trace[column]).all(), column
    assert not trace["skipped_step"].any()
    summary = result.summary
    assert summary.final_loss == trace["loss"][-1] and summary.best_loss == trace["loss"].min()
    assert summary.steps_completed == steps and summary.diverged_step is None
    assert summary.engine == "reference" and summary.wall_time_s > 0


def test_lr_column_is_the_lr_that_steps_update_used():
    """Under a staircase schedule plain SGD's update is exactly lr_t·|g_t| at every step: the recorded lr
    is the one the update used, not the one after scheduler.step()."""
    trace = run(
        RunConfig(problem="quadratic", lr=0.1, steps=10, scheduler="steplr(step_size=2, gamma=0.5)")
    ).trace
    assert trace["lr"].tolist() == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125, 0.00625, 0.00625]
    np.testing.assert_allclose(trace["update_norm"], trace["lr"] * trace["grad_norm"], rtol=1e-5)


def test_2d_trace_records_the_point_before_each_update():
    trace = run(RunConfig(problem="rosenbrock", optimizer="sgd", lr=1e-4, steps=5)).trace
    assert (trace["x0"][0], trace["x1"][0]) == pytest.approx((-1.2, 1.0))
    assert trace["loss"][0] == pytest.approx(24.2, rel=1e-6)
    assert trace["grad_norm"][0] == pytest.approx(np.hypot(215.6, 88.0), rel=1e-5)
    step = np.hypot(np.diff(trace["x0"]), np.diff(trace["x1"]))
    np.testing.assert_allclose(trace["update_norm"][:-1], step, rtol=1e-4)


# ------------------------------------------------------------------------------------------- divergence


def test_divergence_is_data_with_the_trace_up_to_that_step():
    """lr = 0.5: loss_t = 16·9^t passes 10^6·16 at t = 7 (16·9^6 = 8.5e6 < 1.6e7 < 16·9^7 = 7.7e7)."""
    result = run(RunConfig(problem="quadratic", lr=0.5, steps=100))
    summary, trace = result.summary, result.trace
    assert summary.status == "diverged"
    assert summary.diverged_step == 7
    assert trace["step"].tolist() == list(range(8))
    np.testing.assert_allclose(trace["loss"], 16 * 9.0 ** np.arange(8), rtol=1e-5)
    assert summary.final_loss == trace["loss"][-1]
    assert summary.best_loss == 16.0


@pytest.mark.parametrize("lr", [0.2822, 0.27])  # diverge inside the first and the second check window
def test_diverged_step_is_the_first_step_past_the_threshold(lr):
    trace = run(RunConfig(problem="quadratic", lr=lr, steps=100)).trace
    expected = int(np.argmax(16 * (1 - 8 * lr) ** (2 * np.arange(100)) > DIVERGENCE_FACTOR * 16))
    assert trace["step"][-1] == expected
    assert trace["loss"][-1] > DIVERGENCE_FACTOR * 16 >= trace["loss"][:-1].max()


def test_non_finite_loss_diverges_immediately():
    result = run(RunConfig(problem="quadratic", lr=1e30, steps=50))
    assert result.summary.status == "diverged" and result.summary.diverged_step == 1
    assert result.trace["loss"][0] == 16.0 and not np.isfinite(result.trace["loss"][1])


def test_threshold_is_relative_to_max_of_initial_loss_and_1():
    """From x0 = 1e-4 (loss 4e-8) the threshold is 10^6·1, not 10^6·4e-8."""
    trace = run(RunConfig(problem="quadratic(x0=0.0001)", lr=0.3, steps=100)).trace
    assert trace["loss"][-1] > DIVERGENCE_FACTOR >= trace["loss"][:-1].max()
    assert trace["step"][-1] > 40  # 4e-8·1.96^t passes 1 near t = 25 and 10^6 near t = 46


# ---------------------------------------------------------------------------------------- reproducibility

MLP = "mlp-classification(width=16, depth=2, n_train=256, n_val=64, eval_every=4)"


def test_same_seed_same_trace_bit_for_bit():
    a = run(RunConfig(problem=MLP, optimizer="adam", lr=0.01, seed=3, steps=12))
    torch.manual_seed(1234)  # global RNG state must not leak into a run
    torch.randn(100)
    b = run(RunConfig(problem=MLP, optimizer="adam", lr=0.01, seed=3, steps=12))
    c = run(RunConfig(problem=MLP, optimizer="adam", lr=0.01, seed=4, steps=12))
    for column in a.trace:
        np.testing.assert_array_equal(a.trace[column], b.trace[column], err_msg=column)
    assert not np.array_equal(a.trace["loss"], c.trace["loss"])
    assert a.run_id == b.run_id != c.run_id == c.config.run_id()


def test_mlp_step_0_is_the_loss_before_any_update_and_val_metrics_every_eval_every():
    result = run(RunConfig(problem=MLP, lr=0.05, seed=0, steps=10))
    torch.manual_seed(0)
    problem = build_problem(MLP, seed=0, steps=10)
    assert result.trace["loss"][0] == pytest.approx(problem.loss(0).item(), rel=1e-6)
    val_loss, val_acc = result.trace["val_loss"], result.trace["val_acc"]
    evaluated = [0, 4, 8, 9]  # every eval_every steps and the last
    assert np.flatnonzero(~np.isnan(val_loss)).tolist() == evaluated
    assert np.flatnonzero(~np.isnan(val_acc)).tolist() == evaluated
    assert ((val_acc[evaluated] >= 0) & (val_acc[evaluated] <= 1)).all()
    assert val_loss[0] == pytest.approx(problem.evaluate()[0].item(), rel=1e-6)
    assert result.summary.final_val_loss == val_loss[9] and result.summary.final_val_acc == val_acc[9]
    assert np.isnan(result.trace["x0"]).all()


def test_head_lr_scale_and_freeze_run_on_mlps():
    result = run(RunConfig(problem=MLP, lr=0.05, steps=4, head_lr_scale=0.1, freeze=1))
    assert result.summary.status == "ok", result.summary.reason
    assert (result.trace["lr"] == 0.05).all()  # the first param group's lr


# ------------------------------------------------------------------------------------------ bad cells


def test_a_cell_that_cannot_be_built_is_invalid_with_its_reason():
    result = run(RunConfig(problem="quadratic", optimizer="sparseadam", steps=5))
    assert result.summary.status == "invalid"
    assert "sparse" in result.summary.reason
    assert set(result.trace) == set(TRACE_COLUMNS) - {"run_id"}
    assert all(len(column) == 0 for column in result.trace.values())
    assert run(RunConfig(problem="quadratic", head_lr_scale=0.5, steps=2)).summary.status == "invalid"


def test_a_cell_that_breaks_while_running_is_failed_with_the_exception(tmp_path, monkeypatch):
    (tmp_path / "optbench_test_boom.py").write_text(
        textwrap.dedent("""
        import torch

        class Boom(torch.optim.Optimizer):
            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            def step(self, closure=None):
                raise RuntimeError("boom at step")
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("OPTBENCH_ALLOW_IMPORTS", "optbench_test_boom")  # a user's package, allowed
    result = run(RunConfig(problem="quadratic", optimizer="optbench_test_boom:Boom", steps=3))
    assert result.summary.status == "failed"
    assert result.summary.reason == "RuntimeError: boom at step"


def test_a_clean_run_records_no_warnings():
    """The engine itself must not trigger torch warnings (e.g. float() of a tensor that requires grad),
    so the warnings column holds only what the optimizer/scheduler under test raised."""
    previous = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # make torch's warn-once warnings visible in every run
    try:
        for scheduler in ("none", "steplr", "reducelronplateau"):
            result = run(RunConfig(problem="quadratic", steps=40, scheduler=scheduler))
            assert result.summary.warnings is None, (scheduler, result.summary.warnings)
        result = run(RunConfig(problem=MLP, steps=5))
        assert result.summary.warnings is None, result.summary.warnings
    finally:
        torch.set_warn_always(previous)


def test_python_api_is_exported_lazily():
    assert optbench.run is run
    assert optbench.RunConfig is RunConfig
    from optbench.experiments.sweep import lr_sweep

    assert optbench.lr_sweep is lr_sweep
    with pytest.raises(AttributeError):
        optbench.no_such_thing  # noqa: B018


@pytest.mark.parametrize("scheduler", ["onecyclelr", "cycliclr"])
def test_a_scheduler_that_cycles_momentum_says_so_in_the_warnings(scheduler):
    noisy = run(RunConfig(scheduler=scheduler, lr=0.1, steps=10))
    quiet = run(RunConfig(scheduler=f"{scheduler}(cycle_momentum=False)", lr=0.1, steps=10))
    assert "cycle_momentum=True" in (noisy.summary.warnings or "")
    assert quiet.summary.warnings is None
    # and it really does change the updates: momentum on vs off
    assert not np.array_equal(noisy.trace["x0"], quiet.trace["x0"])
