"""Process-level torch settings shared by the executors and the probes."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def one_torch_thread():
    """Run torch ops on one thread, restoring the previous count afterwards.

    Tiny ops are not worth splitting, and on a busy machine an intra-op thread pool waits for
    descheduled threads; one thread also makes in-process runs match pool workers (which use one).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
