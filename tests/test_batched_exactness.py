"""The batched engine's exactness contract and the machinery that keeps per-cell Python out of the hot path.

- exact (the CPU default): torch.optim's float32 bits (tests/test_batched.py, every rule and scheduler);
- fast (CUDA's default, CPU on request): every product, activation and loss batched, no probe and no
  per-cell fallback; agreement with the for-loop reference within torch's own implementation spread
  (``tolerance``), plus the float32 rounding of the loss value itself;
- the mode each run kept is recorded next to its engine, for reference runs too;
- the step program with a device-side step index (what a CUDA graph replays) gives the host-indexed
  program's bits; hyperparameter tables come from one real optimizer per distinct setting, not per cell.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from optbench import engine
from optbench.engine import batched
from optbench.engine.batched import kernels, plans, program, tolerance
from optbench.engine.batched.rules import RULES, _pow
from optbench.errors import OptbenchError
from optbench.grid import GridSpec, plan_tasks, run_grid
from optbench.grid.plan import check_exactness
from optbench.registry.validate import canonical_config
from optbench.spec import RunConfig

# A 1-column head (MKL rounds it otherwise batched) and sigmoid (ATen's scalar tail): exact mode runs those
# per cell, fast mode batched, so here the two modes really differ.
REGRESSION = "mlp-regression(width=13, depth=2, activation='sigmoid', n_train=256, n_val=33)"
CLASSIFICATION = "mlp-classification(width=16, depth=2, n_train=128, n_val=64, eval_every=5)"


def _cells(problem: str, specs, steps: int = 30, **kw) -> list[RunConfig]:
    return [
        canonical_config(
            RunConfig(problem=problem, optimizer=o, lr=lr, momentum=m, steps=steps, seed=s, **kw)
        )
        for s, (o, lr, m) in enumerate(specs)
    ]


def _same_bits(got: engine.RunResult, want: engine.RunResult) -> None:
    for column, values in want.trace.items():
        np.testing.assert_array_equal(got.trace[column], values, err_msg=f"{got.config} {column}")


# ---------------------------------------------------------------------------------------------- the modes


def test_auto_is_exact_on_cpu_and_fast_elsewhere():
    assert batched.resolve_exactness("auto", "cpu") == "exact"
    assert batched.resolve_exactness("auto", "cuda") == "fast"
    assert batched.resolve_exactness("auto", "cuda:1") == "fast"
    assert batched.resolve_exactness("fast", "cpu") == "fast"


@pytest.mark.parametrize(
    ("mode", "device", "message"), [("exact", "cuda", "CPU contract"), ("bits", "cpu", "unknown")]
)
def test_a_mode_the_device_cannot_keep_is_one_error(mode, device, message):
    with pytest.raises(OptbenchError, match=message):
        batched.resolve_exactness(mode, device)


def test_fast_mode_batches_every_product_activation_and_loss(monkeypatch):
    """The same cells: exact mode runs some products and the sigmoid per cell (their probes say the batched
    kernels round otherwise here), fast mode never calls a per-cell kernel nor a probe."""
    cells = _cells(REGRESSION, [("adam", 0.01, None), ("sgd", 0.05, 0.9)], batch_size=16)
    cells += _cells(CLASSIFICATION, [("adam", 0.01, None)], batch_size=16, loss="focal")
    monkeypatch.setattr(kernels, "_EXACT", {})
    batched.run_batch(cells, "exact")
    assert not all(kernels._EXACT.values())  # exact mode found per-cell work to do (the test can fail)

    def per_cell(*args, **kwargs):
        raise AssertionError("a per-cell kernel ran in fast mode")

    monkeypatch.setattr(kernels, "_EXACT", {})
    monkeypatch.setattr(kernels, "_cell", per_cell)
    monkeypatch.setattr(kernels, "_cell_values", per_cell)
    results = batched.run_batch(cells, "fast")
    assert [r.summary.engine for r in results] == ["batched"] * len(cells)
    assert {r.summary.exactness for r in results} == {"fast"}
    assert kernels._EXACT == {}  # no probe ran


def test_fast_mode_gives_toys_the_reference_bits():
    """A toy step has no product to batch: both modes are the same operations."""
    cells = _cells("rosenbrock", [("adam", 0.01, None), ("sgd", 1e-3, 0.9), ("rmsprop", 0.01, 0.5)])
    for got, cfg in zip(batched.run_batch(cells, "fast"), cells, strict=True):
        assert got.summary.exactness == "fast"
        _same_bits(got, engine.run(cfg))


def test_fast_mode_losses_are_torchs_own_loss_modules_vectorized():
    """vmap of the problem's loss module: every loss, its values within a rounding of the reference's."""
    for loss in ("cross-entropy", "mse", "bce-with-logits", "dice", "focal", "huber"):
        cells = _cells(
            CLASSIFICATION, [("sgd", 0.05, 0.9), ("adam", 0.01, None)], steps=6, loss=loss, batch_size=16
        )
        for got, cfg in zip(batched.run_batch(cells, "fast"), cells, strict=True):
            want = engine.run(cfg)
            assert got.summary.engine == "batched" and got.summary.status == want.summary.status
            np.testing.assert_allclose(got.trace["loss"], want.trace["loss"], rtol=1e-5, err_msg=loss)
            np.testing.assert_allclose(
                got.trace["val_loss"], want.trace["val_loss"], rtol=1e-5, equal_nan=True
            )


# -------------------------------------------------------------------------------------------- tolerance


TOLERANCE_CELLS = {
    "sgd": [("sgd", 0.05, 0.9), ("sgd(nesterov=True)", 0.02, 0.5)],
    "adam": [("adam", 0.01, None), ("adam(amsgrad=True)", 0.003, 0.8)],
    "adamw": [("adamw(weight_decay=0.1)", 0.01, None)],
    "rmsprop": [("rmsprop", 0.001, 0.5), ("rmsprop(centered=True)", 0.003, 0.0)],
    "adagrad": [("adagrad", 0.05, None)],
    "sgd-l1l2": [("sgd-l1l2(l1=0.001)", 0.02, 0.9)],
}


def test_tolerance_cells_cover_every_rule():
    assert set(TOLERANCE_CELLS) == set(RULES)


@pytest.mark.slow
def test_fast_mode_agrees_with_the_reference_within_torchs_own_implementation_spread():
    """Per rule, on the same cells: the fast batched engine's distance from torch's for-loop optimizer is
    within the distance between torch's own implementations (foreach, fused) and the for-loop, give or take
    3 bits, plus the float32 rounding of the loss value (``tolerance.Agreement.holds``)."""
    groups = {
        rule: _cells(REGRESSION, specs, steps=100, batch_size=16) for rule, specs in TOLERANCE_CELLS.items()
    }
    results = {rule: batched.run_batch(cells, "fast") for rule, cells in groups.items()}
    assert all(r.summary.engine == "batched" for rs in results.values() for r in rs)
    agreements = tolerance.measure(groups, results)
    assert {a.rule for a in agreements} == set(RULES)
    for a in agreements:
        assert a.window > 0 and a.deviation > 0, a  # fast mode does round otherwise here
        assert a.holds, a.row()
    own = [a for a in agreements if not a.borrowed]
    assert own and all(a.spread > 0 for a in own)  # torch's fused kernels round otherwise on CPU


def test_agreement_compares_within_the_window_where_torch_agrees_with_itself():
    spread = np.array([0.0, 1e-7, 1e-5, 2e-3, 0.5])
    assert tolerance._window(spread) == 3
    assert tolerance._window(np.zeros(4)) == 4
    limit = tolerance.SPREAD_FACTOR * 1e-5 + tolerance.LOSS_ROUNDING
    assert tolerance.Agreement("adam", window=3, spread=1e-5, deviation=limit).holds
    assert not tolerance.Agreement("adam", window=3, spread=1e-5, deviation=limit * 1.01).holds
    assert tolerance.Agreement("sgd", window=3, spread=0.0, deviation=tolerance.LOSS_ROUNDING).holds


def test_relative_difference_treats_two_ended_runs_as_equal():
    a = np.array([[1.0, 2.0, np.nan], [4.0, np.inf, np.nan]])
    b = np.array([[1.0, 2.0 * (1 + 1e-6), np.nan], [4.0, np.inf, np.nan]])
    np.testing.assert_allclose(tolerance.relative(a, b), [0.0, 1e-6, 0.0], rtol=1e-5)


# --------------------------------------------------------------------------------------------- recorded


def test_every_run_records_its_exactness_next_to_its_engine(tmp_path):
    grid = GridSpec(lr="0.05,0.1", momentum="0,0.9", scheduler="none,plateau", steps=20)
    auto = run_grid(grid, out=tmp_path / "auto", workers=1)
    fast = run_grid(grid, out=tmp_path / "fast", workers=1, exactness="fast")
    for runs, mode in ((auto, "exact"), (fast, "fast")):
        stored = pd.read_parquet(runs.attrs["out"] + "/runs.parquet")
        by_engine = stored.groupby("engine")["exactness"].unique().map(list).to_dict()
        assert by_engine == {"batched": [mode], "reference": ["exact"]}  # plateau runs on the reference


def test_exact_with_cuda_cells_is_refused_before_anything_is_made(tmp_path):
    """run_grid checks the exactness before it makes the folder (the CUDA case is checked on the planner:
    without a GPU the device check refuses such cells first)."""
    cells = [canonical_config(RunConfig(lr=lr, steps=5)) for lr in (0.1, 0.2)]
    with pytest.raises(OptbenchError, match="unknown exactness 'bits'"):
        run_grid(cells, out=tmp_path / "x", workers=1, exactness="bits")
    assert not (tmp_path / "x").exists()
    cuda = [c.replace(device="cuda:1") for c in cells]
    with pytest.raises(OptbenchError, match="CPU contract, and the grid has cells on cuda:1"):
        check_exactness("exact", [*cells, *cuda], "auto")
    check_exactness("exact", [*cells, *cuda], "reference")  # nothing batched: nothing to refuse
    check_exactness("fast", cuda, "auto")


def test_cli_exactness_option(cli, tmp_path):
    result = cli(
        "grid",
        "--lr",
        "0.1,0.2",
        "--steps",
        "5",
        "--workers",
        "1",
        "--exactness",
        "fast",
        "--out",
        tmp_path / "g",
    )
    assert result.exit_code == 0, result.output
    assert set(pd.read_parquet(tmp_path / "g" / "runs.parquet")["exactness"]) == {"fast"}
    bad = cli("grid", "--steps", "5", "--exactness", "bits", "--out", tmp_path / "b")
    assert bad.exit_code == 2 and "error: unknown exactness 'bits'" in bad.stderr
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------ the program


def test_device_step_index_gives_the_host_indexed_programs_bits(monkeypatch):
    """The program a CUDA graph captures reads its step from a device tensor and records with index_put;
    run eagerly on the CPU it must give the plain program's bits, compaction included."""
    cells = _cells(
        CLASSIFICATION, [("sgd", 0.01, 0.9), ("sgd", 0.3, 0.9), ("sgd", 1e4, 0.9)], steps=40, batch_size=16
    )
    cells += _cells(
        "rosenbrock", [("adam", lr, None) for lr in (0.01, 0.1, 5.0, 1e3)], steps=40, scheduler="cosine"
    )
    plain = batched.run_batch(cells)
    real_init = program.Runner.__init__

    def device_indexed(self, device, use_graph):
        real_init(self, device, use_graph)
        self.step = program.DeviceStep(device)

    monkeypatch.setattr(program.Runner, "__init__", device_indexed)
    indexed = batched.run_batch(cells)
    assert {r.summary.status for r in indexed} == {"ok", "diverged"}
    for got, want in zip(indexed, plain, strict=True):
        assert got.summary.engine == "batched"
        _same_bits(got, want)


