"""The Ray executor on a real local Ray instance: the same rows as the local executor."""

from __future__ import annotations

import pandas as pd
import pytest

from optbench import store
from optbench.grid import GridSpec, run_grid
from optbench.grid.executors import RayExecutor
from optbench.spec import RunConfig

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")


def _run_on_a_local_ray(spec, out):
    """The grid on a fresh 2-CPU local Ray, shut down afterwards."""
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        return run_grid(spec, out=out, executor="ray")
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_results_equal_the_local_executor(tmp_path):
    spec = GridSpec(
        problem="mlp-classification",
        width=8,
        optimizer="sgd,adagrad",
        lr="0.01,0.1",
        momentum=0.9,
        seed="0,1",
        steps=20,
    )
    local = run_grid(spec, out=tmp_path / "local", workers=1)
    remote = _run_on_a_local_ray(spec, tmp_path / "ray")
    assert set(remote["status"]) == {"ok", "invalid"}  # adagrad has no momentum knob: invalid on Ray too
    pd.testing.assert_frame_equal(remote.drop(columns="wall_time_s"), local.drop(columns="wall_time_s"))
    sort = ["run_id", "step"]
    pd.testing.assert_frame_equal(
        store.read_traces(tmp_path / "ray").sort_values(sort).reset_index(drop=True),
        store.read_traces(tmp_path / "local").sort_values(sort).reset_index(drop=True),
    )


@pytest.mark.slow
def test_a_batch_is_cut_for_the_clusters_cpus(tmp_path):
    """40 toy cells share one batch key; on a 2-CPU Ray they run as two batched tasks, with the local rows."""
    spec = GridSpec(lr="linspace(0.01,0.2,20)", momentum="0,0.9", steps=30)
    local = run_grid(spec, out=tmp_path / "local", workers=1)
    remote = _run_on_a_local_ray(spec, tmp_path / "ray")
    assert set(remote["engine"]) == {"batched"}
    assert len(list((tmp_path / "ray" / "traces").glob("batch-*.parquet"))) == 2
    pd.testing.assert_frame_equal(remote.drop(columns="wall_time_s"), local.drop(columns="wall_time_s"))


def test_cuda_runs_request_a_gpu_fraction_cpu_runs_one_cpu():
    executor = RayExecutor(gpus_per_run=0.25)
    assert executor._resources(RunConfig(device="cuda")) == {"num_gpus": 0.25, "num_cpus": 0}
    assert executor._resources(RunConfig(device="cpu")) == {"num_cpus": 1}
