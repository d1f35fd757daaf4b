"""``optbench.lr_find`` on the user's own model (experiments/lrfind_model.py): the schedule is torch's
ExponentialLR, the analysis is bench lr-find's, and model, optimizer and RNG come back bit for bit, also when
the test raises or diverges."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import optbench
from optbench.errors import OptbenchError
from optbench.experiments import lrfind

X = torch.randn(256, 6, generator=torch.Generator().manual_seed(0))
Y = (X[:, :3].sum(1) > 0).long()


def _setup(optimizer=torch.optim.Adam, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    opt = optimizer(model.parameters(), lr=1e-3, **kw)
    loader = DataLoader(TensorDataset(X, Y), batch_size=32, shuffle=True)
    for x, y in list(loader)[:3]:  # a model mid-training: optimizer state, BatchNorm statistics, gradients
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return model, opt, loader


def _snapshot(model, opt):
    return (
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(opt.state_dict()),
        [p.grad.clone() for p in model.parameters()],
        [m.training for m in model.modules()],
        torch.get_rng_state(),
        dict(vars(opt)).keys(),
    )


def _assert_restored(model, opt, before):
    state, opt_state, grads, modes, rng, attributes = before
    now = model.state_dict()
    assert state.keys() == now.keys() and all(
        torch.equal(state[k], now[k]) for k in state
    )  # incl. running stats
    assert "1.running_mean" in state and state["1.num_batches_tracked"].item() == 3
    after = opt.state_dict()
    assert after["param_groups"] == opt_state["param_groups"]  # lr back, no initial_lr left
    for i, values in opt_state["state"].items():
        assert all(torch.equal(values[k], after["state"][i][k]) for k in values)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert dict(vars(opt)).keys() == attributes  # the scheduler's step wrapper is gone


def test_the_range_test_follows_exponentiallr_and_restores_everything_bit_for_bit():
    model, opt, loader = _setup()
    before = _snapshot(model, opt)
    result = optbench.lr_find(model, opt, nn.CrossEntropyLoss(), loader, start_lr=1e-5, end_lr=1.0, steps=40)
    _assert_restored(model, opt, before)
    gamma = (1.0 / 1e-5) ** (1 / 39)
    np.testing.assert_allclose(result.lrs, 1e-5 * gamma ** np.arange(len(result.lrs)), rtol=1e-12)
    assert result.analysis.stopped_because == "end of schedule" and result.lrs[-1] == pytest.approx(1.0)
    again = lrfind.analyse(result.lrs, result.losses)  # bench lr-find's own analysis of the same numbers
    assert again.to_dict() == result.analysis.to_dict() and result.suggested_lr == again.valley_lr
    same = optbench.lr_find(model, opt, nn.CrossEntropyLoss(), loader, start_lr=1e-5, end_lr=1.0, steps=40)
    assert np.array_equal(same.losses, result.losses)  # the seed makes it repeatable


def test_a_diverging_test_stops_where_the_analysis_stops_and_still_restores():
    model, opt, loader = _setup(torch.optim.SGD, momentum=0.9)
    before = _snapshot(model, opt)
    result = optbench.lr_find(model, opt, nn.CrossEntropyLoss(), loader, start_lr=1e-3, end_lr=1e4, steps=100)
    _assert_restored(model, opt, before)
    stop = result.analysis.stop
    assert stop < 99 and len(result.lrs) == stop + 1  # the step that tripped the rule is the last one taken
    full = lrfind.analyse(np.append(result.lrs, [1e9] * 5), np.append(result.losses, [np.nan] * 5))
    assert full.to_dict() == result.analysis.to_dict()  # more steps would not change the suggestions


def test_an_exception_mid_test_restores_and_propagates():
    model, opt, loader = _setup()
    before = _snapshot(model, opt)
    calls = []

    def breaking(out, y):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(out, y)

    with pytest.raises(RuntimeError, match="boom"):
        optbench.lr_find(model, opt, breaking, loader, steps=20)
    _assert_restored(model, opt, before)


def test_the_figure_is_bench_lr_finds(tmp_path):
    model, opt, loader = _setup()
    result = optbench.lr_find(model, opt, nn.CrossEntropyLoss(), loader, steps=30, figure=tmp_path / "f.svg")
    assert result.figures == [tmp_path / "f.svg"] and (tmp_path / "f.svg").stat().st_size > 0
    assert result.title == "Sequential, Adam: learning-rate range test"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_lr": 1.0, "end_lr": 0.1}, "must be larger than"),
        ({"steps": 5}, "--steps must be >= 10"),
        ({"beta": 1.0}, "beta must be in"),
        ({"loader": iter([(X, Y)])}, "re-iterable"),
        ({"loader": [X]}, "a pair"),
        ({"loader": []}, "yielded no batch"),
    ],
)
def test_bad_arguments_are_one_line(kwargs, message):
    model, opt, loader = _setup()
    args = {"loader": loader, **kwargs}
    with pytest.raises(OptbenchError, match=message):
        optbench.lr_find(model, opt, nn.CrossEntropyLoss(), **args)