def test_one_real_optimizer_per_distinct_setting_not_per_cell(monkeypatch):
    """10 lrs x 3 momenta x 4 seeds = 120 cells, 30 plans: 3 optimizers (one per momentum), no scheduler."""
    built = []
    real = plans.build_optimizer

    def counting(*args, **kwargs):
        built.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(plans, "build_optimizer", counting)
    cells = [
        canonical_config(RunConfig(problem="beale", optimizer="sgd", lr=lr, momentum=m, seed=s, steps=10))
        for lr in np.linspace(1e-3, 1e-2, 10)
        for m in (0.0, 0.5, 0.9)
        for s in range(4)
    ]
    results = batched.run_batch(cells)
    assert {r.summary.engine for r in results} == {"batched"}
    assert len(built) == 3
    built.clear()
    batched.run_batch([c.replace(scheduler="cosine") for c in cells])
    assert len(built) == 3 + 10  # plus one optimizer per (spec, scheduler, lr) for its scheduler


def test_pow_is_pythons_pow_once_per_distinct_pair():
    base = np.array([[0.9, 0.99, 0.9]])
    exponent = np.arange(1, 6, dtype=np.float64).reshape(-1, 1)
    got = _pow(base, exponent)
    assert got.shape == (5, 3)
    assert all(got[t, c] == base[0, c] ** exponent[t, 0] for t in range(5) for c in range(3))
    varying = np.linspace(0.5, 0.9, 40).reshape(40, 1)  # a cycled beta: every pair distinct
    np.testing.assert_array_equal(_pow(varying, exponent[:1]), varying**1.0)


