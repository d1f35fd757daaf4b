"""The batched engine on the batch's device: nothing it makes lands on torch's default device, and on CUDA
it agrees with the reference engine run there.

CPU: under ``with torch.device("meta")`` every tensor made without an explicit device is a meta tensor,
which has no data: mixing one with the batch's CPU tensors, or reading it on the host, raises, the batch
falls back to the reference engine, and its results say so (``engine == "reference"`` and a "batched
engine failed" warning). The problems are built outside that context: ``problems.build_problem`` makes its
``nn.Linear`` layers on the default device and then moves them with ``.to(device)``, which cannot copy out
of a meta tensor. That is the reference engine's own code, which runs it on CUDA itself.

CUDA (skipped without one): the same cells through ``run_batch`` and ``engine.run`` on the GPU.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from optbench import engine
from optbench.engine import batched
from optbench.engine.batched import cells, kernels
from optbench.registry.validate import canonical_config
from optbench.spec import RunConfig

CLASSIFICATION = "mlp-classification(width=16, depth=2, n_train=128, n_val=64, eval_every=5)"
REGRESSION = "mlp-regression(width=8, activation='tanh', n_train=64, n_val=32, eval_every=4)"
# 13 x 7 activations per cell: sigmoid runs per cell, and each cell's slice of the stack starts off the
# allocator's 64-byte boundary (the per-cell products copy such operands, ``kernels._cell``)
TAILS = "mlp-regression(width=13, depth=1, activation='sigmoid', n_train=64, n_val=33)"
STEPS = 50  # > engine.CHECK_EVERY: diverged cells leave the batch mid-run (compaction)


def _toy_cells(device: str) -> list[RunConfig]:
    """Every toy problem; sgd with and without momentum, adam, rmsprop; schedulers; two quadratic cells that
    diverge (lr 0.4: |1 - 8 lr| > 1; lr 1e30: inf at once) beside one that does not."""
    return [
        canonical_config(
            RunConfig(problem=p, optimizer=o, lr=lr, momentum=m, scheduler=s, steps=STEPS, device=device)
        )
        for p, o, lr, m, s in [
            ("quadratic", "sgd", 0.1, None, "none"),
            ("quadratic", "sgd", 0.4, None, "none"),
            ("quadratic", "sgd", 1e30, None, "none"),
            ("rosenbrock", "sgd", 1e-3, 0.9, "cosine"),
            ("rosenbrock", "sgd", 4e-4, 0.0, "onecyclelr"),
            ("beale", "adam", 0.01, None, "none"),
            ("beale", "adam", 0.02, 0.8, "onecyclelr"),
            ("rastrigin", "rmsprop", 1e-3, 0.5, "steplr(step_size=7, gamma=0.5)"),
        ]
    ]


def _mlp_cells(device: str) -> list[RunConfig]:
    """Classification (cross-entropy: the log-softmax probe) and regression (a 1-column head: products per
    cell; tanh: the activation probe; sigmoid: per cell), sgd with momentum, adam, rmsprop, a scheduler, and
    a regression cell that diverges (lr 1e6)."""
    cells = [
        RunConfig(problem=CLASSIFICATION, optimizer="sgd", lr=0.05, momentum=0.9, seed=0, batch_size=32),
        RunConfig(
            problem=CLASSIFICATION,
            optimizer="sgd",
            lr=0.02,
            momentum=0.5,
            seed=1,
            batch_size=32,
            scheduler="cosine",
        ),
        RunConfig(problem=CLASSIFICATION, optimizer="adam", lr=0.01, seed=2, batch_size=32),
        RunConfig(
            problem=REGRESSION,
            optimizer="rmsprop(centered=True)",
            lr=1e-3,
            momentum=0.9,
            seed=0,
            batch_size=7,
        ),
        RunConfig(
            problem=REGRESSION,
            optimizer="rmsprop(centered=True)",
            lr=3e-3,
            momentum=0.0,
            seed=1,
            batch_size=7,
        ),
        RunConfig(problem=TAILS, optimizer="sgd", lr=0.05, momentum=0.9, seed=0, batch_size=7),
        RunConfig(problem=TAILS, optimizer="sgd", lr=1e6, momentum=0.9, seed=1, batch_size=7),
        RunConfig(problem=TAILS, optimizer="sgd", lr=0.01, momentum=0.9, seed=2, batch_size=7),
    ]
    return [canonical_config(c.replace(steps=STEPS, device=device)) for c in cells]


def _on_the_cpu(fn):
    """``fn`` with the CPU as torch's default device again (inside the meta context)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.device("cpu"):
            return fn(*args, **kwargs)

    return wrapper


