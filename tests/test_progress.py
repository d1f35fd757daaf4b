"""The grid's ETA (grid/progress.py) on synthetic task timelines, and the main-guard fallback of scripts."""

from __future__ import annotations

import heapq
import random
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from optbench.grid.progress import Pace, Work, _bound, estimate, eta_text, running_text

FACTOR = 2.0  # once a task has finished, the ETA is within this factor of the time truly left, or
SLACK = 0.3  # near the end, within this share of the longest task's time (tasks vary +-25% here)


def _simulate(plan, workers, rate, jitter=0.0, seed=0, late=0.0):
    """The true timeline of ``plan`` [(cells, steps, batched)] on ``workers`` FIFO slots: each task takes
    steps / rate[batched] seconds, times a random factor in [1 - jitter, 1 + jitter]; ``late``: every
    slot starts this late (a pool's start-up)."""
    rng = random.Random(seed)
    free = [late] * workers
    works = []
    for cells, steps, batched in plan:
        start = heapq.heappop(free)
        took = steps / rate[batched] * (1 + rng.uniform(-jitter, jitter))
        works.append(Work(cells, steps, batched, started=start, finished=start + took))
        heapq.heappush(free, start + took)
    return works


def _seen_at(works, now):
    """What the estimator knows at ``now``: the starts and finishes up to then."""
    return [
        replace(
            w,
            started=w.started if w.started <= now else None,
            finished=w.finished if w.finished <= now else None,
        )
        for w in works
    ]


def _check_timeline(works, workers, points=400):
    """At every sample point: no number before the first finish, then within FACTOR of the truth (or
    'finishing' in the last second), counting down between events, never stuck at 0 with work left."""
    end = max(w.finished for w in works)
    first = min(w.finished for w in works)
    worst = 1.0
    previous = None
    longest = max(w.finished - w.started for w in works)
    for k in range(points):
        now = end * k / points
        seen = _seen_at(works, now)
        eta = estimate(seen, workers, now)
        truth = end - now
        if now < first:
            assert eta is None, (now, eta)
            assert eta_text(seen, workers, now).startswith("ETA: measuring") or now < min(
                w.started for w in works
            )
            continue
        assert eta is not None
        bound = _bound(seen)
        if bound == ">":  # single runs left, none timed: a lower bound
            text = eta_text(seen, workers, now)
            assert eta <= truth * FACTOR and text.startswith(("ETA >", "ETA: measuring")), (now, eta)
        elif abs(eta - truth) > SLACK * longest:
            ratio = max(eta / truth, truth / eta) if eta > 0 else float("inf")
            worst = max(worst, ratio)
            assert ratio <= FACTOR, (now, eta, truth)
        if previous is not None and previous[1] == _events(seen) and previous[2] > 0.5:
            # Between events the ETA moves: down as time passes, up while a task overruns its pace.
            assert abs(eta - previous[2]) > 1e-6, ("a plateau", now, eta)
        previous = (now, _events(seen), eta)
    return worst


def _events(seen):
    return sum(w.started is not None for w in seen) + sum(w.finished is not None for w in seen)


@pytest.mark.parametrize("seed", range(5))
def test_two_workers_with_unequal_batches_stay_within_the_stated_factor(seed):
    # The QA repro's shape: 8 batches of 6 cells, 100 or 800 steps, on 2 workers; batched config-steps
    # run at 900/s per worker, +-25% from batch to batch.
    plan = [(6, 6 * steps, True) for steps in (100, 100, 100, 100, 800, 800, 800, 800)]
    works = _simulate(plan, workers=2, rate={True: 900.0, False: 90.0}, jitter=0.25, seed=seed)
    assert _check_timeline(works, workers=2) <= FACTOR


