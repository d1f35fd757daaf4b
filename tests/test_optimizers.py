"""Optimizers: every registered entry runs (or reports not applicable); heavy-ball and sgd-l1l2 against the
recurrences computed by hand; --momentum knobs; import paths."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from optbench.engine.reference import run
from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.imports import ENV_VAR
from optbench.registry.optimizers import (
    SGDL1L2,
    build_optimizer,
    canonical_optimizer,
    momentum_knob,
    needs_closure,
    optimizers,
    resolve_optimizer_class,
)
from optbench.spec import RunConfig

# Problems to try, in order, until one applies: the 1-D quadratic, then a small MLP.
PROBLEMS = ("quadratic", "mlp-regression(width=8, depth=1, n_train=64, n_val=32)")


@pytest.mark.parametrize("name", optimizers.names())
def test_every_optimizer_reduces_the_loss_or_reports_not_applicable(name):
    reasons = []
    for problem in PROBLEMS:
        result = run(RunConfig(problem=problem, optimizer=name, lr=0.01, steps=20))
        summary = result.summary
        if summary.status == "invalid":
            assert "not applicable" in summary.reason, summary.reason
            assert len(result.trace["loss"]) == 0
            reasons.append(summary.reason)
            continue
        assert summary.status == "ok", (problem, summary.reason)
        loss = result.trace["loss"]
        assert len(loss) == 20 and np.isfinite(loss).all()
        assert loss[-1] < loss[0], (problem, loss[0], loss[-1])
        return
    assert name in ("sparseadam", "muon"), f"{name} applies to none of {PROBLEMS}: {reasons}"


# ------------------------------------------------------------------------------------- heavy ball by hand


def _heavy_ball(x0: float, lr: float, m: float, steps: int, l1: float = 0.0, l2: float = 0.0) -> np.ndarray:
    """x_t on f(x) = 4x^2 for PyTorch's SGD: g = 8x (+ l1·sign(x) + l2·x); buf = g on the first step,
    then buf = m·buf + g; x -= lr·buf. Plain Python floats, written out by hand."""
    xs, x, buf = [], x0, None
    for _ in range(steps):
        xs.append(x)
        g = 8 * x + l1 * float(np.sign(x)) + l2 * x
        buf = g if buf is None else m * buf + g
        x = x - lr * (buf if m else g)
    return np.array(xs)


@pytest.mark.parametrize(("lr", "m"), [(0.01, 0.9), (0.01, 0.63), (0.05, 0.5), (0.03, 0.0)])
def test_sgd_momentum_follows_the_heavy_ball_recurrence(lr, m):
    result = run(RunConfig(problem="quadratic", optimizer="sgd", lr=lr, momentum=m, steps=40))
    expected_x = _heavy_ball(2.0, lr, m, 40)
    np.testing.assert_allclose(result.trace["x0"], expected_x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.trace["loss"], 4 * expected_x**2, rtol=1e-4, atol=1e-6)
    assert result.summary.momentum_knob == "momentum"


def test_momentum_overshoots_where_plain_sgd_does_not():
    """The tutorial's comparison: lr 0.01 with m = 0.9 swings past the minimum like a spring; lr 0.03
    without momentum (contraction 1 - 8·0.03 = 0.76 > 0) approaches it from one side."""
    spring = run(RunConfig(problem="quadratic", optimizer="sgd", lr=0.01, momentum=0.9, steps=60)).trace["x0"]
    plain = run(RunConfig(problem="quadratic", optimizer="sgd", lr=0.03, momentum=0.0, steps=60)).trace["x0"]
    assert spring.min() < -0.1
    assert (plain > 0).all() and (np.diff(plain) < 0).all()


# ---------------------------------------------------------------------------------------------- sgd-l1l2


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("problem", PROBLEMS)
def test_sgd_l1l2_without_decay_equals_torch_sgd(problem, momentum):
    ours = run(RunConfig(problem=problem, optimizer="sgd-l1l2", lr=0.05, momentum=momentum, steps=15))
    torchs = run(RunConfig(problem=problem, optimizer="sgd", lr=0.05, momentum=momentum, steps=15))
    assert ours.summary.status == torchs.summary.status == "ok"
    for column in ("loss", "grad_norm", "update_norm", "param_norm"):
        np.testing.assert_allclose(ours.trace[column], torchs.trace[column], rtol=1e-6, err_msg=column)


@pytest.mark.parametrize(
    ("l1", "l2", "m"), [(0.5, 0.0, 0.0), (0.0, 2.0, 0.0), (0.5, 2.0, 0.9), (3.0, 1.0, 0.5)]
)
def test_sgd_l1l2_follows_the_hand_recurrence(l1, l2, m):
    lr = 0.01
    result = run(
        RunConfig(problem="quadratic", optimizer=f"sgd-l1l2(l1={l1}, l2={l2})", lr=lr, momentum=m, steps=30)
    )
    assert result.summary.status == "ok", result.summary.reason
    np.testing.assert_allclose(
        result.trace["x0"], _heavy_ball(2.0, lr, m, 30, l1=l1, l2=l2), rtol=1e-4, atol=1e-6
    )


def test_sgd_l1l2_l1_and_l2_act_differently():
    """L1 subtracts a constant lr·l1 per step, L2 shrinks proportionally: same first step, then apart."""
    x = torch.tensor([2.0], requires_grad=True)
    opt = SGDL1L2([x], lr=0.1, l1=1.0)
    x.grad = torch.zeros(1)
    opt.step()
    opt.step()
    assert x.item() == pytest.approx(2.0 - 0.2)
    y = torch.tensor([2.0], requires_grad=True)
    opt = SGDL1L2([y], lr=0.1, l2=0.5)
    y.grad = torch.zeros(1)
    opt.step()
    opt.step()
    assert y.item() == pytest.approx(2.0 * 0.95**2)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"lr": -0.1}, "-0.1"), ({"l1": -1.0}, "l1"), ({"l2": -2.0}, "l2"), ({"momentum": -0.5}, "momentum")],
)
def test_sgd_l1l2_validates_its_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        SGDL1L2([torch.zeros(1, requires_grad=True)], **kwargs)


# --------------------------------------------------------------------------------------------- --momentum


def _groups():
    return [{"params": [torch.zeros(3, requires_grad=True)], "lr": 0.1}]


@pytest.mark.parametrize(
    ("name", "knob"),
    [
        ("sgd", "momentum"),
        ("rmsprop", "momentum"),
        ("sgd-l1l2", "momentum"),
        ("adam", "betas[0]"),
        ("adamw", "betas[0]"),
        ("nadam", "betas[0]"),
        ("adagrad", None),
        ("rprop", None),
        ("lbfgs", None),
    ],
)
def test_momentum_knob_of_each_optimizer(name, knob):
    assert momentum_knob(optimizers.get(name).factory) == knob


def test_momentum_sets_the_optimizer_knob():
    opt, knob = build_optimizer("sgd", _groups(), 0.1, 0.7)
    assert knob == "momentum" and opt.param_groups[0]["momentum"] == 0.7
    opt, knob = build_optimizer("adam", _groups(), 0.1, 0.7)
    assert knob == "betas[0]" and tuple(opt.param_groups[0]["betas"]) == (0.7, 0.999)
    opt, knob = build_optimizer("adam(betas=(0.9, 0.95))", _groups(), 0.1, None)
    assert knob is None and tuple(opt.param_groups[0]["betas"]) == (0.9, 0.95)
    opt, knob = build_optimizer("sgd", _groups(), 0.1, None)
    assert knob is None and opt.param_groups[0]["momentum"] == 0  # the optimizer's own default stands
    assert opt.param_groups[0]["lr"] == 0.1


def test_momentum_on_an_optimizer_without_a_knob():
    build_optimizer("adagrad", _groups(), 0.1, 0.0)  # momentum 0 is always fine
    with pytest.raises(NotApplicable, match="adagrad.*momentum"):
        build_optimizer("adagrad", _groups(), 0.1, 0.5)


def test_momentum_given_twice_is_an_error():
    with pytest.raises(OptbenchError, match="twice"):
        build_optimizer("sgd(momentum=0.9)", _groups(), 0.1, 0.5)


def test_momentum_and_betas_in_the_spec_conflict_like_momentum_does():
    """``adam(betas=(0.8, 0.99))`` with --momentum 0.5: two values for beta1, like sgd(momentum=...) + --momentum;
    it must not silently replace the spec's 0.8."""
    with pytest.raises(OptbenchError, match="twice"):
        build_optimizer("adam(betas=(0.8, 0.99))", _groups(), 0.1, 0.5)


