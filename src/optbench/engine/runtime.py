"""Process-level torch settings shared by the executors, the probes and the benchmarks: the one home of
thread pinning."""

from __future__ import annotations

import contextlib
import os
from contextlib import contextmanager


@contextmanager
def torch_threads(num_threads: int | None):
    """Run the block with ``torch.set_num_threads(num_threads)`` (None: leave the count as it is), restoring
    the previous count afterwards, also when the block raises."""
    import torch

    before = torch.get_num_threads()
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        yield
    finally:
        torch.set_num_threads(before)


def one_torch_thread():
    """Run torch ops on one thread (``torch_threads(1)``).

    Tiny ops are not worth splitting, and on a busy machine an intra-op thread pool waits for
    descheduled threads; one thread also makes in-process runs match pool workers (which use one).
    """
    return torch_threads(1)


def pin_worker_to_one_thread() -> None:
    """For the whole of a worker process (pool or Ray): one intra-op and one inter-op thread, as
    ``one_torch_thread`` gives a block; N workers on N cores then never oversubscribe them."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only settable before inter-op work has started
        torch.set_num_interop_threads(1)
