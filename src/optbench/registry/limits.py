"""Caps checked up front, as ``--max-cells`` caps cells: the steps of a run and the size of a model, against
the memory of the machine that would hold them. A typo (``--steps 10000000000000``, ``--width 200000``)
is one line before anything runs, not a folder of cells failed with "Unable to allocate 72.8 TiB".

The costs, measured with the reference engine on CPU (torch 2.13; peak RSS growth over a long run):

* per step of a run: 2.0 KB (quadratic, 200,000 steps), 7.4 KB (mlp-regression, 20,000 steps): the
  per-step values kept until the end of the run (losses, norms, the point; a minibatch index) and the
  trace built from them. ``RUN_BYTES_PER_STEP`` = 8 KiB covers both.
* an MLP: float32 weights, their gradients and up to two optimizer buffers (Adam's moments) = 16 bytes per
  parameter; activations, their gradients and the pre-activations of the largest forward pass; the data.
* the init report: ``depth`` weights of width x width float32 and their gradients (8·w² bytes per layer)
  plus the outputs kept per layer.
"""

from __future__ import annotations

import functools
import inspect
import os

from optbench.errors import OptbenchError
from optbench.spec import parse_spec

RUN_BYTES_PER_STEP = 8 * 1024
MLP_BYTES_PER_PARAMETER = 16  # weight, gradient, two optimizer buffers; float32


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; 8e13 -> '72.8 TiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@functools.cache
def host_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


@functools.cache
def memory_bytes(device: str = "cpu") -> int | None:
    """What one run on ``device`` may hold: the host's memory, and for CUDA also the GPU's (per-step values
    stay on the run's device)."""
    host = host_memory_bytes()
    if not device.startswith("cuda"):
        return host
    import torch

    index = int(device.partition(":")[2] or torch.cuda.current_device())
    gpu = torch.cuda.get_device_properties(index).total_memory
    return gpu if host is None else min(host, gpu)


def check_steps(steps: int, device: str = "cpu") -> None:
    """Refuse a run whose per-step values alone would not fit in memory."""
    memory = memory_bytes(device)
    if memory is None or steps * RUN_BYTES_PER_STEP <= memory:
        return
    raise OptbenchError(
        f"--steps {steps}: a run keeps about {human_bytes(RUN_BYTES_PER_STEP)} per step in memory, "
        f"{human_bytes(steps * RUN_BYTES_PER_STEP)} in all, more than the {human_bytes(memory)} of "
        f"{_where(device)}; at most {memory // RUN_BYTES_PER_STEP:,} steps fit"
    )


def _where(device: str) -> str:
    return "this machine" if not device.startswith("cuda") else f"{device} (or this machine)"


@functools.cache
def mlp_sizes(problem: str) -> dict | None:
    """width, depth, in_dim, out_dim, n_train, n_val of an MLP problem spec (None: a toy function, or a
    size that is not a whole number, which the stand-in build reports)."""
    from optbench.registry.problems import is_toy, problem_entry

    if is_toy(problem):
        return None
    spec = parse_spec(problem, what="problem")
    entry = problem_entry(spec.name)
    if entry.meta.get("user"):
        return None  # a user's model: its size is known once built
    params = inspect.signature(entry.factory).parameters
    given = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
    given.update(entry.meta.get("data_sizes", {}))  # a data set's in_dim, classes, n_train, n_val
    given.update(spec.kw)
    sizes = {
        "width": given.get("width"),
        "depth": given.get("depth"),
        "in_dim": given.get("in_dim", 2),  # the spirals are 2-D
        "out_dim": given.get("classes", 1),  # regression: one output
        "n_train": given.get("n_train"),
        "n_val": given.get("n_val"),
    }
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes.values()):
        return None
    return {k: max(v, 0) for k, v in sizes.items()}


def mlp_parameters(width: int, depth: int, in_dim: int, out_dim: int) -> int:
    """Weights and biases of ``depth`` hidden Linear(width) layers and the head."""
    if depth == 0:
        return (in_dim + 1) * out_dim
    return (in_dim + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * out_dim


def mlp_run_bytes(problem: str, batch_size: int | None, steps: int) -> int | None:
    """Estimated peak memory of one run of an MLP problem (None for a toy function)."""
    sizes = mlp_sizes(problem)
    if sizes is None:
        return None
    width, depth = sizes["width"], sizes["depth"]
    parameters = mlp_parameters(width, depth, sizes["in_dim"], sizes["out_dim"])
    rows = max(min(batch_size or 64, sizes["n_train"]), sizes["n_val"])  # the largest forward pass
    activations = 4 * 3 * rows * max(width, sizes["out_dim"]) * (depth + 1)
    data = 4 * 2 * (sizes["n_train"] + sizes["n_val"]) * (sizes["in_dim"] + sizes["out_dim"])
    return MLP_BYTES_PER_PARAMETER * parameters + activations + data + steps * RUN_BYTES_PER_STEP


def check_run_size(problem: str, batch_size: int | None, steps: int, device: str) -> None:
    """Refuse a run that cannot fit: too many steps, or an MLP too large for the memory of ``device``."""
    check_steps(steps, device)
    memory = memory_bytes(device)
    needed = mlp_run_bytes(problem, batch_size, steps)
    if memory is None or needed is None or needed <= memory:
        return
    sizes = mlp_sizes(problem)
    parameters = mlp_parameters(sizes["width"], sizes["depth"], sizes["in_dim"], sizes["out_dim"])
    raise OptbenchError(
        f"problem {problem!r}: one run needs about {human_bytes(needed)} of memory ({parameters:,} "
        f"parameters at {MLP_BYTES_PER_PARAMETER} bytes, activations, data, per-step values), more than "
        f"the {human_bytes(memory)} of {_where(device)}"
    )


def init_stack_bytes(depth: int, width: int, batch: int) -> int:
    """Peak memory of the init report's stack: weights and their gradients (8·w² bytes per layer) and each
    layer's output kept for the statistics (twice: the output and autograd's copy)."""
    return depth * (8 * width * width + 8 * batch * width)


def check_init_stack(depth: int, width: int, batch: int) -> None:
    memory = host_memory_bytes()
    needed = init_stack_bytes(depth, width, batch)
    if memory is None or needed <= memory:
        return
    raise OptbenchError(
        f"--depth {depth} --width {width} --batch {batch}: the stack needs about {human_bytes(needed)} of "
        f"memory ({depth} weights of {width}x{width} float32 and their gradients), more than the "
        f"{human_bytes(memory)} of this machine"
    )
