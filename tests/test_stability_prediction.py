"""The bound predicted from the initial sharpness: each run's regime, the check against a sweep, the
thresholds a run's sharpness is compared with, the lr-sweep's report of it, and its figures."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from optbench.experiments.stability import PredictionCheck, prediction_check, regime, run_threshold
from optbench.experiments.sweep import lr_sweep
from optbench.figures import stability as figures
from optbench.spec import RunConfig

# ------------------------------------------------------------------------------------------------ regimes


@pytest.mark.parametrize(
    ("losses", "status", "expected"),
    [
        ([16, 8, 4, 2, 1], "ok", "monotone"),
        ([16, 20, 90, 3, 1], "ok", "catapult"),  # rises above its start, then converges
        ([16, 4, 1, 12, 0.5], "ok", "catapult"),  # halved, then climbed back more than half way
        ([16, 4, 1, 5, 0.5], "ok", "monotone"),  # a climb of a quarter of the way: not a spike
        ([16, 16, 16, 16], "ok", "no progress"),  # lr = 2/L on the quadratic
        ([16, 20, 30], "ok", "no progress"),
        ([16, 1e9], "diverged", "diverged"),
        ([], "invalid", None),
        ([16, 2], "failed", None),
    ],
)
def test_regime_of_a_loss_trace(losses, status, expected):
    assert regime(losses, status) == expected


def test_minibatch_losses_are_read_over_an_epoch():
    """Batches of different difficulty: the first step's batch is easy, the next hard. One batch above the
    start is noise; the epoch mean (4 batches) falls without a spike."""
    rng = np.random.default_rng(0)
    trend = np.exp(-np.arange(200) / 40)
    losses = trend * rng.choice([0.6, 1.0, 1.3, 1.1], size=200)
    losses[0] = trend[0] * 0.6
    assert regime(losses, "ok") == "catapult"  # step by step, batch noise looks like a spike
    assert regime(losses, "ok", window=4) == "monotone"
    spiked = losses.copy()
    spiked[5:10] *= 20
    assert regime(spiked, "ok", window=4) == "catapult"


# --------------------------------------------------------------------------------------------- thresholds


def test_the_threshold_each_sharpness_column_is_compared_with():
    assert run_threshold("sharpness", "sgd", None, 0.1) == pytest.approx(20.0)
    assert run_threshold("sharpness", "sgd", 0.5, 0.1) == pytest.approx(30.0)
    assert run_threshold("sharpness", "sgd(momentum=0.5)", None, 0.1) == pytest.approx(30.0)
    assert run_threshold("precond_sharpness", "adam", None, 0.01) == pytest.approx(3800.0)  # 38/lr
    assert run_threshold("precond_sharpness", "adamw(betas=(0.5, 0.999))", None, 0.1) == pytest.approx(60.0)
    assert run_threshold("sharpness", "adam", None, 0.01) is None  # Adam's raw sharpness has none
    assert run_threshold("sharpness", "sgd(nesterov=True)", 0.9, 0.1) is None
    assert run_threshold("precond_sharpness", "adam(amsgrad=True)", None, 0.1) is None


# ---------------------------------------------------------------------------------------- the check


def _regimes(pairs):
    return pd.DataFrame(pairs, columns=["lr", "regime"])


def test_prediction_agrees_when_the_bound_separates_monotone_from_the_rest():
    runs = _regimes([(0.01, "monotone"), (0.02, "monotone"), (0.05, "catapult"), (0.1, "catapult"),
                     (0.15, "diverged")])  # fmt: skip
    check = prediction_check(76.4, 0.0, runs)
    assert check.bound == pytest.approx(2 / 76.4)
    assert (check.largest_stable, check.smallest_unstable, check.first_diverged) == (0.02, 0.05, 0.15)
    assert check.agrees is True
    text = "\n".join(check.sentences())
    assert "prediction agrees" in text and "catapults" in text and "expected above 2(1+m)/lambda_0" in text
    assert "below the predicted bound" not in text


def test_a_divergence_or_spike_below_the_bound_disagrees_and_says_why():
    check = prediction_check(4.58, 0.0, _regimes([(0.1, "catapult"), (0.3, "diverged"), (0.5, "diverged")]))
    assert check.bound == pytest.approx(0.4367, abs=1e-4)
    assert check.agrees is False
    text = "\n".join(check.sentences())
    assert "DISAGREES" in text and "progressive sharpening" in text and "spikes at lr 0.1" in text


def test_no_lr_on_one_side_is_not_tested():
    assert PredictionCheck(8.0, 0.25, 0.2, None, None, []).agrees is None
    assert prediction_check(float("nan"), 0.0, _regimes([(0.1, "monotone")])) is None


# ---------------------------------------------------------------------------------------------- lr-sweep


def test_quadratic_sweep_predicts_exactly_the_analytic_bound(tmp_path):
    result = lr_sweep(0.05, 0.5, 10, base=RunConfig(steps=60), out=tmp_path / "s", plots=False)
    assert result.sharpness.value == 8.0 and result.prediction.bound == 0.25 == result.check.bound
    assert result.prediction.agrees is True
    regimes = dict(zip(result.runs["lr"].round(3), result.runs["regime"], strict=True))
    assert regimes[0.2] == "monotone" and regimes[0.25] == "no progress" and regimes[0.3] == "diverged"
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["initial_sharpness"] == 8.0 and manifest["predicted_bound"] == 0.25
    assert manifest["prediction_agrees"] is True


def test_heavy_ball_prediction_moves_with_the_momentum(tmp_path):
    """With momentum the stable runs' loss oscillates (lr 0.3: x_1 = -1.4 x_0, above the start), so the
    edge is between converging and not: 0.35 converges, 0.4 diverges, the bound 0.375 lies between."""
    result = lr_sweep(0.3, 0.45, 4, base=RunConfig(steps=60, momentum=0.5), out=tmp_path, plots=False)
    check = result.prediction
    assert check.bound == pytest.approx(0.375)
    assert (check.largest_stable, check.smallest_unstable) == pytest.approx((0.35, 0.4))
    assert check.agrees is True and "largest converging 0.35" in check.sentences()[0]


def test_adam_sweep_measures_lambda_0_but_predicts_no_gd_bound(tmp_path):
    result = lr_sweep(0.001, 0.01, 2, base=RunConfig(optimizer="adam", steps=5), out=tmp_path, plots=False)
    assert result.sharpness.value == 8.0 and result.prediction is None
    lines = "\n".join(result.sharpness_lines())
    assert "heavy-ball SGD" in lines and "--sharpness-every" in lines


@pytest.mark.slow
def test_tracked_sweep_draws_the_sharpness_figure(tmp_path):
    result = lr_sweep(0.05, 0.3, 3, base=RunConfig(steps=20, sharpness_every=5), out=tmp_path)
    names = sorted(p.name for p in result.figures)
    assert names == ["final_loss_vs_lr.png", "loss_vs_step.png", "sharpness_vs_step.png"]


def test_a_wide_relu_net_catapults_above_2_over_lambda_0_and_diverges_later(tmp_path):
    """Lewkowycz et al. 2020 on a CI-sized net (full batch): lambda_0 = 76.4, so 2/lambda_0 = 0.026; lrs
    0.05 and 0.09 spike, the sharpness falls below 2/lr and training converges; 0.13 diverges."""
    base = RunConfig(
        problem="mlp-regression(depth=1, eval_every=0, n_train=256, width=512)",
        batch_size=256,
        steps=200,
        sharpness_every=50,
    )
    out = tmp_path / "catapult"
    result = lr_sweep(0.01, 0.13, 4, base=base, out=out, plots=False)
    assert result.sharpness.value == pytest.approx(76.4, abs=0.05)
    runs = result.runs.sort_values("lr")
    assert runs["regime"].tolist() == ["monotone", "catapult", "catapult", "diverged"]  # 0.01 .. 0.13
    assert result.prediction.agrees is True
    from optbench import store

    traces = store.read_traces(out)
    for _, run in runs[runs["regime"] == "catapult"].iterrows():
        last = traces[(traces["run_id"] == run["run_id"]) & traces["sharpness"].notna()]["sharpness"].iloc[-1]
        assert last < 2 / run["lr"]


# ---------------------------------------------------------------------------------------------- figures


def _sweep_frames(tmp_path, **base):
    from optbench import store

    result = lr_sweep(0.05, 0.35, 4, base=RunConfig(steps=30, sharpness_every=10, **base), out=tmp_path,
                      plots=False)  # fmt: skip
    return result, store.read_traces(tmp_path)


def test_sharpness_figure_draws_each_runs_threshold_in_its_colour(tmp_path):
    result, traces = _sweep_frames(tmp_path)
    fig = figures.sharpness_figure(result.runs, traces)
    loss_ax, sharp_ax = fig.axes[:2]
    assert sharp_ax.get_yscale() == "log"
    data = [line for line in sharp_ax.get_lines() if line.get_marker() == "."]
    thresholds = [
        line for line in sharp_ax.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata())
    ]
    assert len(data) == 4 and all(np.allclose(line.get_ydata(), 8.0) for line in data)
    assert data[-1].get_xdata().tolist() == [0, 10]  # lr 0.35 diverged at step 12
    assert sorted(round(line.get_ydata()[0], 6) for line in thresholds) == sorted(
        round(2 / lr, 6) for lr in result.runs["lr"]
    )
    for line, threshold in zip(data, sorted(thresholds, key=lambda t: -t.get_ydata()[0]), strict=True):
        assert line.get_color() == threshold.get_color()  # lr order: thresholds fall as the lr grows
    lo, hi = sharp_ax.get_ylim()
    assert lo <= 8.0 <= hi and lo <= 2 / 0.35 and hi >= 2 / 0.05
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[:2] == ["lr=0.05", "lr=0.15"] and "lr=0.35 (diverged)" in texts
    assert "threshold 2(1+m)/lr" in texts
    w, h = fig.get_size_inches()
    assert w <= 16 and h <= 12
    plt.close(fig)


def test_adam_runs_get_a_preconditioned_panel_with_38_over_lr(tmp_path):
    result, traces = _sweep_frames(tmp_path, optimizer="adam", problem="rosenbrock")
    fig = figures.sharpness_figure(result.runs, traces)
    assert len(fig.axes) == 3 and fig.axes[2].get_ylabel() == "precond. sharpness λ_max(P⁻¹H)"
    thresholds = {round(line.get_ydata()[0], 6) for line in fig.axes[2].get_lines() if line.get_linestyle() == "--"
                  and len(line.get_xdata())}  # fmt: skip
    assert thresholds == {round(38 / lr, 6) for lr in result.runs["lr"]}
    assert not [
        line for line in fig.axes[1].get_lines() if line.get_linestyle() == "--" and len(line.get_xdata())
    ]
    plt.close(fig)


def test_sharpness_figure_without_tracking_is_one_clear_error(tmp_path):
    from optbench import store
    from optbench.errors import OptbenchError

    lr_sweep(0.1, 0.2, 2, base=RunConfig(steps=5), out=tmp_path, plots=False)
    with pytest.raises(OptbenchError, match="--sharpness-every"):
        figures.sharpness_figure(store.read_runs(tmp_path), store.read_traces(tmp_path))


def test_bound_figure_marks_the_prediction_and_shades_the_catapults():
    runs = pd.DataFrame(
        {
            "lr": [0.01, 0.02, 0.05, 0.1, 0.15],
            "seed": 0,
            "status": ["ok", "ok", "ok", "ok", "diverged"],
            "final_loss": [0.3, 0.2, 0.25, 0.3, 1e12],
            "regime": ["monotone", "monotone", "catapult", "catapult", "diverged"],
        }
    )
    fig = figures.bound_figure(runs, predicted_bound=0.0262)
    ax = fig.axes[0]
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and dotted[0].get_xdata()[0] == pytest.approx(0.0262)
    spans = [p for p in ax.patches if p.get_label() == "catapult: spike, then converges"]
    assert len(spans) == 1
    x0, x1 = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
    assert x0 == pytest.approx(0.035) and x1 == pytest.approx(0.125)  # half way to the neighbouring lrs
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "predicted bound 2(1+m)/λ₀" in texts and "catapult: spike, then converges" in texts
    lo, hi = ax.get_xlim()
    assert lo < 0.01 and hi > 0.15
    plt.close(fig)
