"""One writing command at a time per results folder, and none before the last grid's workers are gone.

Two commands writing into one folder (two ``bench grid``, or a grid and an ``lr-sweep``) would each run the
missing cells and commit them twice, and each one's clean-up (``store.drop_uncommitted``, the ``--force``
purge) would delete the other's files in flight. A grid killed with ``kill -9`` leaves its pool workers alive for up to a second
(``executors._exit_when_orphaned``), and one of them can still write a trace file after a restarted grid
has cleaned the folder. Two advisory locks (``flock``: the kernel drops them when their process dies,
``kill -9`` included) rule both out:

- ``.grid.lock``: held exclusively by the process running a writing command (grid, lr-sweep, lr-find,
  schedules, init-report, amp, verify --repair), for the whole command. A second one fails at once with a
  one-line error naming the holder's command and pid. Re-entrant within a process (the CLI and the Python
  function it calls may both take it).
- ``.writers.lock``: held shared by every pool worker for its lifetime. A grid that has taken
  ``.grid.lock`` then waits (up to ``WRITERS_WAIT_S``) until it can take this one exclusively, i.e. until
  the workers of any earlier grid have exited, before it looks inside the folder.

The lock files stay in the folder (deleting a lock file another process may have open would break the
lock). On systems without ``fcntl`` (Windows) nothing is locked. Ray tasks write nothing: their driver
commits, under ``.grid.lock``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from optbench.errors import OptbenchError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

GRID_LOCK = ".grid.lock"
WRITERS_LOCK = ".writers.lock"
WRITERS_WAIT_S = 30.0  # an orphaned worker exits within ~1 s; a busy machine may take longer
POLL_S = 0.05

_writer_fd: int | None = None  # a worker's shared lock, held until the process exits
_held: dict[str, int] = {}  # folders this process holds (real path -> nesting depth)


@contextlib.contextmanager
def exclusive(out: Path, command: str = "grid") -> Iterator[None]:
    """Hold ``out`` (an existing folder) for one command: fail if another command holds it, wait for the
    workers of an earlier grid to exit. ``command`` names this one in the error another command would get."""
    key = os.path.realpath(out)
    if fcntl is None or key in _held:  # nothing to lock, or already ours
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _release(key)
        return
    fd = _open(Path(out) / GRID_LOCK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, holder = os.pread(fd, 64, 0).decode(errors="replace").strip().partition(" ")
            raise OptbenchError(
                f"another {holder or 'grid'} (pid {pid or '?'}) is writing to {out}; wait for it to finish "
                "or choose another --out"
            ) from None
        except OSError as err:  # a file system without flock
            raise OptbenchError(f"cannot lock {out}: {err.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}".encode(), 0)
        _wait_for_writers(Path(out))
        _held[key] = 1
        try:
            yield
        finally:
            _release(key)
    finally:
        os.close(fd)  # releases the lock


def _release(key: str) -> None:
    _held[key] -= 1
    if not _held[key]:
        del _held[key]


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # not writable, or the folder was just removed by a failing grid
        raise OptbenchError(f"cannot lock {path.parent}: {err.strerror}") from None


def _wait_for_writers(out: Path) -> None:
    fd = _open(out / WRITERS_LOCK)
    try:
        deadline = time.monotonic() + WRITERS_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return  # no earlier worker is alive; closing the file releases the lock for our own
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OptbenchError(
                        f"worker processes of an earlier grid are still writing to {out} after "
                        f"{WRITERS_WAIT_S:.0f} s (fuser {out / WRITERS_LOCK} lists them); stop "
                        "them or choose another --out"
                    ) from None
                time.sleep(POLL_S)
    finally:
        os.close(fd)


def hold_as_writer(out: str | Path) -> None:
    """In a pool worker, before it writes anything: a shared lock on ``out``, released when the process exits."""
    global _writer_fd
    if fcntl is None or _writer_fd is not None:
        return
    fd = _open(Path(out) / WRITERS_LOCK)
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a starting grid checks for earlier workers
    _writer_fd = fd
