"""The user's own problem (registry/modelproblem.py): a ModelProblem runs like a built-in, its batches and init
come from the seed, and naming one by import path obeys the opt-in."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import optbench
from optbench.engine.batched import unsupported_reason
from optbench.engine.reference import run
from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.imports import ENV_VAR
from optbench.registry.modelproblem import ModelProblem, register_problem, travels
from optbench.registry.problems import build_problem, problems
from optbench.registry.validate import canonical_config, check_buildable
from optbench.spec import RunConfig

X = torch.randn(96, 4, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] + X[:, 1] > 0).long()


def net(hidden: int = 8) -> nn.Module:
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def tensor_problem(hidden=8):
    """Tensors, a held-out pair, accuracy."""
    return ModelProblem(
        model=lambda: net(hidden),
        train=(X, Y),
        loss_fn=nn.CrossEntropyLoss(),
        val=(X[:32], Y[:32]),
        metric="accuracy",
    )


def loader_problem(hidden=8, dropout=0.2):
    """A shuffling DataLoader and a model with BatchNorm and dropout (both draw on torch's RNG)."""
    return ModelProblem(
        model=lambda: nn.Sequential(
            nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 2)
        ),
        train=DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True),
        loss_fn=nn.CrossEntropyLoss(),
        val=DataLoader(TensorDataset(X[:40], Y[:40]), batch_size=16),
        metric="accuracy",
    )


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """Two user problems for the test; the registry as it was afterwards (other modules list problems)."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(problems, "_entries", dict(problems._entries))
    register_problem("test-tensors", tensor_problem)
    register_problem("test-loader", loader_problem)


def _config(problem: str, **kw) -> RunConfig:
    return canonical_config(RunConfig(problem=problem, **{"lr": 0.1, "steps": 12, **kw}))


def test_a_registered_problem_runs_with_its_own_loss_and_held_out_accuracy():
    cfg = _config("test-tensors(hidden=6)")
    assert cfg.loss == "custom" and cfg.problem == "test-tensors(hidden=6)"
    result = run(cfg)
    assert result.summary.status == "ok", result.summary.reason
    assert 0 <= result.summary.final_val_acc <= 1
    assert np.isfinite(result.trace["val_loss"][::10]).all()  # step 0, 10 and the last are evaluated
    assert unsupported_reason(cfg) == (
        "problem 'test-tensors' has no batched form (batched: the toy functions, "
        "breast-cancer, digits-mlp, mlp-classification, mlp-regression, wine)"
    )


def test_tensor_batches_are_the_seeds_minibatches_and_the_init_is_the_seeds():
    problem = build_problem("test-tensors", seed=3, steps=5, batch_size=32)
    torch.manual_seed(3)
    expected = net(8)
    assert all(torch.equal(a, b) for a, b in zip(problem.params, expected.parameters(), strict=True))
    assert problem.size == sum(p.numel() for p in expected.parameters()) == 4 * 8 + 8 + 8 * 2 + 2
    index = problem.batches.index
    assert (
        index.shape == (5, 32) and len(set(index[:3].flatten().tolist())) == 96
    )  # an epoch without replacement
    by_hand = nn.functional.cross_entropy(expected(X[index[4]]), Y[index[4]])
    assert torch.equal(problem.loss(4), by_hand)


def test_the_init_axis_applies_to_the_users_linear_and_conv_layers():
    default = build_problem("test-tensors", seed=0, steps=1)
    constant = build_problem("test-tensors", init="constant(val=0.25)", seed=0, steps=1)
    weights = [p for p in constant.params if p.dim() == 2]
    assert all(torch.all(w == 0.25) for w in weights)
    assert all(torch.all(b == 0) for b in constant.params if b.dim() == 1)  # biases zeroed by a scheme
    assert not torch.equal(default.params[0], constant.params[0])


def test_loader_runs_are_deterministic_per_seed_and_differ_between_seeds():
    a, b = run(_config("test-loader", seed=1)), run(_config("test-loader", seed=1))
    c = run(_config("test-loader", seed=2))
    assert a.summary.status == "ok", a.summary.reason
    assert np.array_equal(a.trace["loss"], b.trace["loss"])
    assert np.array_equal(a.trace["val_loss"], b.trace["val_loss"], equal_nan=True)
    assert not np.array_equal(a.trace["loss"], c.trace["loss"])


def test_a_loaders_own_generator_is_seeded_per_epoch_and_left_as_it_was():
    generator = torch.Generator().manual_seed(123)
    state = generator.get_state()

    def with_generator():
        recipe = loader_problem()
        recipe.train = DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True, generator=generator)
        return recipe

    register_problem("test-generator", with_generator)
    first, second = run(_config("test-generator")), run(_config("test-generator"))
    assert np.array_equal(first.trace["loss"], second.trace["loss"])
    assert torch.equal(generator.get_state(), state)


def test_lbfgs_evaluates_the_same_batch_for_the_same_step():
    problem = build_problem("test-loader", seed=0, steps=3)
    problem.module.eval()  # dropout off: the same batch gives the same loss
    first = problem.loss(0)
    assert torch.equal(problem.loss(0), first)
    assert not torch.equal(problem.loss(1), first)
    with pytest.raises(OptbenchError, match="taken in order"):
        problem.loss(0)
    result = run(_config("test-loader", optimizer="lbfgs", lr=0.5, steps=4))
    assert result.summary.status == "ok", result.summary.reason


def test_validation_over_batches_is_the_row_weighted_mean():
    problem = build_problem("test-loader", seed=0, steps=1)
    val_loss, val_acc = problem.evaluate()
    assert problem.module.training  # restored
    problem.module.eval()
    with torch.no_grad():
        out = problem.module(X[:40])
    assert val_loss.item() == pytest.approx(nn.functional.cross_entropy(out, Y[:40]).item(), rel=1e-6)
    assert val_acc.item() == pytest.approx((out.argmax(1) == Y[:40]).float().mean().item(), rel=1e-6)


def test_a_registry_loss_replaces_loss_fn_and_head_scale_is_not_applicable():
    recipe = tensor_problem()
    recipe.classes = 2

    register_problem("test-classes", lambda: recipe)
    problem = build_problem("test-classes", loss="mse", steps=2)
    assert isinstance(problem.criterion, nn.MSELoss)
    assert problem.loss(0).dim() == 0  # one-hot targets against [rows, 2] outputs
    with pytest.raises(NotApplicable, match="built-in MLP"):
        problem.param_groups(0.1, head_lr_scale=2.0)


def test_context_keywords_reach_a_factory_that_declares_them():
    seen = {}

    def factory(width=4, *, seed, steps, batch_size, device):
        seen.update(width=width, seed=seed, steps=steps, batch_size=batch_size, device=device)
        return tensor_problem(width)

    register_problem("test-context", factory)
    build_problem("test-context(width=5)", seed=7, steps=3, batch_size=8)
    assert seen == {"width": 5, "seed": 7, "steps": 3, "batch_size": 8, "device": "cpu"}
    with pytest.raises(OptbenchError, match="has no argument 'seed'; valid: width"):
        _config("test-context(seed=1)")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ModelProblem(model=net(), train=(X, Y), loss_fn=nn.CrossEntropyLoss()), "takes a function"),
        (lambda: ModelProblem(model=net, train=iter([(X, Y)]), loss_fn=nn.CrossEntropyLoss()), "re-iterable"),
        (
            lambda: ModelProblem(model=net, train=(X, Y), loss_fn=nn.CrossEntropyLoss(), metric="accuracy"),
            "needs val",
        ),
        (lambda: net(), "returned Sequential, not a ModelProblem"),
        (lambda: ModelProblem(model=lambda: 3, train=(X, Y), loss_fn=nn.CrossEntropyLoss()), "not a Module"),
    ],
)
def test_a_bad_factory_is_one_line(factory, message):
    register_problem("test-bad", factory)
    with pytest.raises(OptbenchError, match=message):
        build_problem("test-bad", steps=1)


def test_names_are_checked_and_built_ins_are_never_replaced():
    with pytest.raises(OptbenchError, match="is built in"):
        register_problem("quadratic", tensor_problem)
    with pytest.raises(OptbenchError, match="no ':'"):
        register_problem("a:b", tensor_problem)
    with pytest.raises(OptbenchError, match="has no argument 'hiden'; valid: hidden"):
        _config("test-tensors(hiden=3)")
    register_problem("test-tensors", loader_problem)  # again: replaces the user's own, checks forgotten
    assert problems.get("test-tensors").factory.factory is loader_problem
    with pytest.raises(OptbenchError, match="has no argument 'hidden2'; valid: dropout, hidden"):
        _config("test-tensors(hidden2=3)")


def test_a_stand_in_build_refuses_a_problem_no_cell_can_run():
    register_problem(
        "test-empty", lambda: ModelProblem(model=nn.Sequential, train=(X, Y), loss_fn=nn.MSELoss())
    )
    with pytest.raises(OptbenchError, match="problem 'test-empty' cannot be built: .*no parameters"):
        check_buildable([_config("test-empty")])


def test_factories_that_workers_can_import_travel_and_lambdas_do_not():
    assert travels(tensor_problem)
    assert not travels(lambda: tensor_problem())


# ---------------------------------------------------------------------------------------- by import path

USER_MODULE = """
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import optbench