def test_single_runs_after_batches_are_a_lower_bound_until_one_is_timed():
    """6 reference runs after the batches, at a tenth of the batches' pace per config-step: until one has
    finished the ETA says ``>`` (it is short by their unknown cost), then it is within the factor."""
    plan = [(6, 6 * steps, True) for steps in (100, 100, 800, 800)] + [(1, 300, False)] * 6
    works = _simulate(plan, workers=2, rate={True: 900.0, False: 90.0}, jitter=0.25, seed=1)
    assert _check_timeline(works, workers=2) <= FACTOR


def test_a_late_resume_counts_only_the_work_left():
    """A resumed grid: the runs already in the folder are no work; what is left (here the long cells,
    and the pool starting late) is timed from this call's own first tasks."""
    plan = [(16, 16 * 800, True)] * 3 + [(1, 800, False)] * 4
    works = _simulate(plan, workers=2, rate={True: 2000.0, False: 400.0}, jitter=0.2, seed=2, late=3.0)
    assert _check_timeline(works, workers=2) < FACTOR


def test_no_plateau_while_every_worker_runs_a_batch():
    """500 cells cut into 2 chunks for 2 workers: nothing finishes until the end, so there is no number
    to show; the bar says what runs instead of a frozen or wild ETA."""
    works = [
        Work(250, 250 * 200, True, started=1.0),
        Work(250, 250 * 200, True, started=1.2),
    ]
    for now in (1.5, 10.0, 60.0):
        assert estimate(works, 2, now) is None
        assert eta_text(works, 2, now) == "ETA: measuring · batches 1, 2 of 2 running"
    assert eta_text([Work(1, 10, False)], 2, 0.0) == "ETA: starting workers"


def test_an_overrunning_task_slows_the_pace_instead_of_sitting_at_zero():
    works = [
        Work(6, 600, True, started=0.0, finished=1.0),  # 600 config-steps/s
        Work(6, 600, True, started=0.0),  # expected at 1 s, still running at 5 s
        Work(6, 600, True),
    ]
    # At 1.5 s the pace is (600 + 600) / (1 + 1.5) = 480 steps/s: the waiting batch takes 1.25 s on the
    # free worker; at 5 s it is 1200 / 6 = 200 steps/s, so 3 s.
    assert estimate(works, 2, 1.5) == pytest.approx(1.25)
    assert estimate(works, 2, 5.0) == pytest.approx(3.0)


def test_a_process_first_task_is_no_basis_unless_it_is_long():
    """A worker's first task pays start-up (measured: 1.3 s for a batch that takes 0.2 s warm): the QA
    repro showed 6/48 with an ETA of minutes when 4 s were left. No number until a warm task is in."""
    works = [
        Work(6, 600, True, started=0.0, finished=1.3, cold=True),
        Work(6, 4800, True, started=0.0, cold=True),
        Work(6, 600, True, started=1.3),
        Work(6, 600, True),
    ]
    assert estimate(works, 2, 1.4) is None
    assert eta_text(works, 2, 1.4) == "ETA: measuring · batches 2, 3 of 4 running"
    works[2].finished = 1.5  # 3000 config-steps per second, warm
    # The 800-step batch: 4800 / 3000 = 1.6 s from 0, so 0.1 s left; the last batch: 0.2 s on the free worker.
    assert estimate(works, 2, 1.5) == pytest.approx(0.2)
    works[0].finished, works[2].finished = 40.0, None  # a first task of 40 s is a basis
    assert estimate(works, 2, 40.0) is not None


def test_running_text_names_what_runs():
    batch = [Work(6, 600, True) for i in range(1, 9)]
    batch[2].started = 0.0
    assert running_text(batch) == "batch 3 of 8 running"
    batch[3].started = 0.0
    assert running_text(batch) == "batches 3, 4 of 8 running"
    assert running_text([*batch, Work(1, 10, False, started=0.0)]) == "batches 3, 4 of 8 + 1 run running"
    for w in batch:
        w.started = 0.0
    assert running_text(batch) == "8 of 8 batches running"