# ----------------------------------------------------------------------------------------------------- CPU


def test_the_batched_engine_makes_no_tensor_on_the_default_device(monkeypatch):
    """Run once as usual, then again with the meta device as the default: any tensor the batch makes
    without naming its device breaks the batch there. Same cells, same bits, all batched."""
    configs = [*_toy_cells("cpu"), *_mlp_cells("cpu")]
    monkeypatch.setattr(kernels, "_EXACT", {})  # the probes run afresh in both runs: their tensors count too
    want = batched.run_batch(configs)
    assert [r.summary.engine for r in want] == ["batched"] * len(configs)
    assert {r.summary.status for r in want} == {"ok", "diverged"}

    monkeypatch.setattr(kernels, "_EXACT", {})
    monkeypatch.setattr(cells, "build_problem", _on_the_cpu(cells.build_problem))  # see the docstring
    with torch.device("meta"):
        assert torch.empty(1).is_meta  # what this test relies on
        got = batched.run_batch(configs)

    for mine, theirs in zip(got, want, strict=True):
        where = f"{mine.config}"
        assert mine.summary.engine == "batched", (where, mine.summary.warnings)
        assert "batched engine failed" not in (mine.summary.warnings or ""), where
        assert mine.summary.status == theirs.summary.status, where
        assert mine.summary.diverged_step == theirs.summary.diverged_step, where
        assert set(mine.trace) == set(theirs.trace), where
        for column, values in theirs.trace.items():
            np.testing.assert_array_equal(mine.trace[column], values, err_msg=f"{where} {column}")


# ---------------------------------------------------------------------------------------------------- CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _assert_close(
    got: engine.RunResult, want: engine.RunResult, columns: tuple[str, ...], rtol: float
) -> None:
    where = f"{got.config}"
    assert got.summary.engine == "batched", (where, got.summary.warnings)
    assert got.summary.status == want.summary.status, where
    assert got.summary.diverged_step == want.summary.diverged_step, where
    for column in columns:
        mine, theirs = got.trace[column], want.trace[column]
        assert mine.shape == theirs.shape, (where, column)
        np.testing.assert_allclose(
            mine, theirs, rtol=rtol, atol=1e-30, equal_nan=True, err_msg=f"{where} {column}"
        )


# Not bit for bit on CUDA: torch's optimizers take their foreach path there by default, whose addcmul and
# addcdiv compute p + v·(x∘y) where the batched rules (after the single-tensor CPU path) round v·x first:
# a last-bit difference per step in Adam's and RMSprop's updates. update_norm and x0/x1 are left out: an
# update is the difference of two nearby points, so a last-bit difference in a point shows there at ~1e-5
# relative (and the quadratic's point tends to 0).
TOY_COLUMNS = ("lr", "loss", "grad_norm", "param_norm")


@pytest.mark.cuda
@cuda
def test_toy_cells_on_cuda_agree_with_the_reference_on_cuda():
    configs = _toy_cells("cuda")
    for got, cfg in zip(batched.run_batch(configs), configs, strict=True):
        _assert_close(got, engine.run(cfg), TOY_COLUMNS, rtol=1e-6)


@pytest.mark.cuda
@cuda
def test_mlp_cells_on_cuda_agree_with_the_reference_on_cuda(monkeypatch):
    """1e-5 over 50 steps: besides the optimizers' last-bit differences (above), CUDA may reduce the rows
    of a stack in another order than a lone tensor (the norms), and training carries a last-bit difference
    in the weights forward into the losses; over 50 small steps that stays well below 1e-5."""
    monkeypatch.setattr(kernels, "_EXACT", {})
    configs = _mlp_cells("cuda")
    results = batched.run_batch(configs)
    for got, cfg in zip(results, configs, strict=True):
        _assert_close(got, engine.run(cfg), (*TOY_COLUMNS, "val_loss"), rtol=1e-5)
    devices = {key[1] for key in kernels._EXACT}  # the probes ran on the GPU, with verdicts of its own
    assert devices and all(device.startswith("cuda") for device in devices), devices
