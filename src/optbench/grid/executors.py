"""Where a grid's runs execute: this process, a local pool of spawned processes, or a Ray cluster.

Every executor has ``workers``, ``run(tasks, out, on_result)`` and ``on_start`` (None, or called with a
task, the ``time.monotonic()`` it started at and whether it is its process's first, for the ETA:
grid/progress.py). A ``Task`` is one config for the
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
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from optbench.engine.runtime import one_torch_thread, pin_worker_to_one_thread
from optbench.errors import OptbenchError
from optbench.registry.imports import worker_env
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
    problems: tuple = ()  # (name, factory, summary): problems registered in the grid's process (plan.py)

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
        return [replace(self, configs=self.configs[i : i + size]) for i in range(0, len(self.configs), size)]


MIN_CHUNK = 16  # cells: a smaller batch spends more on per-step Python than a worker of its own saves


def run_task(task: Task) -> list:
    """The task's RunResults, in the order of its configs."""
    if task.problems:
        from optbench.registry.modelproblem import adopt

        adopt(task.problems)
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

MAX_DEATHS = 2  # a cell whose worker dies this often is recorded as failed (a batch is cut in two at once)
MAX_UNEXPLAINED = 3  # pool breaks that no task can be blamed for before the grid stops
_started = None  # in a pool worker: the queue on which it says which task it starts


def _init_worker(out: str, parent: int, started=None) -> None:
    """Pool initializer, before any torch work: a writer's lock on ``out`` (a restarted grid waits for this
    process to be gone, folderlock), an exit when the parent grid dies (``kill -9``, the OOM killer) instead
    of idling on forever, one intra- and inter-op thread, and Ctrl-C left to the parent. ``started``: the
    queue on which the worker says which task it starts (so a worker's death is blamed on its task)."""
    global _started
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    folderlock.hold_as_writer(out)
    # Checked after taking the lock: a grid restarted into ``out`` checks for writers only once the parent
    # is dead, so a worker that took the lock later sees that here and writes nothing. (A worker that starts
    # after its parent died would take ``getppid()`` = init for its parent and never notice.)
    if os.getppid() != parent:
        os._exit(1)
    _started = started
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    pin_worker_to_one_thread()
    _warm_up()


def _warm_up() -> None:
    """What every task pays once per process, paid before the first task says it starts (so the ETA times
    tasks, not start-up): torch imports torch._dynamo when the first optimizer is built (~2 s)."""
    import torch

    import optbench.engine.batched
    import optbench.engine.reference
    import optbench.store  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # whatever this worker had in flight was never committed: a re-run redoes it


def _run_tracked(fn: Callable, index: int, task: Task, out: str) -> list[dict]:
    """In a pool worker: say which task starts and when (SimpleQueue: written before the task runs; the
    wall clock, which the parent maps onto its monotonic one), then run it."""
    if _started is not None:
        _started.put((os.getpid(), index, time.time()))
    return fn(task, out)


class PoolBroken(OptbenchError):
    """Worker processes keep dying and no task can be blamed: the grid stops (what is committed stays)."""

    exit_code = 1  # not bad input: the CLI exits 1


MAIN_GUARD = (
    "run_grid was called while a worker process imported your script: a grid's workers start by "
    'importing the script that runs it, so put the call under `if __name__ == "__main__":` '
    "(or pass workers=1)"
)
MAIN_GUARD_EXIT = 87  # a worker's exit code for "my bootstrap re-ran the script, which called run_grid"


def refuse_in_worker_bootstrap() -> None:
    """A spawned worker re-imports the ``__main__`` script; if that script calls run_grid at top level, the
    worker would start a grid of its own. It ends at once, silently, with ``MAIN_GUARD_EXIT``: the parent
    says what is wrong, once (``_run_pool``). (run_grid falls back to one process for a script it can see
    is unguarded, ``unguarded_main_script``; this catches what that cannot see.)"""
    import multiprocessing

    # multiprocessing sets _inheriting while a child imports __main__ (spawn._check_not_importing_main).
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        os._exit(MAIN_GUARD_EXIT)  # no cleanup to run: nothing was started