def test_pace_follows_the_executor_and_a_batch_cut_after_a_death():
    from optbench.grid.executors import Task
    from optbench.spec import RunConfig

    cells = tuple(RunConfig(lr=lr, steps=100) for lr in (0.1, 0.2, 0.3, 0.4))
    whole = Task(cells, batched=True)
    single = Task((RunConfig(lr=0.5, steps=400),))
    pace = Pace([whole, single], workers=2)
    assert pace.eta(0.0) is None and pace.text(0.0) == "ETA: starting workers"
    pace.started(single, at=0.5)
    pace.started(whole, at=0.0)
    assert pace.text(0.6) == "ETA: measuring · batch 1 of 1 + 1 run running"
    first, second = replace(whole, configs=cells[:2]), replace(whole, configs=cells[2:])  # its worker died
    pace.started(first, at=1.0)
    pace.started(second, at=1.5)
    assert sorted(w.cells for w in pace.works) == [1, 2, 2]  # the whole batch gave its cells to its halves
    for config in cells[:2]:
        pace.finished_run(config.run_id(), at=2.0)  # 200 config-steps in 1 s
    # The second half: 200 steps at 200/s from 1.5 s; the single (pooled pace): 400 steps from 0.5 s.
    assert pace.eta(2.0) == pytest.approx(0.5)
    assert pace.text(2.0) == "ETA: measuring · batch 2 of 2 + 1 run running"  # no run timed


# ------------------------------------------------------------------------------------- the main guard

NO_GUARD = """
from optbench.grid import run_grid
run_grid({{"optimizer": ["sgd", "adam"], "lr": [0.01, 0.1], "steps": 20, "problem": ["mlp-classification"]}},
         out={out!r}, workers=2)
"""


def _python(script: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(Path(__file__).parents[1] / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_a_script_without_a_main_guard_runs_in_process_with_one_line(tmp_path):
    from optbench import store

    script = tmp_path / "noguard.py"
    script.write_text(NO_GUARD.format(out=str(tmp_path / "ng")))
    began = time.monotonic()
    result = _python(script)
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "noguard.py:3" in lines[0] and 'if __name__ == "__main__":' in lines[0]
    assert "Traceback" not in result.stderr and "resume" not in result.stderr
    runs = store.read_runs(tmp_path / "ng")
    assert len(runs) == 4 and (runs["status"] == "ok").all()  # every cell once, none run by a child
    assert store.read_manifest(tmp_path / "ng")["workers"] == 1
    assert took < 20  # measured 4.8 s: 2 s of imports and 4 small runs


@pytest.mark.slow
def test_a_worker_that_re_runs_the_script_ends_the_grid_with_one_line(tmp_path):
    """What the fallback cannot see (here a script that fakes its own __name__, so the guard passes in
    the workers too): each worker exits at once, and the grid stops with one line, not a resume hint."""
    script = tmp_path / "fooled.py"
    body = textwrap.indent(NO_GUARD.format(out=str(tmp_path / "f")).strip(), "    ")
    script.write_text(f'__name__ = "__main__"\nif __name__ == "__main__":\n{body}\n')
    began = time.monotonic()
    result = _python(script)
    took = time.monotonic() - began
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {_main_guard()}"]
    assert took < 20  # measured 5.8 s: the parent's imports, its plan and 2 workers that end at once
    assert not (tmp_path / "f").exists()  # nothing was committed, so the folder made for it went again


def _main_guard() -> str:
    from optbench.grid.executors import MAIN_GUARD

    return MAIN_GUARD


def test_the_guard_is_read_from_the_script(tmp_path, monkeypatch):
    from optbench.grid.executors import _main_guarded_lines

    script = tmp_path / "s.py"
    script.write_text('import x\nif __name__ == "__main__":\n    x.run()\n    x.more()\nx.top()\n')
    assert _main_guarded_lines(str(script)) == [(3, 4)]
    script.write_text("if '__main__' == __name__:\n    pass\nif __name__ != '__main__':\n    pass\n")
    assert _main_guarded_lines(str(script)) == [(2, 2)]
    assert _main_guarded_lines(str(tmp_path / "missing.py")) is None
