"""Problems on scikit-learn's bundled data sets (registry/datasets.py): the split and the standardization
against scikit-learn's own data, real runs that learn, the batched engine's bits, the missing extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from optbench.engine.batched import run_batch, unsupported_reason
from optbench.engine.reference import run
from optbench.errors import OptbenchError
from optbench.grid import GridSpec
from optbench.grid.expand import expand
from optbench.registry import datasets
from optbench.registry.problems import build_problem, problems
from optbench.registry.validate import canonical_config
from optbench.spec import RunConfig

sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="the datasets extra")

NAMES = {"digits-mlp": "digits", "digits-cnn": "digits", "breast-cancer": "breast_cancer", "wine": "wine"}


@pytest.mark.parametrize(("data", "rows", "features", "classes"), [("digits", 1797, 64, 10), ("breast_cancer", 569, 30, 2), ("wine", 178, 13, 3)])  # fmt: skip
def test_the_split_is_stratified_deterministic_and_standardized_with_training_statistics(
    data, rows, features, classes
):
    split = datasets.load(data)
    n_val = -(-rows // 5)  # train_test_split rounds the held-out share up
    assert split.x_train.shape == (rows - n_val, features) and split.x_val.shape == (n_val, features)
    assert datasets._split_sizes(data) == {
        "in_dim": features,
        "classes": classes,
        "n_train": rows - n_val,
        "n_val": n_val,
    }
    bunch = getattr(sklearn_datasets, f"load_{data}")()
    train_counts = np.bincount(split.y_train.numpy(), minlength=classes) / len(split.y_train)
    np.testing.assert_allclose(train_counts, np.bincount(bunch.target) / rows, atol=0.01)  # stratified
    varying = split.x_train.std(0) > 0
    np.testing.assert_allclose(split.x_train.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(split.x_train[:, varying].std(0, unbiased=False).numpy(), 1, atol=1e-4)
    assert abs(split.x_val.mean().item()) < 0.2  # held-out rows use the training statistics, not their own
    again = datasets.load.__wrapped__(data)
    assert torch.equal(again.x_train, split.x_train) and torch.equal(again.y_val, split.y_val)
    other = datasets.load.__wrapped__(data, data_seed=1)
    assert not torch.equal(other.y_train, split.y_train)
    # the split is scikit-learn's stratified train_test_split with random_state = data_seed
    from sklearn.model_selection import train_test_split

    x_train, _, y_train, y_val = train_test_split(
        bunch.data, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target
    )
    assert split.y_train.tolist() == y_train.tolist() and split.y_val.tolist() == y_val.tolist()
    expected = (x_train - x_train.mean(0)) / np.where(x_train.std(0) > 0, x_train.std(0), 1)
    np.testing.assert_allclose(split.x_train.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_data_set_problem_is_listed_with_the_extra_and_builds(name):
    entry = problems.get(name)
    assert entry.meta["extra"] == "datasets" and entry.meta["default_loss"] == "cross-entropy"
    torch.manual_seed(0)
    problem = build_problem(f"{name}(n_train=64, n_val=32)", steps=2, batch_size=16)
    loss = problem.loss(0)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in problem.trainable)
    val_loss, val_acc = problem.evaluate()
    assert torch.isfinite(val_loss) and 0 <= val_acc.item() <= 1


@pytest.mark.slow
@pytest.mark.parametrize(("problem", "lr", "accuracy"), [("digits-mlp", 0.003, 0.9), ("digits-cnn", 0.003, 0.85), ("breast-cancer", 0.01, 0.9), ("wine", 0.01, 0.9)])  # fmt: skip
def test_adam_learns_each_data_set_well_above_chance(problem, lr, accuracy):
    result = run(canonical_config(RunConfig(problem=problem, optimizer="adam", lr=lr, steps=150)))
    assert result.summary.status == "ok"
    assert result.summary.final_val_acc >= accuracy, result.summary.final_val_acc
    assert result.summary.final_loss < result.trace["loss"][0] / 3


def test_the_cnn_is_conv_layers_and_the_init_reaches_them():
    problem = build_problem("digits-cnn(channels=4, n_train=32)", init="constant(val=0.5)", steps=1)
    convs = [m for m in problem.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4), (4, 8)]
    assert all(torch.all(c.weight == 0.5) and torch.all(c.bias == 0) for c in convs)
    assert problem.batches.x.shape[1:] == (1, 8, 8)
    assert unsupported_reason(canonical_config(RunConfig(problem="digits-cnn"))).startswith(
        "problem 'digits-cnn' has no batched form"
    )


def test_the_data_set_mlps_run_batched_with_the_reference_engines_bits():
    cfgs = expand(GridSpec(problem=("digits-mlp(n_train=256, width=16)", "wine"), optimizer=("sgd", "adam"),
                           lr=(0.01, 0.1), momentum=(0.0, 0.9), steps=(12,)))  # fmt: skip
    assert all(unsupported_reason(c) is None for c in cfgs)
    batched = run_batch(cfgs, "exact")
    assert {r.summary.engine for r in batched} == {"batched"}
    for b, cfg in zip(batched, cfgs, strict=True):
        reference = run(cfg)
        for column in ("loss", "grad_norm", "update_norm", "param_norm", "val_loss", "val_acc"):
            assert np.array_equal(b.trace[column], reference.trace[column], equal_nan=True), (cfg, column)


def test_options_are_checked_as_one_line():
    with pytest.raises(OptbenchError, match="val_fraction must be"):
        build_problem("wine(val_fraction=2.0)", steps=1)
    with pytest.raises(OptbenchError, match="n_train must be a whole number"):
        build_problem("wine(n_train=0)", steps=1)
    with pytest.raises(OptbenchError, match="channels must be"):
        build_problem("digits-cnn(channels=0)", steps=1)


def test_without_scikit_learn_the_problems_are_listed_and_running_one_names_the_extra(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.setattr(datasets, "has_sklearn", lambda: False)
    datasets.load.cache_clear()
    try:
        listed = cli("list", "problems")
        assert listed.exit_code == 0
        lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
        for name in NAMES:
            assert lines[name].endswith("[needs pip install 'optbench[datasets]']")
        assert "needs" not in lines["mlp-classification"]
        refused = cli("lr-find", "--problem", "digits-mlp", "--steps", "20", "--out", "unused")
        assert refused.exit_code == 2
        assert refused.stderr.strip() == (
            "error: problem 'digits-mlp' cannot be built: data set 'digits' needs scikit-learn: "
            "pip install 'optbench[datasets]' (tried with every init, loss and batch size given; nothing was run)"
        )
    finally:
        datasets.load.cache_clear()
