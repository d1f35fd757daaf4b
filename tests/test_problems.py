"""Problems: each toy function's value and gradient recomputed by hand; MLPs' data, batches and groups."""

from __future__ import annotations

import importlib.util
import inspect
import math

import pytest
import torch

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.problems import build_problem, canonical_problem, default_loss, is_toy, problems

TOYS = [name for name in problems.names() if problems.get(name).meta["default_loss"] == "none"]
MLP_NAMES = [
    name for name in problems.names() if problems.get(name).meta.get("batched") == "mlp"
]  # MLPProblems
SMALL = "(width=8, depth=1, n_train=64, n_val=32)"
# The data set problems need scikit-learn (the datasets extra, part of the dev extra); skipped without it.
NEEDS_SKLEARN = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="the datasets extra")
ALL = [
    pytest.param(n, marks=NEEDS_SKLEARN) if problems.get(n).meta.get("extra") else n for n in problems.names()
]
MLPS = [pytest.param(n, marks=NEEDS_SKLEARN) if problems.get(n).meta.get("extra") else n for n in MLP_NAMES]


def _build(name: str, **kwargs):
    torch.manual_seed(0)
    if name in TOYS:
        return build_problem(name, **kwargs)
    return build_problem(
        f"{name}{SMALL if name in problems_of_mlps() else '(n_train=64, n_val=32)'}", **kwargs
    )


def problems_of_mlps() -> list[str]:
    return [n for n in problems.names() if problems.get(n).meta.get("batched") == "mlp"]


@pytest.mark.parametrize("name", ALL)
def test_every_problem_builds_and_gives_a_finite_scalar_loss_with_gradients(name):
    problem = _build(name, steps=3)
    loss = problem.loss(0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert problem.trainable
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in problem.trainable)
    assert is_toy(name) == (name in TOYS)


@pytest.mark.parametrize("name", ALL)
def test_unknown_problem_option_is_an_error_naming_it(name):
    with pytest.raises(OptbenchError, match="bogus"):
        build_problem(f"{name}(bogus=1)", steps=1)


# ------------------------------------------------------------------------------------------ toy functions


def test_quadratic_is_4x2_from_2():
    problem = _build("quadratic")
    assert problem.loss(0).item() == 16.0
    problem.loss(0).backward()
    assert problem.x.grad.item() == 16.0  # f'(x) = 8x
    assert problem.curvature == 8.0
    assert problem.coords().tolist() == [2.0]


def test_quadratic_scale_and_start():
    problem = build_problem("quadratic(scale=3, x0=-1.5)")
    assert problem.loss(0).item() == pytest.approx((3 * 1.5) ** 2)
    assert problem.curvature == 18.0


def test_rosenbrock_value_and_gradient_at_the_standard_start():
    problem = _build("rosenbrock")
    loss = problem.loss(0)
    assert loss.item() == pytest.approx(24.2, rel=1e-6)
    loss.backward()
    x, y = -1.2, 1.0
    grad = [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)]  # = [-215.6, -88]
    assert problem.x.grad.tolist() == pytest.approx(grad, rel=1e-5)


def test_rastrigin_value_at_the_start():
    problem = _build("rastrigin")
    x, y = 2.2, -1.8
    expected = 20 + (x * x - 10 * math.cos(2 * math.pi * x)) + (y * y - 10 * math.cos(2 * math.pi * y))
    assert problem.loss(0).item() == pytest.approx(expected, rel=1e-5)


def test_beale_value_at_the_start():
    problem = _build("beale")
    assert problem.loss(0).item() == pytest.approx(
        (1.5 - 1 + 1.5) ** 2 + (2.25 - 1 + 2.25) ** 2 + (2.625 - 1 + 3.375) ** 2
    )


