"""Where a grid's runs execute: this process, a local pool of spawned processes, or a Ray cluster.

Every executor has ``workers`` and ``run(tasks, out, on_result)``. A ``Task`` is one config for the
reference engine (``engine.run``) or a batch of cells for the batched engine (``batched.run_batch``); each
task's results are committed as one unit (``store.commit_runs``: trace file, then commit record; both
atomic) and ``on_result(summary_row)`` is called in the calling thread for each run, in completion order.
A grid killed at any moment loses only the tasks in flight.

* Local (default): ``workers`` processes from the ``spawn`` start method (no forked torch or CUDA state),
  each with one torch thread set before any torch work; each worker commits its own runs. ``workers=1``
  runs in this process, also with one torch thread. On CPU every run is bit-identical whatever the
  number of workers: a run's only randomness comes from its own seed.
* Ray: one Ray task per Task, ``num_cpus=1`` for CPU runs, ``num_gpus=gpus_per_run`` (and no CPU) for CUDA
  runs. Tasks return their results and the driver commits them, so the cluster needs no shared disk
  (its nodes need optbench installed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from optbench.engine.runtime import one_torch_thread
from optbench.errors import OptbenchError
from optbench.spec import RunConfig
from optbench.store import lock as folderlock

OnResult = Callable[[dict], None]
EXECUTORS = ("local", "ray")
RAY_MISSING = "install the ray extra: pip install 'optbench[ray]'"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask / cgroup cpuset where the OS exposes it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def make_executor(
    kind: str = "local", *, workers: int | None = None, address: str | None = None, gpus_per_run: float = 0.25
):
    """Validate the execution options (one clear error each) and build the executor."""
    if kind not in EXECUTORS:
        raise OptbenchError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    if kind == "local":
        if address is not None:
            raise OptbenchError("--address applies to --executor ray")
        return LocalExecutor(workers)
    if workers is not None:
        raise OptbenchError(
            "--workers applies to --executor local; Ray schedules runs by the resources they request"
        )
    return RayExecutor(address, gpus_per_run)


@dataclass(frozen=True)
class Task:
    """The unit of work an executor hands out: one reference run, or a batch for the batched engine."""

    configs: tuple[RunConfig, ...]
    batched: bool = False
    exactness: str = "auto"  # the batched engine's contract (grid/plan.py)

    @property
    def device(self) -> str:
        return self.configs[0].device

    def split(self, parts: int) -> list[Task]:
        """A CPU batch cut into up to ``parts`` contiguous chunks of at least ``MIN_CHUNK`` cells, so that every
        worker gets a share; a reference task stays whole, and so does a GPU batch (one device program is
        the point of batching there, and each chunk would need a process with a CUDA context of its own)."""
        if not self.batched or parts <= 1 or self.device != "cpu":
            return [self]
        chunks = max(1, min(parts, len(self.configs) // MIN_CHUNK))
        size = -(-len(self.configs) // chunks)
        return [
            Task(self.configs[i : i + size], batched=True, exactness=self.exactness)
            for i in range(0, len(self.configs), size)
        ]


MIN_CHUNK = 16  # cells: a smaller batch spends more on per-step Python than a worker of its own saves


def run_task(task: Task) -> list:
    """The task's RunResults, in the order of its configs."""
    if task.batched:
        from optbench.engine.batched import run_batch

        return run_batch(list(task.configs), task.exactness)
    from optbench.engine.reference import run

    return [run(config) for config in task.configs]


def commit(out: Path, task: Task, results: list) -> None:
    from optbench import store

    if task.batched:
        store.commit_runs(out, results)  # one trace file + one commit record for the whole batch
    else:
        for result in results:
            store.commit_run(out, result)


def run_and_commit(task: Task, out: str | Path) -> list[dict]:
    """Run a task, commit it into ``out`` and return its summary rows (what a local worker does)."""
    results = run_task(task)
    commit(Path(out), task, results)
    return [result.summary_row() for result in results]


# ------------------------------------------------------------------------------------------------- local


