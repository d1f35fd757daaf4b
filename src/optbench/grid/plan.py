"""Planning a grid: which cells run batched, in which tasks, and under which exactness contract.

- ``auto`` batches every cell the batched engine supports (CPU and CUDA) in groups of at least
  ``MIN_BATCH`` cells that share a ``batch_key``, and runs the rest one by one on the reference engine;
  ``batched`` batches every supported cell; ``reference`` runs every cell through ``engine.run``.
- A CPU batch is cut into up to ``workers`` chunks (every worker gets a share). A CUDA batch is cut into
  tensor programs that fit the device's free memory (``batched.cells_per_program``), each one task and one
  commit; a chunk never goes to two processes (each would need a CUDA context of its own).
- ``exactness``: ``auto`` (exact on CPU, fast on CUDA), ``exact`` (CPU only: torch.optim's bits) or
  ``fast`` (every product, activation and loss batched; agreement within torch's own implementation
  spread). docs/batched-engine.md states the contract.
"""

from __future__ import annotations

from optbench.errors import OptbenchError
from optbench.spec import RunConfig, parse_spec

ENGINES = ("auto", "batched", "reference")
EXACTNESS = ("auto", "exact", "fast")
MIN_BATCH = 2  # auto: a group this small gains nothing from batching
# Device types auto batches: those the batched engine's tests cover (tests/test_batched*.py; the CUDA ones
# run on a GPU through scripts/gpu-check).
AUTO_BATCHED_DEVICES = ("cpu", "cuda")


def check_exactness(exactness: str, configs: list[RunConfig], engine: str) -> None:
    """One clear error for an exactness no batch could keep, before anything runs."""
    if exactness not in EXACTNESS:
        raise OptbenchError(f"unknown exactness {exactness!r}; valid: {', '.join(EXACTNESS)}")
    if exactness == "exact" and engine != "reference":
        devices = sorted({c.device for c in configs if _device_type(c.device) != "cpu"})
        if devices:
            raise OptbenchError(
                f"--exactness exact is a CPU contract, and the grid has cells on {', '.join(devices)}: there "
                "torch.optim takes its foreach kernels, so no engine gives the reference's bits; use "
                "--exactness auto or fast"
            )


def plan_tasks(configs: list[RunConfig], engine: str, workers: int, exactness: str = "auto") -> list:
    """Cut the cells into executor tasks: batches of cells the batched engine can run together, then one
    task per remaining cell."""
    from optbench.grid.executors import Task

    if engine == "reference" or not configs:
        return [Task((c,)) for c in configs]
    from optbench.engine import batched

    groups: dict[tuple, list[RunConfig]] = {}
    singles: list[RunConfig] = []
    for config in configs:
        if engine == "auto" and _device_type(config.device) not in AUTO_BATCHED_DEVICES:
            singles.append(config)
        elif batched.unsupported_reason(config) is None:
            groups.setdefault(batched.batch_key(config), []).append(config)
        else:
            singles.append(config)
    tasks = []
    for group in groups.values():
        if engine == "auto" and len(group) < MIN_BATCH:
            singles.extend(group)
        elif _device_type(group[0].device) == "cpu":
            tasks += Task(tuple(group), batched=True, exactness=exactness).split(workers)
        else:
            size = batched.cells_per_program(group[0])
            tasks += [
                Task(tuple(group[i : i + size]), batched=True, exactness=exactness)
                for i in range(0, len(group), size)
            ]
    return tasks + [Task((c,)) for c in singles]


def _device_type(device: str) -> str:
    """``cuda:1`` -> ``cuda`` (without importing torch)."""
    return device.split(":", 1)[0]


def ship_problems(configs: list[RunConfig], runner, say) -> tuple:
    """The problems registered from Python (``optbench.register_problem``) that these cells use, as
    (name, factory, summary) for the tasks to carry to worker processes, which do not have them (Ray
    pickles any function). A factory that a spawned local worker cannot import (a lambda, a nested
    function, one defined in an interactive session) keeps the grid in this process, with one line."""
    from optbench.registry.modelproblem import registered_problems, travels

    registered = registered_problems()
    if not registered:
        return ()
    used = sorted({parse_spec(c.problem, what="problem").name for c in configs} & set(registered))
    stuck = [name for name in used if not travels(registered[name][0])]
    if stuck and runner.workers is not None and runner.workers > 1:
        say(
            f"note: problem {stuck[0]!r} was registered with a factory that worker processes cannot import "
            "(a lambda, a nested function or one defined interactively): the grid runs in this process"
        )
        runner.workers = 1
    return tuple((name, *registered[name]) for name in used)
