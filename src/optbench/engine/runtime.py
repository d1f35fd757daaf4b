"""Process-level torch settings shared by the executors, the probes and the benchmarks: the one home of
thread pinning."""

from __future__ import annotations

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