def unguarded_main_script() -> str | None:
    """``path:line`` when this call comes from the top level of a ``__main__`` script outside
    ``if __name__ == "__main__":``, which spawned workers would run again (spawn re-imports the main
    script, except a package's ``__main__``); None otherwise, or when the source cannot be read."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None:  # python -c, an interactive session: spawn has no script to run again
        return None
    name = getattr(getattr(main, "__spec__", None), "name", None)  # python -m NAME
    if (name or os.path.splitext(os.path.basename(path))[0]).rpartition(".")[2] == "__main__":
        return None  # a package's __main__ (python -m optbench): spawn does not run it again
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:  # not under the script's top level (a thread it started, a callback)
        return None
    line = frame.f_lineno
    guarded = _main_guarded_lines(frame.f_code.co_filename)
    if guarded is None or any(first <= line <= last for first, last in guarded):
        return None
    return f"{os.path.basename(frame.f_code.co_filename)}:{line}"


def _main_guarded_lines(path: str) -> list[tuple[int, int]] | None:
    """The line spans of the bodies of ``if __name__ == "__main__":`` blocks in a file (None: unreadable)."""
    import ast
    import tokenize

    try:
        with tokenize.open(path) as source:
            tree = ast.parse(source.read())
    except (OSError, SyntaxError, ValueError):
        return None
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test):
            spans.append((node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno))
    return spans


def _is_main_test(test) -> bool:
    import ast

    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    strings = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and strings == ["__main__"]


class LocalExecutor:
    """``workers`` spawned processes (default: the usable cores); 1 = run in this process.

    A worker that dies (killed by the OOM killer, a segfault in a library) takes only its task with it: the
    other tasks in flight run again on a fresh pool; a batch that was running is cut in two (both halves run
    again), a single cell runs again once and, if its worker dies ``MAX_DEATHS`` times, is recorded as a
    ``failed`` run whose reason names the signal. Committed runs are never touched.
    """

    on_start: Callable[[Task, float, bool], None] | None = None

    def __init__(self, workers: int | None = None):
        if workers is not None and workers < 1:
            raise OptbenchError(f"--workers must be >= 1, got {workers}")
        self.workers = workers or usable_cores()
        refuse_in_worker_bootstrap()

    def run(self, tasks: Sequence[Task], out: Path, on_result: OnResult) -> None:
        if min(self.workers, len(tasks)) <= 1:
            with one_torch_thread():
                for i, task in enumerate(tasks):
                    if self.on_start is not None:
                        self.on_start(task, time.monotonic(), i == 0)
                    for row in run_and_commit(task, out):
                        on_result(row)
            return
        pending, deaths, unexplained = list(tasks), {}, 0
        while pending:
            pending, killed = _run_pool(
                pending, min(self.workers, len(pending)), out, on_result, on_start=self.on_start
            )
            if pending and not killed:
                unexplained += 1
                if unexplained >= MAX_UNEXPLAINED:
                    raise PoolBroken(
                        f"worker processes keep dying ({unexplained} times) and no run can be blamed; "
                        "the runs committed so far are kept: run the same command again to resume"
                    )
            for task, exitcode in killed.items():
                deaths[task] = deaths.get(task, 0) + 1
                if len(task.configs) > 1 or deaths[task] >= MAX_DEATHS:
                    pending.remove(task)
                    pending += _after_deaths(task, exitcode, deaths[task], out, on_result)


def _after_deaths(task: Task, exitcode: int, deaths: int, out: Path, on_result: OnResult) -> list[Task]:
    """A task that killed its worker: a batch is cut in two, to run again (the culprit is found in log2(n)
    rounds, and a batch too big for memory shrinks); a cell that killed it ``MAX_DEATHS`` times is committed
    as a failed run (a cell is data) and nothing is left to run."""
    if len(task.configs) > 1:
        half = len(task.configs) // 2
        return [replace(task, configs=task.configs[:half]), replace(task, configs=task.configs[half:])]
    reason = f"its worker process {_death(exitcode)} {deaths} times running this cell" + (
        " (the OOM killer sends SIGKILL when memory runs out)" if exitcode == -signal.SIGKILL else ""
    )
    results = [_failed(config, reason, task.batched) for config in task.configs]
    commit(out, task, results)
    for result in results:
        on_result(result.summary_row())
    return []


def _death(exitcode: int) -> str:
    if exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"


def _failed(config: RunConfig, reason: str, batched: bool):
    """The RunResult of a cell that could not be run: status failed, no trace."""
    import numpy as np

    from optbench.engine.reference import RunResult
    from optbench.spec import TRACE_COLUMNS, RunSummary

    summary = RunSummary(status="failed", reason=reason, engine="batched" if batched else "reference")
    return RunResult(config, summary, {k: np.empty(0) for k in TRACE_COLUMNS if k != "run_id"})


START_POLL_S = 0.25  # how often the pool's driver looks for tasks that started (for the ETA)


def _run_pool(
    tasks: list[Task], workers: int, out: Path, on_result: OnResult, on_start=None
) -> tuple[list[Task], dict]:
    """Run ``tasks`` on a fresh pool of ``workers`` spawned processes. Returns ([], {}) when every task is in;
    if a worker died: (the tasks not finished, {task it was running: its exit code})."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    started = context.SimpleQueue()
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(str(out), os.getpid(), started)
    )
    processes = pool._processes  # no public API before 3.14: the worker objects, for their exit codes
    futures = {
        pool.submit(_run_tracked, run_and_commit, i, task, str(out)): i for i, task in enumerate(tasks)
    }
    finished: set[int] = set()
    running: dict[int, int] = {}  # pid -> the last task it started
    try:
        waiting = set(futures)
        while waiting:
            done, waiting = wait(waiting, timeout=START_POLL_S, return_when=FIRST_COMPLETED)
            _drain(started, running, tasks, on_start)  # before the results: a task starts, then ends
            for future in sorted(done, key=futures.get):
                rows = future.result()
                finished.add(futures[future])
                for row in rows:
                    on_result(row)
    except BrokenProcessPool:
        dead = {p.pid: p for p in list(processes.values())}
        pool.shutdown(wait=True)  # the pool has terminated the other workers; their exit codes are in
        if any(p.exitcode == MAIN_GUARD_EXIT for p in dead.values()):
            # Not the grid's fault nor a resumable break: the script is run again by every worker.
            raise SystemExit(f"error: {MAIN_GUARD}") from None
        _report_finished(futures, finished, on_result)
        _drain(started, running, tasks)
        blamed = _blame(running, dead, finished)
        return [t for i, t in enumerate(tasks) if i not in finished], {tasks[i]: c for i, c in blamed.items()}
    except BaseException:
        # Ctrl-C or an error: drop the queue and stop the workers now. Committed runs stay; the runs
        # in flight are lost (nothing of them is visible: their files are still dot-prefixed temps).
        alive = list((processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in alive:
            process.terminate()
        raise
    pool.shutdown(wait=False)  # every run is in; the workers' exit (~1 s with torch loaded) overlaps the rest
    return [], {}


def _report_finished(futures: dict, finished: set[int], on_result: OnResult) -> None:
    """After a break: the tasks that finished and committed before it, not yet reported."""
    for future, i in futures.items():
        if i not in finished and future.done() and future.exception() is None:
            finished.add(i)
            for row in future.result():
                on_result(row)


def _drain(started, running: dict[int, int], tasks: list[Task], on_start=None) -> None:
    """Read the tasks the workers started since the last look into ``running`` (pid -> task index)."""
    while not started.empty():
        pid, index, wall = started.get()
        cold = pid not in running
        running[pid] = index
        if on_start is not None:
            on_start(tasks[index], time.monotonic() - max(0.0, time.time() - wall), cold)


def _blame(running: dict[int, int], processes: dict, finished: set[int]) -> dict[int, int]:
    """{index of the task a dead worker was running: its exit code}. The pool stops the other workers with
    SIGTERM, so a worker that ended otherwise (SIGKILL, SIGSEGV, an exit code) died of its task.
    ``running``: pid -> the last task each worker started."""
    blamed = {}
    for pid, process in processes.items():
        code = process.exitcode
        if code not in (None, 0, -signal.SIGTERM) and pid in running and running[pid] not in finished:
            blamed[running[pid]] = code
    return blamed


# --------------------------------------------------------------------------------------------------- ray


def import_ray():
    try:
        import ray
    except ImportError:
        raise OptbenchError(RAY_MISSING) from None
    return ray


def _ray_task(task: Task):
    """Body of one Ray task: the results (traces included) go back to the driver, which commits."""
    pin_worker_to_one_thread()
    return run_task(task)


RAY_PORTS = {"ray://": 10001, "": 6379}  # Ray client, and the cluster's GCS: what ray.init dials by default


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """One line when ``--address`` is malformed or nothing answers there, before ``ray.init``: given an
    address it cannot reach, Ray's client retries for minutes and logs from C++ before it raises."""
    import socket

    if address is None or address in ("auto", "local"):
        return
    scheme = "ray://" if address.startswith("ray://") else ""
    host, sep, port = address[len(scheme) :].rpartition(":")
    if not sep:
        host, port = address[len(scheme) :], str(RAY_PORTS[scheme])
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise OptbenchError(f"--address {address!r} is not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise OptbenchError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None


class RayExecutor:
    """One Ray task per reference run, and per chunk of a batch (as many chunks as the cluster has CPUs), on
    the cluster at ``address`` (default: a local Ray started for this grid and shut down after it; an
    already initialised Ray is used as it is)."""

    workers = None
    on_start: Callable[[Task, float, bool], None] | None = None  # as tasks are submitted (Ray queues them)
    WAIT_BATCH = 32

    def __init__(self, address: str | None = None, gpus_per_run: float = 0.25):
        if not gpus_per_run > 0:
            raise OptbenchError(f"--gpus-per-run must be positive, got {gpus_per_run}")
        self.ray = import_ray()
        check_reachable(address)
        self.address, self.gpus_per_run = address, gpus_per_run

    def _resources(self, task: Task) -> dict:
        if task.device.startswith("cuda"):
            return {"num_gpus": self.gpus_per_run, "num_cpus": 0}
        return {"num_cpus": 1}

    def _starts(self, tasks: list[Task]):
        """Ray does not say when a queued task starts: for the ETA, the first as many as the cluster has
        slots start at submission, and each result starts the next in submission order (Ray's rough order).
        Returns the function to call after each result."""
        queue = list(reversed(tasks))
        resources = self.ray.cluster_resources()
        slots = max(1, int(resources.get("CPU", 1)) + int(resources.get("GPU", 0) / self.gpus_per_run))

        def next_starts(count: int = 1) -> None:
            now = time.monotonic()
            for _ in range(min(count, len(queue))):
                if self.on_start is not None:
                    self.on_start(queue.pop(), now, False)

        next_starts(slots)
        return next_starts

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
            env = worker_env()  # --allow-imports: Ray workers do not inherit this process's environment
            extra = {"runtime_env": {"env_vars": env}} if env else {}
            pending = {remote.options(**self._resources(t), **extra).remote(t): t for t in tasks}
            next_starts = self._starts(tasks)
            try:
                while pending:
                    ready, _ = ray.wait(
                        list(pending), num_returns=min(self.WAIT_BATCH, len(pending)), timeout=0.2
                    )
                    for ref in ready:
                        task = pending.pop(ref)
                        results = ray.get(ref)
                        commit(out, task, results)
                        next_starts()
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