@pytest.mark.parametrize(
    ("spec", "minimum"),
    [
        ("quadratic(x0=0.0)", [0.0]),
        ("rosenbrock(x0=(1.0, 1.0))", [1.0, 1.0]),
        ("rosenbrock(a=2.0, x0=(2.0, 4.0))", [2.0, 4.0]),
        ("rastrigin(x0=(0.0, 0.0))", [0.0, 0.0]),
        ("beale(x0=(3.0, 0.5))", [3.0, 0.5]),
    ],
)
def test_documented_minima_have_zero_loss_and_zero_gradient(spec, minimum):
    problem = build_problem(spec)
    loss = problem.loss(0)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    loss.backward()
    assert problem.x.grad.abs().max().item() == pytest.approx(0.0, abs=1e-4)
    assert problem.coords().tolist() == minimum


@pytest.mark.parametrize("name", TOYS)
def test_toy_unknown_option_lists_the_valid_options(name):
    options = [
        p for p in inspect.signature(problems.get(name).factory).parameters if p not in ("device", "rest")
    ]
    with pytest.raises(OptbenchError) as err:
        build_problem(f"{name}(bogus=1)")
    message = str(err.value)
    assert "bogus" in message
    assert all(option in message for option in options), f"valid options {options} not listed: {message}"


@pytest.mark.parametrize(
    ("spec", "bad"),
    [("quadratic(x0=(1.0, 2.0))", "x0"), ("rosenbrock(x0=1.0)", "x0"), ("beale(x0=('a', 'b'))", "x0")],
)
def test_toy_start_point_of_wrong_dimension_is_an_error(spec, bad):
    with pytest.raises(OptbenchError, match=bad):
        build_problem(spec)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"init": "normal"}, "init"), ({"loss": "mse"}, "loss"), ({"batch_size": 8}, "batch-size")],
)
def test_toy_problems_refuse_mlp_only_settings(kwargs, named):
    with pytest.raises(NotApplicable, match=named):
        build_problem("rosenbrock", **kwargs)


def test_toy_problems_refuse_param_group_settings():
    problem = build_problem("quadratic")
    assert problem.param_groups(0.1) == [{"params": problem.params, "lr": 0.1}]
    with pytest.raises(NotApplicable):
        problem.param_groups(0.1, head_lr_scale=0.5)
    with pytest.raises(NotApplicable):
        problem.param_groups(0.1, freeze=1)


def test_canonical_problem_and_default_loss():
    assert canonical_problem("rosenbrock( x0=(-1.5, 2) )") == "rosenbrock(x0=(-1.5, 2))"
    assert default_loss("quadratic") == "none"
    assert default_loss("mlp-regression") == "mse"
    assert default_loss("mlp-classification") == "cross-entropy"
    with pytest.raises(OptbenchError, match="valid: .*quadratic"):
        canonical_problem("quadratik")


# ----------------------------------------------------------------------------------------------------- MLPs


def test_mlp_architecture_follows_width_depth_activation():
    problem = build_problem("mlp-classification(width=8, depth=3, activation='tanh', classes=4)", steps=2)
    linears = [m for m in problem.model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 8), (8, 8), (8, 8), (8, 4)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in problem.model) == 3
    regression = build_problem("mlp-regression(width=5, depth=0, in_dim=3)", steps=2)
    assert [(m.in_features, m.out_features) for m in regression.model] == [(3, 1)]


@pytest.mark.parametrize("name", MLPS)
def test_mlp_unknown_activation_lists_valid_ones(name):
    with pytest.raises(OptbenchError, match="valid: .*relu.*tanh"):
        build_problem(f"{name}(activation='swishy')", steps=1)


@pytest.mark.parametrize("name", MLPS)
def test_mlp_batches_come_from_the_seed_without_replacement(name):
    a = build_problem(f"{name}{SMALL}", seed=1, steps=10, batch_size=16)
    b = build_problem(f"{name}{SMALL}", seed=1, steps=10, batch_size=16)
    c = build_problem(f"{name}{SMALL}", seed=2, steps=10, batch_size=16)
    assert a.batch_index.shape == (10, 16)
    assert torch.equal(a.batch_index, b.batch_index)
    assert not torch.equal(a.batch_index, c.batch_index)
    epoch = a.batch_index[:4].flatten()  # 64 points / 16 = 4 batches per epoch
    assert len(set(epoch.tolist())) == 64
    assert torch.equal(a.x_train, c.x_train)  # the data set depends on data_seed only


