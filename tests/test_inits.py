"""Init registry: every scheme applies to an MLP; gains derived from the activation (the numbers of
REFERENCE_VECTORS.md); a toy function takes only ``default``. (The init *report*: test_initprobe.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from optbench.engine.reference import run
from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.inits import apply_init, canonical_init, init_weight, inits
from optbench.registry.problems import build_problem, is_toy, problems
from optbench.spec import RunConfig

MLP = "mlp-classification(width=16, depth=2, activation='tanh', n_train=64, n_val=32)"


def _first_layer(init: str, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return build_problem(MLP, init=init, steps=1).linears[0]


@pytest.mark.parametrize("name", inits.names())
def test_every_init_applies_to_an_mlp(name):
    torch.manual_seed(0)
    mlp = build_problem(MLP, init=name, steps=1)
    loss = mlp.loss(0)
    assert torch.isfinite(loss)
    default = _first_layer("default")
    if name == "default":
        assert torch.equal(mlp.linears[0].weight, default.weight)
        assert (mlp.linears[0].bias != 0).any()  # PyTorch's own bias init is kept
    else:
        assert not torch.equal(mlp.linears[0].weight, default.weight), "the scheme was not applied"
        assert all((layer.bias == 0).all() for layer in mlp.linears)  # biases zeroed under a scheme


def test_every_init_runs_in_the_engine():
    for name in inits.names():
        result = run(RunConfig(problem=MLP, init=name, lr=0.01, steps=2))
        assert result.summary.status == "ok", (name, result.summary.reason)
        assert result.config.init == name


# ------------------------------------------------------------------------------------------------- gains

FAN_IN, FAN_OUT = 512, 256
# calculate_gain's values (REFERENCE_VECTORS.md)
TANH, RELU, SELU, LEAKY = 5 / 3, math.sqrt(2), 3 / 4, math.sqrt(2 / (1 + 0.01**2))
XAVIER = math.sqrt(2 / (FAN_IN + FAN_OUT))
KAIMING = 1 / math.sqrt(FAN_IN)


@pytest.mark.parametrize(
    ("spec", "activation", "std"),
    [
        ("xavier_normal", "tanh", TANH * XAVIER),
        ("xavier_normal", "sigmoid", 1.0 * XAVIER),
        ("xavier_normal", "selu", SELU * XAVIER),
        ("xavier_normal", "gelu", RELU * XAVIER),  # no calculate_gain entry: the ReLU gain, as documented
        ("xavier_uniform", "relu", RELU * XAVIER),
        ("xavier_normal(gain=1.0)", "tanh", XAVIER),  # a gain in the spec wins
        ("kaiming_normal", "relu", RELU * KAIMING),  # Var(W) = 2/n
        ("kaiming_normal", "leaky_relu", LEAKY * KAIMING),  # Var(W) = 2/((1 + a^2) n)
        ("kaiming_normal", "tanh", TANH * KAIMING),
        ("kaiming_normal", "none", KAIMING),  # Var(W) = 1/n keeps a linear stack stable
        ("kaiming_uniform", "relu", RELU * KAIMING),
        ("kaiming_normal(nonlinearity='linear')", "relu", KAIMING),
        ("normal(std=0.0625)", "relu", 0.0625),  # 1/sqrt(256)
    ],
)
def test_weight_std_follows_the_gain_of_the_activation(spec, activation, std):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(FAN_IN, FAN_OUT))
    apply_init(model, spec, activation)
    weight = model[0].weight
    assert weight.std().item() == pytest.approx(std, rel=0.03)
    assert weight.mean().item() == pytest.approx(0.0, abs=0.05 * std)
    if spec.startswith("kaiming_uniform"):
        assert weight.abs().max().item() <= math.sqrt(3) * std * (1 + 1e-6)


def test_orthogonal_gain_from_the_activation():
    torch.manual_seed(0)
    weight = torch.empty(FAN_OUT, FAN_IN)
    init_weight(weight, "orthogonal", "relu")
    torch.testing.assert_close(weight @ weight.T, 2.0 * torch.eye(FAN_OUT), atol=1e-4, rtol=0)


def test_schemes_with_required_arguments_get_documented_defaults():
    weight = torch.empty(20, 10)
    init_weight(weight, "constant")
    assert (weight == 0.01).all()
    init_weight(weight, "constant(val=0.5)")
    assert (weight == 0.5).all()
    init_weight(weight, "sparse")
    assert ((weight == 0).sum(0) == math.ceil(0.1 * 20)).all()  # sparsity 0.1 of every column
    init_weight(weight, "eye")
    assert torch.equal(weight, torch.eye(20, 10))


@pytest.mark.parametrize("name", ["eye", "sparse"])
def test_matrix_only_schemes_refuse_1d_tensors(name):
    with pytest.raises(NotApplicable, match="2-D"):
        init_weight(torch.empty(5), name)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("normal(bogus=1)", "mean, std"), ("default(std=1)", "default"), ("eye(gain=2)", "(none)")],
)
def test_bad_init_arguments_are_errors_naming_them(spec, needle):
    with pytest.raises(OptbenchError) as err:
        init_weight(torch.empty(4, 4), spec)
    assert needle in str(err.value)


def test_unknown_init_lists_valid_ones():
    with pytest.raises(OptbenchError, match="valid: .*kaiming_normal.*xavier_uniform"):
        canonical_init("he_normal")
    assert canonical_init("normal( std = 0.0625 )") == "normal(std=0.0625)"


# --------------------------------------------------------------------------------------- toy problems


@pytest.mark.parametrize("problem", [name for name in problems.names() if is_toy(name)])
def test_toy_problem_with_a_non_default_init_is_an_error(problem):
    with pytest.raises(NotApplicable, match="init"):
        build_problem(problem, init="xavier_normal")
    result = run(RunConfig(problem=problem, init="normal(std=0.1)", steps=3))
    assert result.summary.status == "invalid"
    assert "init" in result.summary.reason and "default" in result.summary.reason
    build_problem(problem, init="default")  # the default is accepted
