"""Shared fixtures. Keep this small: one test module per src module holds its own helpers."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    """Under pytest-xdist each worker takes its share of the cores for torch's threads (and the processes
    it starts inherit it): N workers at torch's default of one thread per core would oversubscribe the
    machine N-fold (``pytest -n 16`` on a 16-core GPU machine did not finish in 170 s)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = str(max(1, (os.cpu_count() or 1) // int(workers)))
        os.environ["OMP_NUM_THREADS"] = threads
        import torch

        torch.set_num_threads(int(threads))


@pytest.fixture
def cli():
    """Invoke the ``bench`` app in-process: ``cli("lr-sweep", "--num", "3")`` -> click Result.

    stdout and stderr are kept apart (``result.stdout`` / ``result.stderr``), as a terminal sees them.
    """
    from typer.testing import CliRunner

    from optbench.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


# The figure tests' grids (tests/figure_grids.py), built once per session: the 500-cell one takes seconds.
@pytest.fixture(scope="session")
def grid500(tmp_path_factory):
    from figure_grids import GRID_500, build_grid

    return build_grid(tmp_path_factory, "g500", GRID_500)


@pytest.fixture(scope="session")
def grid10(tmp_path_factory):
    from figure_grids import GRID_10, build_grid

    return build_grid(tmp_path_factory, "g10", GRID_10)


@pytest.fixture(scope="session")
def grid1(tmp_path_factory):
    from figure_grids import GRID_1, build_grid

    return build_grid(tmp_path_factory, "g1", GRID_1)