def classifier(hidden=8):
    '''Four features, two classes, a DataLoader.'''
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return optbench.ModelProblem(
        model=lambda: nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2)),
        train=DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True),
        loss_fn=nn.CrossEntropyLoss(),
        val=(x[:64], y[:64]),
        metric="accuracy",
    )

NOT_A_FACTORY = 3
"""


@pytest.fixture
def userpkg(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "byop_userpkg").mkdir(parents=True)
    (site / "byop_userpkg" / "__init__.py").write_text("")
    (site / "byop_userpkg" / "problems.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(site))  # spawned workers get the parent's sys.path
    monkeypatch.chdir(tmp_path)
    return "byop_userpkg"


def test_an_import_path_problem_needs_the_opt_in(userpkg):
    import sys

    with pytest.raises(OptbenchError, match="--allow-imports byop_userpkg"):
        _config("byop_userpkg.problems:classifier(hidden=4)")
    assert "byop_userpkg.problems" not in sys.modules
    optbench.allow_imports(userpkg)
    cfg = _config("byop_userpkg.problems:classifier(hidden=4)")
    assert cfg.problem == "byop_userpkg.problems:classifier(hidden=4)" and cfg.loss == "custom"
    assert run(cfg).summary.status == "ok"
    with pytest.raises(OptbenchError, match="not a class or function"):
        _config("byop_userpkg.problems:NOT_A_FACTORY")


@pytest.mark.slow
def test_the_cli_runs_an_import_path_problem_through_a_grid_and_lr_find(cli, userpkg, tmp_path):
    problem = "byop_userpkg.problems:classifier(hidden=4)"
    result = cli("grid", "--problem", problem, "--optimizer", "sgd,adam", "--lr", "0.01,0.1", "--steps", "10",
                 "--workers", "2", "--no-progress", "--allow-imports", userpkg, "--out", tmp_path / "g")  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    runs = pd.read_parquet(tmp_path / "g" / "runs.parquet")
    assert len(runs) == 4 and set(runs["status"]) == {"ok"} and set(runs["engine"]) == {"reference"}
    assert set(runs["problem"]) == {problem}
    found = cli("lr-find", "--problem", problem, "--optimizer", "sgd", "--steps", "30", "--allow-imports", userpkg,
                "--out", tmp_path / "f")  # fmt: skip
    assert found.exit_code == 0, (found.output, found.exception)
    assert (tmp_path / "f" / "lr_find.png").is_file()
    manifest = optbench.load(tmp_path / "f").manifest
    assert manifest["experiment"] == "lr-find" and manifest["suggested_lr"] > 0
    refused = cli("lr-find", "--problem", problem, "--out", tmp_path / "r")
    assert refused.exit_code == 2 and "--allow-imports byop_userpkg" in refused.stderr


@pytest.mark.slow
def test_a_registered_problem_travels_to_two_workers_and_matches_one_process(tmp_path):
    grid = {"problem": ["test-loader"], "optimizer": ["sgd", "adam"], "lr": [0.01, 0.1], "steps": 8}
    two = optbench.run_grid(grid, out=tmp_path / "two", workers=2)
    one = optbench.run_grid(grid, out=None)
    assert set(two["status"]) == {"ok"}, two["reason"].tolist()
    assert (
        two.sort_values("run_id")["final_loss"].tolist()
        == one.runs.sort_values("run_id")["final_loss"].tolist()
    )


@pytest.mark.slow
def test_a_lambda_factory_keeps_the_grid_in_this_process_with_a_note(tmp_path):
    register_problem("test-lambda", lambda: tensor_problem(4))
    notes = []
    runs = optbench.run_grid({"problem": ["test-lambda"], "lr": [0.01, 0.1], "steps": 5}, out=tmp_path / "g",
                             workers=2, say=notes.append)  # fmt: skip
    assert set(runs["status"]) == {"ok"}
    assert notes == [
        "note: problem 'test-lambda' was registered with a factory that worker processes cannot import (a lambda, "
        "a nested function or one defined interactively): the grid runs in this process"
    ]


# ------------------------------------------------------------------------------------------------ sharpness


def test_sharpness_of_a_users_model_is_the_hessians_top_eigenvalue_and_changes_nothing_else():
    """On tensor data: the fixed batch's Hessian, dense, agrees with the tracked value at step 0; a run with
    tracking has the loss and parameters of one without, bit for bit."""
    from torch.func import functional_call

    cfg = _config("test-tensors(hidden=3)", optimizer="sgd", steps=6)
    tracked = run(_config("test-tensors(hidden=3)", optimizer="sgd", steps=6, sharpness_every=5))
    plain = run(cfg)
    assert tracked.summary.status == "ok", tracked.summary.reason
    np.testing.assert_array_equal(tracked.trace["loss"], plain.trace["loss"])
    assert np.isfinite(tracked.trace["sharpness"][[0, 5]]).all()
    assert np.isnan(tracked.trace["sharpness"][1:5]).all()

    torch.manual_seed(0)
    problem = build_problem("test-tensors(hidden=3)", loss="custom", seed=0, steps=6)
    names = [n for n, _ in problem.module.named_parameters()]
    shapes = [p.shape for p in problem.module.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in problem.module.parameters()])

    def loss_of(vector):
        parts, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            parts[name] = vector[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return nn.CrossEntropyLoss()(functional_call(problem.module, parts, (X,)), Y)

    dense = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))[-1].item()
    assert tracked.trace["sharpness"][0] == pytest.approx(dense, rel=1e-3)


def test_sharpness_on_a_loader_with_batchnorm_and_dropout_leaves_the_run_as_it_was():
    """Measured in eval() mode on batch 0, kept for step 0: the same batches, buffers and random draws."""
    cfg = _config("test-loader", steps=8)
    tracked = run(_config("test-loader", steps=8, sharpness_every=4))
    plain = run(cfg)
    assert tracked.summary.status == "ok", tracked.summary.reason
    np.testing.assert_array_equal(tracked.trace["loss"], plain.trace["loss"])
    np.testing.assert_array_equal(tracked.trace["val_loss"], plain.trace["val_loss"])
    assert np.isfinite(tracked.trace["sharpness"][[0, 4]]).all() and tracked.trace["sharpness"][0] > 0
