"""The grids the figure tests draw (1, 10 and 500 cells), built once per test session (conftest.py's
``grid1``, ``grid10``, ``grid500`` fixtures): tests/test_figures.py and tests/test_facets_readable.py share
them."""

from __future__ import annotations

GRID_500 = {
    "problem": ["rosenbrock"],
    "optimizer": ["sgd", "adam", "adamw", "rmsprop"],
    "lr": "logspace(-3,0,25)",
    "momentum": [0, 0.5, 0.8, 0.9, 0.95],
    "steps": 60,
}
GRID_10 = {
    "problem": ["quadratic"],
    "optimizer": ["sgd", "adam"],
    "lr": [0.01, 0.1, 0.2, 0.3, 0.5],
    "steps": 40,
}
GRID_1 = {"problem": ["quadratic"], "optimizer": ["sgd"], "lr": [0.1], "steps": 40}


def build_grid(tmp_path_factory, name: str, spec: dict):
    from optbench import store
    from optbench.grid import run_grid

    out = tmp_path_factory.mktemp(name)
    run_grid(spec, out=out, workers=1)
    return out, store.read_runs(out), store.read_traces(out)