@pytest.mark.parametrize("name", MLPS)
def test_mlp_evaluate_uses_the_held_out_split_and_restores_train_mode(name):
    problem = build_problem(f"{name}{SMALL}", steps=2)
    assert problem.x_val.shape[0] == 32
    problem.model.train()
    val_loss, val_acc = problem.evaluate()
    assert problem.model.training
    assert val_loss.dim() == 0 and torch.isfinite(val_loss) and not val_loss.requires_grad
    if problem.val_labels is not None:  # classification
        assert 0.0 <= val_acc.item() <= 1.0
        expected = (problem.model(problem.x_val).argmax(1) == problem.val_labels).float().mean()
        assert val_acc.item() == pytest.approx(expected.item())
    else:
        assert val_acc is None


def test_mlp_head_lr_scale_puts_the_last_layer_in_its_own_group():
    problem = build_problem(f"mlp-regression{SMALL}", steps=2)
    (group,) = problem.param_groups(0.1)
    assert len(group["params"]) == 4 and group["lr"] == 0.1
    body, head = problem.param_groups(0.1, head_lr_scale=0.01)
    assert body["lr"] == 0.1 and head["lr"] == pytest.approx(0.001)
    last = problem.model[-1]
    assert head["params"][0] is last.weight and head["params"][1] is last.bias
    assert all(p is not last.weight and p is not last.bias for p in body["params"])


def test_mlp_freeze_turns_off_gradients_of_the_first_layers():
    problem = build_problem("mlp-regression(width=8, depth=2, n_train=64, n_val=32)", steps=2)
    (group,) = problem.param_groups(0.1, freeze=2)
    first, second, head = problem.linears
    assert not first.weight.requires_grad and not second.bias.requires_grad
    assert head.weight.requires_grad
    assert len(group["params"]) == 2
    assert len(problem.trainable) == 2
    with pytest.raises(OptbenchError, match="--freeze 3"):
        build_problem("mlp-regression(width=8, depth=2, n_train=64, n_val=32)", steps=2).param_groups(
            0.1, freeze=3
        )


def test_mlp_bad_width_is_an_error():
    with pytest.raises(OptbenchError, match="width"):
        build_problem("mlp-classification(width=0)", steps=1)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_mlp_non_positive_batch_size_is_an_error_not_the_default(batch_size):
    """batch_size=None means the default; 0 is a bad value, not "use 64"."""
    with pytest.raises(OptbenchError, match="batch size"):
        build_problem(f"mlp-classification{SMALL}", steps=1, batch_size=batch_size)


@pytest.mark.parametrize(
    "spec", ["quadratic(scale=3)", "rosenbrock(a=2.0, b=50.0)", "rastrigin(A=5.0)", "beale", "quadratic"]
)
def test_toy_functions_run_over_the_last_dimension_row_by_row_bit_for_bit(spec):
    """One formula for both engines: on a stack [C, d] each row's loss and gradient are the bits the
    same point gets alone (the reference's 0-dim loss of a [d] point)."""
    problem = build_problem(spec)
    d = problem.x.numel()
    points = torch.randn(64, d, generator=torch.Generator().manual_seed(0)) * 2
    stack = points.clone().requires_grad_(True)
    losses = problem.fn(stack)
    assert losses.shape == (64,)
    (grads,) = torch.autograd.grad(losses.sum(), stack)
    for c in range(64):
        alone = points[c].clone().requires_grad_(True)
        loss = problem.fn(alone)
        assert loss.dim() == 0 and torch.equal(loss, losses[c])
        loss.backward()
        assert torch.equal(alone.grad, grads[c])


def test_is_toy_is_the_one_predicate_and_names_unknown_problems():
    assert [name for name in problems.names() if is_toy(name)] == TOYS
    assert is_toy("rosenbrock(a=2.0)") and not is_toy("mlp-regression(width=4)")
    with pytest.raises(OptbenchError, match="quadratik"):
        is_toy("quadratik")
