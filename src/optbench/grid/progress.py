"""How long a running grid has to go, from its tasks' start and finish times (the ETA of `bench grid`).

A grid runs as executor tasks (a batch of cells for the batched engine, one cell for the reference engine)
on ``workers`` parallel slots; a batch reports all its cells at once, when it ends. The estimate:

- pace: config-steps per worker-second over the tasks finished in this call (a cell of 1000 steps weighs
  ten of 100), batched and reference tasks apart (a batched config-step costs far less; a kind with no
  finished task borrows the pooled pace, and the ETA says it is a bound: ``ETA >0:01:10``). A process's
  first task pays start-up costs (measured: 1.3 s for a batch that takes 0.2 s after it), so it is no
  basis unless it took over ``COLD_BASIS_S``. A running task that has already run longer than the pace
  gives it counts as if it finished now, so the pace slows while it overruns instead of the ETA sitting
  at 0.
- what is left: each running task's expected time less the time it has run, then the tasks not started,
  handed in plan order to the first free slot (the local pool's FIFO); the ETA is when the last slot ends.
- no number (``estimate`` is None) before there is a pace to go by.

``estimate`` is a pure function of the tasks' times; ``Pace`` keeps them as the executor reports starts
and the runner finished runs (a batch cut after its worker died starts as new tasks, taking its cells).
"""

from __future__ import annotations

import datetime
import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass

MIN_DURATION_S = 1e-3  # a finished task's measured time is at least this (a clock tick is no pace)
EXACT_TAIL = 2048  # waiting tasks scheduled one by one; those before are spread evenly (a render stays fast)
COLD_BASIS_S = 30.0  # a first task this long is a basis: start-up (a second or two) is then a small part
REFRESH_S = 0.5  # the progress bar asks ~10 times a second; the text is recomputed at most this often


@dataclass
class Work:
    """One executor task as the estimate sees it (times on one monotonic clock; None: not yet)."""

    cells: int
    steps: int  # config-steps: the sum of its cells' steps
    batched: bool
    started: float | None = None
    finished: float | None = None
    cells_in: int = 0  # its runs reported so far
    cold: bool = False  # its process's first task (it may pay start-up costs the others do not)

    @property
    def running(self) -> bool:
        return self.started is not None and self.finished is None


def estimate(works: Sequence[Work], workers: int | None, now: float) -> float | None:
    """Seconds until every task has finished, or None while there is no basis for a pace yet.
    ``workers``: parallel slots (None: as many as have run at once so far, for Ray)."""
    pace = _pace(works, now)
    if pace is None:
        return None
    running = [w for w in works if w.running]
    slots = [max(0.0, w.steps / pace[w.batched] - (now - w.started)) for w in running]
    waiting = [w for w in works if w.started is None and w.finished is None]
    if workers is None:
        workers = max(1, _peak(works))
    free = max(0, workers - len(running))
    slots += [0.0] * min(free, len(waiting))
    if not slots:  # nothing running and nothing waiting
        return 0.0
    if len(waiting) > EXACT_TAIL:  # a long queue: its head spread evenly, its tail scheduled one by one
        head, waiting = waiting[:-EXACT_TAIL], waiting[-EXACT_TAIL:]
        spread = sum(w.steps / pace[w.batched] for w in head) / len(slots)
        slots = [s + spread for s in slots]
    heapq.heapify(slots)  # with more running than workers, the waiting follow the first to end
    for work in waiting:
        heapq.heapreplace(slots, slots[0] + work.steps / pace[work.batched])
    return max(slots)


def _peak(works: Sequence[Work]) -> int:
    """The most tasks that have been running at one time."""
    edges = sorted(
        [(w.started, 1) for w in works if w.started is not None]
        + [(w.finished, -1) for w in works if w.started is not None and w.finished is not None]
    )
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def _pace(works: Sequence[Work], now: float) -> dict[bool, float] | None:
    """{batched: config-steps per worker-second} over the finished tasks, overrunning ones included."""
    done = [w for w in works if w.finished is not None and w.started is not None]
    basis = [w for w in done if not w.cold] or [w for w in done if w.finished - w.started >= COLD_BASIS_S]
    samples = [(w.batched, w.steps, max(MIN_DURATION_S, w.finished - w.started)) for w in basis]
    if not samples:
        return None
    pace = _rates(samples)
    overdue = [
        (w.batched, w.steps, now - w.started)
        for w in works
        if w.running and now - w.started > w.steps / pace[w.batched]
    ]
    return _rates(samples + overdue) if overdue else pace


