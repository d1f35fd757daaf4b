"""The batched engine on the batch's device: nothing it makes lands on torch's default device, and on CUDA
it agrees with the reference engine run there.

CPU: under ``with torch.device("meta")`` every tensor made without an explicit device is a meta tensor,
which has no data: mixing one with the batch's CPU tensors, or reading it on the host, raises, the batch
falls back to the reference engine, and its results say so (``engine == "reference"`` and a "batched
engine failed" warning). The problems are built outside that context: ``problems.problem_of`` makes its
``nn.Linear`` layers on the default device and then moves them with ``.to(device)``, which cannot copy out
of a meta tensor. That is the reference engine's own code, which runs it on CUDA itself.

CUDA (skipped without one; ``scripts/gpu-check`` runs them): the batched engine's default there is the
fast mode from a captured CUDA graph; it must agree with the reference engine on the GPU within the
tolerance derived from torch's own implementations (``engine.batched.tolerance``), end and diverge where it
does, and give the eager program's bits.
"""

from __future__ import annotations

import contextlib
import functools
import json

import numpy as np
import pytest
import torch

from optbench import engine
from optbench.engine import batched
from optbench.engine.batched import cells, kernels, program, tolerance
from optbench.errors import OptbenchError
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


@pytest.mark.slow
def test_the_batched_engine_makes_no_tensor_on_the_default_device(monkeypatch):
    """Run once as usual, then again with the meta device as the default: any tensor the batch makes
    without naming its device breaks the batch there. Same cells, same bits, all batched."""
    configs = [*_toy_cells("cpu"), *_mlp_cells("cpu")]
    monkeypatch.setattr(kernels, "_EXACT", {})  # the probes run afresh in both runs: their tensors count too
    want = batched.run_batch(configs)
    assert [r.summary.engine for r in want] == ["batched"] * len(configs)
    assert {r.summary.status for r in want} == {"ok", "diverged"}

    monkeypatch.setattr(kernels, "_EXACT", {})
    monkeypatch.setattr(cells, "problem_of", _on_the_cpu(cells.problem_of))  # see the docstring
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


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on the CPU: "capture" runs the step once (a real capture only
    records it, and the replay that follows runs it), so the first replay after a capture does nothing."""

    captures = 0

    def __init__(self):
        self.program, self.fresh = None, False

    def replay(self):
        if self.fresh:
            self.fresh = False
        else:
            self.program()


class _FakeCapture:
    def __init__(self, graph, fail: bool):
        self.graph, self.fail = graph, fail

    def __enter__(self):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        _FakeGraph.captures += 1
        return self

    def __exit__(self, *exc):
        self.graph.fresh = exc[0] is None
        return False


class _FakeStream:
    def wait_stream(self, other):
        pass


def _fake_cuda(monkeypatch, fail: bool = False):
    """The CUDA-graph code path of ``program.Runner`` on the CPU: device-side step index, warm-up steps,
    capture (faked), replays, re-capture after compaction, fallback to eager when capture fails."""
    real_init = program.Runner.__init__

    def graph_runner(self, device, use_graph):
        real_init(self, device, use_graph)
        self.use_graph, self.step = use_graph, program.DeviceStep(device)

    def capture(graph):
        graph.program = lambda: runners[-1].program()
        return _FakeCapture(graph, fail)

    runners: list = []
    real_load = program.Runner.load

    def load(self, prog):
        if self not in runners:
            runners.append(self)
        real_load(self, prog)

    monkeypatch.setattr(program.Runner, "__init__", graph_runner)
    monkeypatch.setattr(program.Runner, "load", load)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: _FakeStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)


@pytest.mark.slow
@pytest.mark.parametrize("fail", [False, True])
def test_the_cuda_graph_runner_gives_the_eager_bits_on_the_cpu(monkeypatch, fail):
    """Toy and MLP cells, some diverging (their rows leave the batch: a new program, a new capture)."""
    configs = [*_toy_cells("cpu"), *_mlp_cells("cpu")]
    want = batched.run_batch(configs)
    _fake_cuda(monkeypatch, fail)
    _FakeGraph.captures = 0
    got = batched.run_batch(configs)
    if fail:
        assert _FakeGraph.captures == 0
        assert all("CUDA graph capture failed" in r.summary.extras["notes"][0] for r in got)
        assert {r.summary.extras["step_program"] for r in got} == {"eager"}
    else:
        assert _FakeGraph.captures >= 3  # toy batch, MLP batch, and again after diverged MLP rows left
        assert {r.summary.extras["step_program"] for r in got} == {"cuda-graph"}
    for mine, theirs in zip(got, want, strict=True):
        assert mine.summary.engine == "batched"
        for column, values in theirs.trace.items():
            np.testing.assert_array_equal(mine.trace[column], values, err_msg=f"{mine.config} {column}")


# ---------------------------------------------------------------------------------------------------- CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# The tolerance cells of tests/test_batched_exactness.py on the GPU: a 1-column head and sigmoid, every rule.
TOLERANCE_PROBLEM = "mlp-regression(width=13, depth=2, activation='sigmoid', n_train=256, n_val=33)"
TOLERANCE_CELLS = {
    "sgd": [("sgd", 0.05, 0.9), ("sgd(nesterov=True)", 0.02, 0.5)],
    "adam": [("adam", 0.01, None), ("adam(amsgrad=True)", 0.003, 0.8)],
    "adamw": [("adamw(weight_decay=0.1)", 0.01, None)],
    "rmsprop": [("rmsprop", 0.001, 0.5), ("rmsprop(centered=True)", 0.003, 0.0)],
    "adagrad": [("adagrad", 0.05, None)],
    "sgd-l1l2": [("sgd-l1l2(l1=0.001)", 0.02, 0.9)],
}


def _tolerance_groups(problem: str, steps: int, **kw) -> dict[str, list[RunConfig]]:
    return {
        rule: [
            canonical_config(
                RunConfig(
                    problem=problem, optimizer=o, lr=lr, momentum=m, seed=s, steps=steps, device="cuda", **kw
                )
            )
            for s, (o, lr, m) in enumerate(specs)
        ]
        for rule, specs in TOLERANCE_CELLS.items()
    }


def _assert_agreement(groups: dict[str, list[RunConfig]], record_property) -> None:
    """Every cell batched in fast mode from a CUDA graph; per rule within the derived tolerance. The
    measurement goes into the JUnit report (``scripts/gpu-check`` collects it)."""
    results = {rule: batched.run_batch(cells) for rule, cells in groups.items()}  # auto: fast on CUDA
    for rule, rs in results.items():
        for r in rs:
            assert r.summary.engine == "batched", (r.config, r.summary.warnings)
            assert r.summary.exactness == "fast" and r.summary.extras["step_program"] == "cuda-graph", rule
    agreements = tolerance.measure(groups, results)
    record_property("agreement", json.dumps([a.row() for a in agreements]))
    for agreement in agreements:
        assert agreement.holds, agreement.row()


@pytest.mark.cuda
@cuda
def test_mlp_cells_on_cuda_agree_with_the_reference_within_the_derived_tolerance(record_property):
    """Fast mode on the GPU against torch's for-loop optimizer on the GPU, per rule: no farther than torch's
    own foreach and fused implementations land from it on the same cells, give or take 3 bits (the
    contract of ``tolerance``)."""
    _assert_agreement(_tolerance_groups(TOLERANCE_PROBLEM, steps=100, batch_size=16), record_property)


@pytest.mark.cuda
@cuda
def test_toy_cells_on_cuda_agree_with_the_reference_within_the_derived_tolerance(record_property):
    _assert_agreement(_tolerance_groups("rosenbrock", steps=200), record_property)


@pytest.mark.cuda
@cuda
def test_cuda_cells_diverge_and_end_as_on_the_reference():
    """Status and divergence step as the reference's (diverging cells leave a captured batch mid-run)."""
    configs = [*_toy_cells("cuda"), *_mlp_cells("cuda")]
    for got, cfg in zip(batched.run_batch(configs), configs, strict=True):
        want = engine.run(cfg)
        assert got.summary.engine == "batched", (cfg, got.summary.warnings)
        assert got.summary.status == want.summary.status, cfg
        assert got.summary.diverged_step == want.summary.diverged_step, cfg
        assert len(got.trace["step"]) == len(want.trace["step"]), cfg
    assert {engine.run(c).summary.status for c in configs} == {"ok", "diverged"}


