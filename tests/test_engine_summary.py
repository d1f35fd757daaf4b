"""engine/summary.py: the trace -> summary both engines use, against closed forms and the reference engine."""

from __future__ import annotations

import numpy as np
import pytest

from optbench import engine
from optbench.engine.summary import TRACE_SUMMARY_FIELDS, summarize, summary_of
from optbench.registry.validate import canonical_config
from optbench.spec import RunConfig

nan, inf = float("nan"), float("inf")


def test_diverged_run_ends_at_its_first_bad_step():
    """losses [4, 2, inf] diverged at step 2: final inf, best 2, two steps completed."""
    got = summarize(np.array([[4.0, 2.0, inf, nan]]), np.array([2]), steps_done=4).row(0)
    assert got == {
        "status": "diverged",
        "final_loss": inf,
        "best_loss": 2.0,
        "diverged_step": 2,
        "steps_completed": 2,
        "final_val_loss": None,
        "final_val_acc": None,
    }


def test_values_past_a_runs_end_are_ignored_and_each_run_has_its_own_end():
    loss = np.array([[3.0, 1.0, 0.5, 0.25], [5.0, 9e9, 0.1, 0.0]])  # row 1 diverged at step 1
    val = np.array([[nan, 2.0, nan, 1.5], [7.0, nan, 6.0, nan]])
    columns = summarize(loss, np.array([-1, 1]), 4, val_loss=val, val_acc=val / 10)
    assert columns.status == ["ok", "diverged"]
    assert columns.final_loss == [0.25, 9e9] and columns.best_loss == [0.25, 5.0]
    assert columns.steps_completed == [4, 1] and columns.diverged_step == [None, 1]
    assert columns.final_val_loss == [1.5, 7.0]  # the last measured before the end; row 1's 6.0 is past it
    assert columns.final_val_acc == [0.15, 0.7]


def test_no_finite_loss_and_no_steps():
    assert summarize(np.array([[nan]]), np.array([0]), 1).row(0)["best_loss"] is None
    empty = summarize(np.empty((2, 0)), np.array([-1, -1]), 0, np.empty((2, 0)), np.empty((2, 0)))
    assert empty.final_loss == [None, None] and empty.best_loss == [None, None]
    assert empty.final_val_loss == [None, None] and empty.steps_completed == [0, 0]


@pytest.mark.parametrize(
    "cfg",
    [
        RunConfig(problem="quadratic", lr=0.1, steps=40),
        RunConfig(problem="quadratic", lr=0.4, steps=40),  # diverges
        RunConfig(problem="rosenbrock", optimizer="adam", lr=1e30, steps=10),  # inf at once
        RunConfig(
            problem="mlp-classification(width=8, depth=1, n_train=64, n_val=32, eval_every=3)", steps=11
        ),
        RunConfig(problem="mlp-regression(width=8, n_train=64, n_val=32)", lr=1e6, momentum=0.9, steps=40),
    ],
)
def test_one_cell_gives_the_reference_engines_summary(cfg):
    """``summary_of`` on a reference run's trace gives the summary the reference engine computed."""
    result = engine.run(canonical_config(cfg))
    got = summary_of(result.trace, result.summary.diverged_step, cfg.steps)
    want = {name: getattr(result.summary, name) for name in TRACE_SUMMARY_FIELDS}
    for name in TRACE_SUMMARY_FIELDS:
        a, b = got[name], want[name]
        assert (a is None) == (b is None) and (a == b or (a != a and b != b)), (name, a, b)