def _rates(samples: list[tuple[bool, int, float]]) -> dict[bool, float]:
    pooled = sum(s for _, s, _ in samples) / sum(t for _, _, t in samples)
    rates = {}
    for kind in (True, False):
        steps = sum(s for b, s, _ in samples if b == kind)
        seconds = sum(t for b, _, t in samples if b == kind)
        rates[kind] = steps / seconds if steps > 0 else pooled
    return {kind: rate if rate > 0 else pooled or 1.0 for kind, rate in rates.items()}


def running_text(works: Sequence[Work]) -> str:
    """What is in flight: ``batch 3 of 8 running``, ``batches 3, 4 of 8 running``, ``2 runs running``."""
    batches = [w for w in works if w.batched]  # in plan order: the pool starts them in that order
    ordinals = [i for i, w in enumerate(batches, 1) if w.running]
    singles = sum(1 for w in works if not w.batched and w.running)
    parts = []
    if len(ordinals) == 1:
        parts.append(f"batch {ordinals[0]} of {len(batches)}")
    elif 1 < len(ordinals) <= 4:
        parts.append(f"batches {', '.join(map(str, ordinals))} of {len(batches)}")
    elif ordinals:
        parts.append(f"{len(ordinals)} of {len(batches)} batches")
    if singles:
        parts.append(f"{singles} run{'s' if singles > 1 else ''}")
    return " + ".join(parts) + " running" if parts else ""


def eta_text(works: Sequence[Work], workers: int | None, now: float) -> str:
    """The progress bar's ETA: ``ETA 0:00:39 · batch 3 of 8 running``; ``ETA: measuring`` before a pace."""
    seconds, bound = estimate(works, workers, now), _bound(works)
    if seconds is None or (seconds < 1 and bound):  # no pace, or a bound that says nothing
        head = "ETA: measuring" if any(w.running for w in works) else "ETA: starting workers"
    elif seconds < 1 and any(w.finished is None for w in works):
        head = "ETA: finishing"  # every estimate is spent, and something still runs
    else:
        head = f"ETA {bound}{datetime.timedelta(seconds=round(seconds))}"
    running = running_text(works)
    return f"{head} · {running}" if running else head


def _bound(works: Sequence[Work]) -> str:
    """``>`` while single runs are left and none has been timed (they borrow the batches' pace, and a
    batched config-step costs less), ``<`` in the reverse case, ``""`` once every kind left is timed."""
    timed = {w.batched for w in works if w.finished is not None and w.started is not None}
    left = {w.batched for w in works if w.finished is None} - timed
    return "" if not left else ">" if False in left else "<"


class Pace:
    """A grid's tasks and their times, as the executor starts them and their runs come in (this call's
    tasks only: runs resumed from the folder are not work left)."""

    def __init__(self, tasks: Sequence, workers: int | None):
        self.workers = workers
        self.works: list[Work] = []
        self._owner: dict[str, Work] = {}  # run_id -> the task that runs it
        self._by_task: dict = {}
        self._events = 0  # starts and finishes so far: a cached text is stale after one
        self._text: tuple | None = None
        for task in tasks:
            self._add(task)

    def _add(self, task) -> Work:
        work = Work(len(task.configs), sum(int(c.steps) for c in task.configs), task.batched)
        for config in task.configs:
            self._owner[config.run_id()] = work
        self._by_task[task] = work
        self.works = [*self.works, work]  # a new list: the progress bar's thread may be reading the old
        return work

    def started(self, task, at: float | None = None, cold: bool = False) -> None:
        """The executor started ``task`` (at ``at`` on ``time.monotonic``'s clock; default now); ``cold``:
        as its process's first task."""
        work = self._by_task.get(task)
        if work is None:  # a part of a planned task (cut after a worker died, or for Ray's CPUs)
            work = self._split_off(task)
        work.started = time.monotonic() if at is None else at
        work.finished, work.cells_in, work.cold = None, 0, cold
        self._events += 1

    def _split_off(self, task) -> Work:
        gone = []
        for config in task.configs:
            old = self._owner.get(config.run_id())
            if old is not None:
                old.cells -= 1
                old.steps -= int(config.steps)
                if old.cells <= 0:
                    gone.append(old)
        work = self._add(task)
        if gone:
            self.works = [w for w in self.works if all(w is not g for g in gone)]
        return work

    def finished_run(self, run_id: str, at: float | None = None) -> None:
        """A run came in; its task is finished once all of its runs are."""
        work = self._owner.get(run_id)
        if work is None:
            return
        work.cells_in += 1
        self._events += 1
        if work.cells_in >= work.cells:
            work.finished = time.monotonic() if at is None else at

    def eta(self, now: float | None = None) -> float | None:
        return estimate(self.works, self.workers, time.monotonic() if now is None else now)

    def text(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if self._text is None or not 0 <= now - self._text[0] < REFRESH_S or self._text[2] != self._events:
            self._text = (now, None, self._events, eta_text(self.works, self.workers, now))
        return self._text[3]