@pytest.mark.cuda
@cuda
def test_cuda_graph_replay_gives_the_eager_programs_bits(monkeypatch):
    """The same cells with the step replayed from a CUDA graph and run eagerly: the same kernels on the same
    data, so the same bits, compaction (re-capture after diverged rows leave) included."""
    configs = [*_toy_cells("cuda"), *_mlp_cells("cuda")]
    graphed = batched.run_batch(configs)
    assert {r.summary.extras["step_program"] for r in graphed} == {"cuda-graph"}
    assert not any(r.summary.extras["notes"] for r in graphed), graphed[0].summary.extras
    monkeypatch.setattr(batched, "CUDA_GRAPHS", False)
    eager = batched.run_batch(configs)
    assert {r.summary.extras["step_program"] for r in eager} == {"eager"}
    for got, want in zip(graphed, eager, strict=True):
        for column, values in want.trace.items():
            np.testing.assert_array_equal(got.trace[column], values, err_msg=f"{got.config} {column}")


@pytest.mark.cuda
@cuda
def test_a_grid_on_cuda_runs_batched_and_fast_by_default(tmp_path):
    from optbench.grid import GridSpec, run_grid

    runs = run_grid(
        GridSpec(lr="0.05,0.1,0.2", momentum="0,0.9", steps=40, device="cuda"), out=tmp_path, workers=1
    )
    assert set(runs["engine"]) == {"batched"} and set(runs["exactness"]) == {"fast"}
    with pytest.raises(OptbenchError, match="CPU contract"):
        run_grid(GridSpec(steps=5, device="cuda"), out=tmp_path / "x", workers=1, exactness="exact")
    assert not (tmp_path / "x").exists()
    with pytest.raises(OptbenchError, match="CPU contract"):
        batched.run_batch(_toy_cells("cuda")[:1], "exact")


@pytest.mark.cuda
@cuda
def test_cuda_batches_are_sized_by_free_device_memory(monkeypatch):
    cfg = _mlp_cells("cuda")[0]
    per_cell = batched._device_bytes_per_cell(cfg, toy=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * per_cell, 10**12))
    assert batched.cells_per_program(cfg) == int(batched.DEVICE_MEMORY_SHARE * 100)
