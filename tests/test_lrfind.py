"""The learning-rate range test: smoothing, stop rule, the suggestion rules, and a real run on an MLP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from optbench.experiments.lrfind import analyse, longest_valley, smooth


def test_bias_corrected_ema_of_a_constant_is_the_constant():
    np.testing.assert_allclose(smooth(np.full(50, 2.5), 0.98), 2.5, rtol=1e-12)


def test_ema_matches_the_recurrence():
    losses = np.array([4.0, 2.0, 1.0])
    beta = 0.9
    avg1 = 0.1 * 4
    avg2 = 0.9 * avg1 + 0.1 * 2
    avg3 = 0.9 * avg2 + 0.1 * 1
    expected = [avg1 / (1 - 0.9), avg2 / (1 - 0.9**2), avg3 / (1 - 0.9**3)]
    np.testing.assert_allclose(smooth(losses, beta), expected)


def test_longest_valley_is_the_longest_strictly_decreasing_subsequence():
    #            0  1  2  3  4  5  6  7  8
    values = [5, 9, 8, 7, 9, 6, 5, 4, 6]
    assert longest_valley(values) == (1, 7)  # 9 8 7 6 5 4
    assert longest_valley([1, 2, 3]) == (0, 0)


def test_synthetic_curve():
    """Loss falls linearly in log lr from 1e-5 to 1e-1 with a Gaussian dip at 1e-3, then explodes.

    The dip -0.1·exp(-u²/0.1), u = log10(lr) + 3, falls fastest at u = -√0.05: lr = 10^(-3 - 0.224)."""
    lrs = np.logspace(-6, 1, 141)
    log = np.log10(lrs)
    loss = np.where(log < -5, 2.0, 2.0 - 0.4 * (log + 5) - 0.1 * np.exp(-((log + 3) ** 2) / 0.1))
    loss = np.where(log > -1, loss[np.searchsorted(log, -1)] * 10 ** (3 * (log + 1)), loss)
    result = analyse(lrs, loss, beta=0.0)  # no smoothing: the rules act on the curve itself
    assert result.stopped_because.startswith("blow-up")
    best = loss[: result.stop].min()
    assert loss[result.stop] > 4 * best >= loss[result.stop - 1]  # the first point above 4x the minimum
    assert result.steepest_lr == pytest.approx(10 ** (-3 - np.sqrt(0.05)), rel=0.15)
    first, last = result.valley_span
    # The window skips the first 10 % and the last 5 points before the stop: the valley runs from the last
    # flat point to the last kept one, just below 0.1.
    assert lrs[first] <= 1e-5 and 0.05 < lrs[last] <= 0.1
    assert 1e-4 < result.valley_lr < 1e-2  # about half way down the valley (in steps, i.e. in log lr)
    assert result.minimum_lr_div10 == pytest.approx(1e-2, rel=0.15)


def test_non_finite_loss_stops_the_test():
    lrs = np.logspace(-4, 0, 40)
    loss = np.linspace(2, 1, 40)
    loss[30] = np.nan
    result = analyse(lrs, loss)
    assert (result.stop, result.stopped_because) == (30, "non-finite loss")


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    """`bench lr-find` with Adam on mlp-classification: 100 steps, lr 1e-7 -> 10."""
    from typer.testing import CliRunner

    from optbench.cli.app import app

    out = tmp_path_factory.mktemp("find") / "adam"
    result = CliRunner().invoke(
        app, ["lr-find", "--problem", "mlp-classification", "--optimizer", "adam", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_lr_find_writes_a_normal_results_folder(found):
    from optbench import store

    out, stdout = found
    runs = store.read_runs(out)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["problem"] == "mlp-classification" and run["optimizer"] == "adam"
    assert run["scheduler"].startswith("exponentiallr(gamma=")
    trace = store.read_traces(out).sort_values("step")
    lrs = trace["lr"].to_numpy()
    assert len(lrs) == 100
    assert lrs[0] == pytest.approx(1e-7) and lrs[-1] == pytest.approx(
        10.0, rel=1e-6
    )  # ExponentialLR's own ramp
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1e8) ** (1 / 99), rtol=1e-9)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["experiment"] == "lr-find"
    assert manifest["suggested_lr"] == manifest["lr_find"]["valley_lr"]
    assert (out / "lr_find.png").read_bytes().startswith(b"\x89PNG")
    assert "suggested lr (valley)" in stdout


def test_lr_find_suggestion_on_mlp_classification_is_sane(found):
    """A grid over the same problem (Adam, 200 steps, lr 1e-4..3) is best at lr 0.01; the suggestions must
    land in the range people would try (1e-5..1), and minimum/10 within 10x of that grid's best."""
    from optbench import store

    info = store.read_manifest(found[0])["lr_find"]
    for rule in ("valley_lr", "steepest_lr", "minimum_lr_div10"):
        assert 1e-5 <= info[rule] <= 1.0, (rule, info)
    assert 1e-3 <= info["minimum_lr_div10"] <= 0.1
    assert info["stop_step"] > 50  # Adam does not blow up before lr ~ 0.1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--start", "1", "--end", "0.1"], "--end 0.1 must be larger than --start 1"),
        (["--start", "0"], "--start must be a positive learning rate"),
        (["--steps", "5"], "--steps must be >= 10"),
        (["--optimizer", "nope"], "unknown optimizer 'nope'"),
        (["--format", "gif"], "unknown figure format 'gif'"),
    ],
)
def test_lr_find_bad_input(cli, tmp_path, args, message):
    result = cli("lr-find", "--out", tmp_path / "f", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "f").exists()
