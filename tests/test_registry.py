"""The Registry type and the five registries: one name everywhere (CLI value, Parquet value, plot label)."""

from __future__ import annotations

import inspect

import pytest

from optbench.errors import OptbenchError
from optbench.registry import Registry, by_kind
from optbench.spec import parse_spec

KINDS = ("problems", "optimizers", "schedulers", "inits", "losses")


def _all_entries():
    return [(kind, name) for kind in KINDS for name in by_kind(kind).names()]


# ----------------------------------------------------------------------------------------- the type


@pytest.fixture
def colors():
    registry = Registry("color")
    registry.add("red", lambda: "r", "the colour red", aliases=("rouge",), warm=True)

    @registry.register("blue", "the colour blue")
    def blue():
        return "b"

    return registry


def test_names_are_sorted_and_entries_keep_meta(colors):
    colors.add("amber", lambda: "a", "amber")
    assert colors.names() == ["amber", "blue", "red"]
    assert [e.name for e in colors.entries()] == ["amber", "blue", "red"]
    assert colors.get("red").meta == {"warm": True}
    assert colors.get("blue").factory() == "b"
    assert colors.get("blue").summary == "the colour blue"


def test_aliases_resolve_to_the_canonical_name(colors):
    assert colors.canonical_name("rouge") == "red"
    assert colors.get("rouge").name == "red"
    assert colors.aliases_of("red") == ["rouge"]
    assert colors.aliases_of("blue") == []
    assert "rouge" in colors and "red" in colors and "green" not in colors
    assert "rouge" not in colors.names()


def test_unknown_name_lists_the_valid_ones(colors):
    with pytest.raises(OptbenchError) as err:
        colors.get("green")
    assert str(err.value) == "unknown color 'green'; valid: blue, red"


@pytest.mark.parametrize("name", ["red", "rouge"])
def test_registering_a_name_twice_is_refused(colors, name):
    with pytest.raises(ValueError, match="registered twice"):
        colors.add(name, lambda: None, "again")


def test_by_kind_rejects_an_unknown_kind():
    with pytest.raises(OptbenchError, match="bogus"):
        by_kind("bogus")


# ------------------------------------------------------------------------------------ the registries


@pytest.mark.parametrize("kind", KINDS)
def test_registry_is_not_empty_and_names_are_sorted(kind):
    names = by_kind(kind).names()
    assert names, kind
    assert names == sorted(names)


@pytest.mark.parametrize(("kind", "name"), _all_entries())
def test_every_name_is_a_valid_spec_name_with_a_one_line_summary(kind, name):
    registry = by_kind(kind)
    assert parse_spec(name).name == name  # usable verbatim on the CLI and in spec strings
    assert name == name.lower() and " " not in name
    summary = registry.get(name).summary
    assert summary.strip() and "\n" not in summary


@pytest.mark.parametrize("kind", KINDS)
def test_every_alias_points_to_a_registered_entry(kind):
    registry = by_kind(kind)
    for alias, target in registry._aliases.items():
        assert target in registry.names(), (alias, target)
        assert alias not in registry.names()


def test_scheduler_aliases():
    schedulers = by_kind("schedulers")
    expected = {
        "step": "steplr",
        "cosine": "cosineannealinglr",
        "onecycle": "onecyclelr",
        "plateau": "reducelronplateau",
        "exponential": "exponentiallr",
        "cyclic": "cycliclr",
    }
    assert {alias: schedulers.canonical_name(alias) for alias in expected} == expected


def test_every_torch_optimizer_is_registered_under_its_lowercase_name():
    import torch

    torch_names = {
        name.lower()
        for name, cls in vars(torch.optim).items()
        if inspect.isclass(cls)
        and issubclass(cls, torch.optim.Optimizer)
        and cls is not torch.optim.Optimizer
    }
    assert {"sgd", "adam", "adamw", "lbfgs", "sparseadam"} <= torch_names
    assert set(by_kind("optimizers").names()) == torch_names | {"sgd-l1l2"}


def test_every_torch_scheduler_is_registered_under_its_lowercase_name():
    from torch.optim import lr_scheduler

    torch_names = {
        name.lower()
        for name, cls in vars(lr_scheduler).items()
        if inspect.isclass(cls)
        and not name.startswith("_")
        and cls is not lr_scheduler.LRScheduler
        and (issubclass(cls, lr_scheduler.LRScheduler) or cls is lr_scheduler.ReduceLROnPlateau)
    }
    assert {"steplr", "onecyclelr", "reducelronplateau", "cosineannealingwarmrestarts"} <= torch_names
    assert set(by_kind("schedulers").names()) == torch_names | {"none", "step-halving", "warmup-cosine"}


def test_inits_include_the_ten_classic_schemes_and_default():
    classic = {
        "xavier_uniform",
        "xavier_normal",
        "kaiming_uniform",
        "kaiming_normal",
        "uniform",
        "normal",
        "constant",
        "orthogonal",
        "eye",
        "sparse",
    }
    assert classic | {"default"} <= set(by_kind("inits").names())
    assert "dirac" not in by_kind("inits").names()  # dirac_ fills conv kernels, not weight matrices


def test_losses_and_problems_registered():
    assert {"mse", "l1", "smooth-l1", "huber", "cross-entropy", "bce-with-logits", "dice", "focal"} <= set(
        by_kind("losses").names()
    )
    assert {"quadratic", "rosenbrock", "rastrigin", "beale", "mlp-regression", "mlp-classification"} <= set(
        by_kind("problems").names()
    )
