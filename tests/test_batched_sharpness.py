"""Sharpness in the batched engine: toy cells all at once agree with the reference engine within Lanczos
tolerance (and leave every other column bit-identical); MLP cells that track it go to the reference."""

from __future__ import annotations

import numpy as np
import pytest

from optbench.engine import batched, run
from optbench.engine.sharpness import DEFAULT_TOLERANCE
from optbench.registry.validate import canonical_config
from optbench.spec import TRACE_COLUMNS, RunConfig

SHARPNESS = ("sharpness", "precond_sharpness")


def _cells(problem: str, optimizer: str, every: int = 7, steps: int = 50) -> list[RunConfig]:
    lrs = (1e-4, 1e-3, 0.01, 0.3)  # 0.3 diverges on most: measured past its end until the check drops it
    return [
        canonical_config(
            RunConfig(problem=problem, optimizer=optimizer, lr=lr, steps=steps, sharpness_every=every)
        )
        for lr in lrs
    ]


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock", "rastrigin", "beale"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw(weight_decay=0.1)"])
def test_toy_cells_agree_with_the_reference_engine(problem, optimizer):
    cells = _cells(problem, optimizer)
    results = batched.run_batch(cells)
    for config, result in zip(cells, results, strict=True):
        reference = run(config)
        assert result.summary.engine == "batched"
        for column in TRACE_COLUMNS[1:]:
            if column not in SHARPNESS:
                np.testing.assert_array_equal(result.trace[column], reference.trace[column], err_msg=column)
        for column in SHARPNESS:
            got, want = result.trace[column], reference.trace[column]
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=column)
            np.testing.assert_allclose(got, want, rtol=10 * DEFAULT_TOLERANCE, err_msg=column)
        assert result.summary.sharpness_unconverged == reference.summary.sharpness_unconverged
        assert (result.summary.sharpness_residual is None) == (reference.summary.sharpness_residual is None)
    adam = optimizer != "sgd"
    assert np.isfinite(results[0].trace["precond_sharpness"][7]) == adam  # the first measurement after a step


def test_quadratic_cells_measure_eight_exactly():
    cells = _cells("quadratic", "sgd", every=3, steps=10)
    result = batched.run_batch(cells)[0]
    assert result.trace["sharpness"][[0, 3, 6, 9]].tolist() == [8.0] * 4


def test_mlp_cells_that_track_sharpness_run_on_the_reference_engine():
    config = canonical_config(
        RunConfig(problem="mlp-regression(n_train=64, width=8)", lr=0.01, steps=6, sharpness_every=3)
    )
    assert "reference engine measures it" in batched.unsupported_reason(config)
    assert batched.unsupported_reason(config.replace(sharpness_every=0)) is None
    results = batched.run_batch([config, config.replace(seed=1)])
    assert [r.summary.engine for r in results] == ["reference", "reference"]
    assert np.isfinite(results[0].trace["sharpness"][[0, 3]]).all()


def test_cadence_is_part_of_the_batch_key():
    a, b = _cells("quadratic", "sgd", every=5)[0], _cells("quadratic", "sgd", every=10)[0]
    assert batched.batch_key(a) != batched.batch_key(b)
    assert batched.batch_key(a) == batched.batch_key(a.replace(lr=0.2))


def test_a_grid_tracks_sharpness_in_both_engines(tmp_path):
    from optbench.grid import run_grid

    runs = run_grid(
        {"problem": "quadratic,mlp-regression(n_train=64, width=8)", "lr": "0.01,0.1", "steps": 6,
         "sharpness_every": 3},
        out=tmp_path / "g",
        workers=1,
    )  # fmt: skip
    from optbench import store

    traces = store.read_traces(tmp_path / "g")
    engines = dict(zip(runs["problem"], runs["engine"], strict=False))
    assert engines["quadratic"] == "batched" and engines["mlp-regression(n_train=64, width=8)"] == "reference"
    measured = traces[traces["sharpness"].notna()]
    assert sorted(measured["step"].unique().tolist()) == [0, 3]
    assert len(measured) == 2 * len(runs)
    assert (runs["sharpness_every"] == 3).all() and (runs["sharpness_unconverged"] == 0).all()