def test_a_batched_result_pickles_as_the_plain_result_it_stands_for():
    cells = _cells("quadratic", [("sgd", 0.1, None), ("sgd", 0.4, None)], steps=40)
    results = batched.run_batch(cells)
    for result in results:
        copy = pickle.loads(pickle.dumps(result))
        assert type(copy) is engine.RunResult and copy.config == result.config
        assert copy.summary == result.summary
        _same_bits(copy, result)
    assert (
        results[1].summary.status == "diverged"
        and len(results[1].trace["step"]) == results[1].summary.diverged_step + 1
    )


# ---------------------------------------------------------------------------------------------- planning


def test_auto_batches_cuda_cells_in_programs_that_fit_the_device(monkeypatch):
    """Planning only (no GPU needed): CUDA cells are batched by auto too, cut into tasks of
    ``cells_per_program`` cells, each carrying the grid's exactness."""
    cells = [canonical_config(RunConfig(lr=lr, steps=20)) for lr in np.linspace(0.01, 0.2, 7)]
    cuda = [c.replace(device="cuda") for c in cells]
    monkeypatch.setattr(batched, "cells_per_program", lambda cfg: 3)
    tasks = plan_tasks([*cells, *cuda], "auto", workers=1, exactness="fast")
    assert [(len(t.configs), t.batched, t.device, t.exactness) for t in tasks] == [
        (7, True, "cpu", "fast"),
        (3, True, "cuda", "fast"),
        (3, True, "cuda", "fast"),
        (1, True, "cuda", "fast"),
    ]


def test_cells_per_program_on_cpu_and_the_device_estimate():
    toy = canonical_config(RunConfig(steps=200))
    mlp = canonical_config(RunConfig(problem="mlp-classification(width=64, depth=3)", steps=500))
    assert batched.cells_per_program(toy) == batched.MAX_TOY_CELLS
    assert 1 <= batched.cells_per_program(mlp) < batched.MAX_TOY_CELLS
    small = batched._device_bytes_per_cell(mlp, toy=False)
    wider = batched._device_bytes_per_cell(
        mlp.replace(problem="mlp-classification(width=128, depth=3)"), toy=False
    )
    assert 1e5 < small < wider < 1e8  # bytes: a default MLP cell keeps ~1-2 MB on the device
    assert batched._device_bytes_per_cell(toy, toy=True) < small