def _init_worker(out: str, parent: int) -> None:
    """Pool initializer, before any torch work: a writer's lock on ``out`` (a restarted grid waits for this
    process to be gone, folderlock), an exit when the parent grid dies (``kill -9``, the OOM killer) instead
    of idling on forever, one intra- and inter-op thread, and Ctrl-C left to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    folderlock.hold_as_writer(out)
    # Checked after taking the lock: a grid restarted into ``out`` checks for writers only once the parent
    # is dead, so a worker that took the lock later sees that here and writes nothing. (A worker that starts
    # after its parent died would take ``getppid()`` = init for its parent and never notice.)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only settable before inter-op work has started
        torch.set_num_interop_threads(1)


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # whatever this worker had in flight was never committed: a re-run redoes it


class LocalExecutor:
    """``workers`` spawned processes (default: the usable cores); 1 = run in this process."""

    def __init__(self, workers: int | None = None):
        if workers is not None and workers < 1:
            raise OptbenchError(f"--workers must be >= 1, got {workers}")
        self.workers = workers or usable_cores()

    def run(self, tasks: Sequence[Task], out: Path, on_result: OnResult) -> None:
        workers = min(self.workers, len(tasks))
        if workers <= 1:
            with one_torch_thread():
                for task in tasks:
                    for row in run_and_commit(task, out):
                        on_result(row)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(out), os.getpid()),
        )
        try:
            futures = [pool.submit(run_and_commit, task, str(out)) for task in tasks]
            for future in as_completed(futures):
                for row in future.result():
                    on_result(row)
        except BaseException:
            # Ctrl-C or an error: drop the queue and stop the workers now. Committed runs stay; the runs
            # in flight are lost (nothing of them is visible: their files are still dot-prefixed temps).
            processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API before 3.14
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            raise
        pool.shutdown(
            wait=False
        )  # every run is in; the workers' exit (~1 s with torch loaded) overlaps the rest


# --------------------------------------------------------------------------------------------------- ray


def import_ray():
    try:
        import ray
    except ImportError:
        raise OptbenchError(RAY_MISSING) from None
    return ray


def _ray_task(task: Task):
    """Body of one Ray task: the results (traces included) go back to the driver, which commits."""
    import torch

    torch.set_num_threads(1)
    return run_task(task)


class RayExecutor:
    """One Ray task per reference run, and per chunk of a batch (as many chunks as the cluster has CPUs), on
    the cluster at ``address`` (default: a local Ray started for this grid and shut down after it; an
    already initialised Ray is used as it is)."""

    workers = None
    WAIT_BATCH = 32

    def __init__(self, address: str | None = None, gpus_per_run: float = 0.25):
        if not gpus_per_run > 0:
            raise OptbenchError(f"--gpus-per-run must be positive, got {gpus_per_run}")
        self.ray = import_ray()
        self.address, self.gpus_per_run = address, gpus_per_run

    def _resources(self, task: Task) -> dict:
        if task.device.startswith("cuda"):
            return {"num_gpus": self.gpus_per_run, "num_cpus": 0}
        return {"num_cpus": 1}

    def run(self, tasks: Sequence[Task], out: Path, on_result: OnResult) -> None:
        ray = self.ray
        if not tasks:
            return
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = self.address or "a local Ray"
                raise OptbenchError(f"cannot start or reach {where}: {err}") from None
        try:
            # Batches were planned whole: cut them for the cluster's CPUs, as the local pool's are for its workers.
            tasks = [
                part for task in tasks for part in task.split(int(ray.cluster_resources().get("CPU", 1)))
            ]
            remote = ray.remote(_ray_task)
            pending = {remote.options(**self._resources(t)).remote(t): t for t in tasks}
            try:
                while pending:
                    ready, _ = ray.wait(
                        list(pending), num_returns=min(self.WAIT_BATCH, len(pending)), timeout=0.2
                    )
                    for ref in ready:
                        task = pending.pop(ref)
                        results = ray.get(ref)
                        commit(out, task, results)
                        for result in results:
                            on_result(result.summary_row())
            except BaseException:
                for ref in pending:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
                raise
        finally:
            if started:
                ray.shutdown()