def test_bad_optimizer_arguments_are_not_applicable_naming_them():
    with pytest.raises(NotApplicable, match="nesterov"):
        build_optimizer("sgd(nesterov=True)", _groups(), 0.1, None)  # torch: nesterov needs momentum
    with pytest.raises(NotApplicable, match="bogus"):
        build_optimizer("sgd(bogus=1)", _groups(), 0.1, None)


@pytest.mark.parametrize(("name", "needle"), [("sparseadam", "sparse"), ("muon", "2-D")])
def test_optimizers_that_do_not_apply_to_a_1d_point(name, needle):
    with pytest.raises(NotApplicable, match=needle):
        build_optimizer(name, _groups(), 0.1, None)


def test_lbfgs_runs_with_a_closure():
    assert needs_closure("lbfgs") and not needs_closure("sgd") and not needs_closure("torch.optim:LBFGS")
    result = run(RunConfig(problem="quadratic", optimizer="lbfgs", lr=1.0, steps=3))
    assert result.summary.status == "ok"
    assert result.trace["loss"][-1] < 1e-6 * result.trace["loss"][0]


# ------------------------------------------------------------------------------------------- import paths


def test_canonical_optimizer(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "torch")
    assert canonical_optimizer("adamw( weight_decay = 0.1 )") == "adamw(weight_decay=0.1)"
    assert canonical_optimizer("torch.optim:AdamW") == "torch.optim:AdamW"
    with pytest.raises(OptbenchError, match="valid: .*adam.*sgd"):
        canonical_optimizer("adamm")


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("torch.nn:Linear", "not a torch.optim.Optimizer subclass"),
        ("torch:pi", "not a class or function"),  # a float
        ("no_such_module_xyz:Opt", "cannot import optimizer 'no_such_module_xyz:Opt': no module named"),
        ("torch.optim:NoSuchOptimizer", "cannot import"),
        ("collections:OrderedDict", "names the standard library"),  # never, even if allowed
    ],
)
def test_import_path_must_be_an_optimizer_subclass(path, needle, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "torch,no_such_module_xyz,collections")
    with pytest.raises(OptbenchError, match=needle):
        resolve_optimizer_class(path)
    with pytest.raises(OptbenchError):
        canonical_optimizer(path)


def test_user_optimizer_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "optbench_test_user_opt.py").write_text(
        textwrap.dedent("""
        import torch

        class PlainSGD(torch.optim.Optimizer):
            '''w -= lr * g, written by a user.'''
            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        p.add_(p.grad, alpha=-group["lr"])
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(ENV_VAR, "optbench_test_user_opt")
    user = run(RunConfig(problem="quadratic", optimizer="optbench_test_user_opt:PlainSGD", lr=0.05, steps=10))
    torchs = run(RunConfig(problem="quadratic", optimizer="sgd", lr=0.05, steps=10))
    assert user.summary.status == "ok", user.summary.reason
    np.testing.assert_array_equal(user.trace["loss"], torchs.trace["loss"])
