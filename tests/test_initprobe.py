"""The init report: the physics of deep MLP activations under each init, the theory beside it, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from optbench.cli.app import app
from optbench.errors import OptbenchError
from optbench.experiments import initprobe
from optbench.registry.activations import ACTIVATIONS
from optbench.registry.inits import inits

SEEDS = (0, 1)


def stds(init: str, activation: str, seed: int = 0, **sizes) -> np.ndarray:
    rows = initprobe.probe_stack(init, activation, seed=seed, **sizes)
    return np.array([row["act_std"] for row in rows])


# ------------------------------------------------------------------------------ physics (100 x 256, batch 16)


@pytest.mark.parametrize("seed", SEEDS)
def test_normal_weights_without_activation_grow_16x_per_layer_and_overflow_near_layer_31(seed):
    rows = initprobe.probe_stack("normal", "none", seed=seed)
    std = np.array([row["act_std"] for row in rows])
    assert std[0] == pytest.approx(16, rel=0.1)  # sqrt(256)
    ratios = std[1:30] / std[:29]
    assert np.median(ratios) == pytest.approx(16, rel=0.05)
    # (σ·√width)^(k+1): layer 30 ≈ 16^31 = 2.1e37, within a factor 3 after 31 random layers
    assert std[30] == pytest.approx(16.0**31, rel=2)
    first_bad = next(row["layer"] for row in rows if not row["finite"])
    assert 30 <= first_bad <= 32
    assert all(row["finite"] for row in rows[:first_bad])
    assert all(math.isnan(row["act_std"]) for row in rows[first_bad + 1 :])
    assert all(math.isnan(row["grad_std"]) for row in rows)  # the loss itself is nan: no finite gradient


@pytest.mark.parametrize("seed", SEEDS)
def test_normal_with_std_one_over_sqrt_width_keeps_a_linear_stack_near_1(seed):
    std = stds("normal(std=0.0625)", "none", seed)
    assert std.min() > 0.3 and std.max() < 3


@pytest.mark.parametrize("seed", SEEDS)
def test_kaiming_normal_keeps_a_relu_stack_order_1(seed):
    std = stds("kaiming_normal", "relu", seed)
    assert std.min() > 0.1 and std.max() < 10  # theory: sqrt(1 - 1/pi) = 0.826 at every layer


@pytest.mark.parametrize("seed", SEEDS)
def test_normal_one_over_width_with_relu_halves_the_variance_per_layer(seed):
    std = stds("normal(std=0.0625)", "relu", seed)
    assert std[99] < 1e-12  # measured 2e-16 .. 9e-16 (theory 7.3e-16)
    per_layer = (std[99] / std[0]) ** (1 / 99)
    assert per_layer == pytest.approx(1 / math.sqrt(2), rel=0.05)


@pytest.mark.parametrize("seed", SEEDS)
def test_xavier_with_the_tanh_gain_keeps_tanh_order_1_while_gain_1_decays(seed):
    tanh_gain = stds("xavier_normal", "tanh", seed)  # gain derived from the activation: 5/3
    gain_1 = stds("xavier_normal(gain=1.0)", "tanh", seed)
    assert tanh_gain[10:].min() > 0.5 and tanh_gain.max() < 1  # measured ≈ 0.65 from layer 10 on
    assert gain_1[99] < 0.15 and gain_1[99] < gain_1[9] / 2  # 0.62 -> 0.23 -> 0.05..0.08
    assert gain_1[99] < 0.2 * tanh_gain[99]


def test_layers_are_0_based_and_measured_after_the_activation():
    # eye weights: layer 0's output is relu(x) for exactly the input seed 0 draws first.
    rows = initprobe.probe_stack("eye", "relu", depth=3, seed=0)
    torch.manual_seed(0)
    x = torch.randn(16, 256)
    assert [row["layer"] for row in rows] == [0, 1, 2]
    assert rows[0]["act_std"] == pytest.approx(float(torch.relu(x).double().std()), rel=1e-12)
    assert rows[0]["act_mean"] == pytest.approx(1 / math.sqrt(2 * math.pi), rel=0.05)


def test_grad_std_is_that_of_the_mean_of_the_last_output():
    # eye, no activation: every h_k = x and dL/dW_k[i, j] = sum_b x[b, j] / (batch·width) for every k.
    depth, width, batch = 4, 8, 5
    rows = initprobe.probe_stack("eye", "none", depth=depth, width=width, batch=batch, seed=3)
    torch.manual_seed(3)
    x = torch.randn(batch, width).double()
    expected = float((x.sum(0) / (batch * width)).expand(width, width).std())
    assert [row["grad_std"] for row in rows] == pytest.approx([expected] * depth, rel=1e-5)


def test_first_nonfinite_table():
    layers = initprobe.measure(["normal", "normal(std=0.0625)"], ["none"], depth=40, seeds=2)
    table = initprobe.first_nonfinite(layers).set_index("init")["first_nonfinite_layer"]
    assert 30 <= table["normal"] <= 32
    assert table["normal(std=0.0625)"] is pd.NA
    assert len(layers) == 2 * 1 * 2 * 40


# ------------------------------------------------------------------------------------------------- theory


def test_theory_of_a_linear_normal_stack_is_sigma_sqrt_width_to_the_k_plus_1():
    assert initprobe.theory_std("normal", "none", depth=5, width=256) == pytest.approx(
        [16.0, 256.0, 4096.0, 65536.0, 1048576.0], rel=1e-12
    )
    assert initprobe.theory_std("normal(std=0.1)", "none", depth=3, width=64) == pytest.approx(
        [0.8, 0.64, 0.512], rel=1e-12
    )


@pytest.mark.parametrize(
    ("init", "activation", "expected"),
    [
        ("normal(std=0.0625)", "none", 1.0),
        ("xavier_normal", "none", 1.0),
        ("kaiming_uniform", "none", 1.0),
        ("orthogonal", "none", 1.0),
        ("eye", "none", 1.0),
        ("kaiming_normal", "relu", math.sqrt(1 - 1 / math.pi)),  # relu(z), z ~ N(0, 2): const 0.826
        ("eye", "relu", math.sqrt(0.5 - 0.5 / math.pi)),  # relu(relu(x)) = relu(x)
    ],
)
def test_xavier_kaiming_orthogonal_eye_predict_a_constant_std(init, activation, expected):
    assert initprobe.theory_std(init, activation, depth=100) == pytest.approx([expected] * 100, rel=1e-3)


@pytest.mark.parametrize(
    "init", ["constant", "ones", "zeros", "uniform", "normal(mean=1.0)", "trunc_normal(mean=1.0)"]
)
def test_no_theory_without_zero_mean_random_weights(init):
    assert initprobe.theory_std(init, "relu", depth=3) == [None, None, None]


@pytest.mark.parametrize(
    ("init", "activation"),
    [("normal(std=0.0625)", "tanh"), ("normal(std=0.0625)", "relu"), ("sparse", "none"), ("default", "tanh")],
)
def test_mean_field_theory_tracks_the_measurement(init, activation):
    layers = initprobe.measure([init], [activation], depth=20, seeds=2)
    measured = layers.groupby("layer")["act_std"].mean().to_numpy()
    theory = layers.groupby("layer")["theory_std"].first().to_numpy()
    np.testing.assert_allclose(measured, theory, rtol=0.25)


def test_sparse_with_every_entry_zeroed_predicts_zero():
    assert initprobe.theory_std("sparse(sparsity=2.0)", "tanh", depth=2, width=8) == [0.0, 0.0]


def test_theory_never_overflows_into_an_error():
    theory = initprobe.theory_std("normal", "none", depth=300, width=256)  # 16^300 = 1e361 > float64 max
    assert theory[200] == pytest.approx(16.0**201, rel=1e-9)
    assert theory[299] is None


# -------------------------------------------------------------------------------------------------- gains


def test_tanh_gain_formula_vs_measured():
    table = initprobe.gain_table(["tanh", "relu", "none"], samples=200_000).set_index("activation")
    assert table.loc["tanh", "calculate_gain"] == pytest.approx(5 / 3)
    assert table.loc["tanh", "measured_gain"] == pytest.approx(1.59, abs=0.03)
    # ReLU: calculate_gain is the RMS gain sqrt(2); the std ratio is larger because relu(x) has a mean.
    assert table.loc["relu", "measured_rms_gain"] == pytest.approx(math.sqrt(2), abs=0.01)
    assert table.loc["relu", "measured_gain"] == pytest.approx(1 / math.sqrt(0.5 - 0.5 / math.pi), abs=0.01)
    assert table.loc["none", "measured_gain"] == pytest.approx(1.0)


# ------------------------------------------------------------------------ every registry entry, every name


@pytest.mark.parametrize("init", inits.names())
def test_every_init_runs_with_a_theory_of_the_right_length(init):
    rows = initprobe.probe_stack(init, "relu", depth=3, width=8, batch=4)
    assert [row["layer"] for row in rows] == [0, 1, 2]
    theory = initprobe.theory_std(init, "relu", depth=3, width=8)
    assert len(theory) == 3 and all(t is None or t >= 0 for t in theory)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_activation_runs_and_has_a_gain(activation):
    rows = initprobe.probe_stack("kaiming_normal", activation, depth=3, width=8, batch=4)
    assert all(row["finite"] for row in rows)
    theory = initprobe.theory_std("kaiming_normal", activation, depth=3, width=8)
    assert all(t is not None and t > 0 for t in theory)
    gains = initprobe.gain_table([activation], samples=10_000)
    assert gains["measured_gain"].iloc[0] > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: initprobe.resolve_inits(["bogus"]), "unknown init 'bogus'"),
        (lambda: initprobe.resolve_inits(["normal(foo=1)"]), "no argument 'foo'"),
        (lambda: initprobe.resolve_inits(["normal(std='a')"]), "cannot fill a weight"),
        (lambda: initprobe.resolve_activations(["swish"]), "unknown activation 'swish'"),
        (lambda: initprobe.check_sizes(0, 256, 16, 1), "invalid depth: 0"),
        (lambda: initprobe.check_sizes(100, 256, 16, 0), "invalid seeds: 0"),
    ],
)
def test_bad_input_is_one_error_that_names_it(call, message):
    with pytest.raises(OptbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_specs_are_canonical_comma_separated_and_deduplicated():
    assert initprobe.resolve_inits(["normal( std = 0.0625 )", "eye,normal(std=0.0625)"]) == [
        "normal(std=0.0625)",
        "eye",
    ]
    assert initprobe.resolve_activations(["relu,tanh", "relu"]) == ["relu", "tanh"]
    assert initprobe.default_inits(256)[-1] == "normal(std=0.0625)"
    assert len(initprobe.default_inits()) == 11


# ----------------------------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_writes_parquet_plots_manifest_and_prints_the_summary(tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["init-report", "--init", "normal", "--activation", "none", "--activation", "tanh", "--depth", "35",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    layers = pd.read_parquet(out / "layers.parquet")
    assert list(layers.columns) == [
        "init", "activation", "seed", "layer", "act_std", "act_mean", "grad_std", "finite", "theory_std"
    ]  # fmt: skip
    assert len(layers) == 1 * 2 * 35
    linear = layers[(layers["init"] == "normal") & (layers["activation"] == "none")].set_index("layer")
    assert linear.loc[0, "act_std"] == pytest.approx(16, rel=0.1)
    assert linear.loc[0, "theory_std"] == pytest.approx(16)
    assert 30 <= linear.index[~linear["finite"]].min() <= 32
    gains = pd.read_parquet(out / "gains.parquet").set_index("activation")
    assert gains.loc["tanh", "calculate_gain"] == pytest.approx(5 / 3)
    for name in ("std_vs_layer.png", "gain_table.png"):
        assert (out / name).stat().st_size > 10_000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["depth"] == 35 and manifest["ended_at"]
    assert any(f"layer {k}\n" in result.output for k in (30, 31, 32))  # the first non-finite layer
    assert "1.6667" in result.output  # the gain table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--init", "bogus"], "unknown init 'bogus'"),
        (["--activation", "swish"], "unknown activation 'swish'"),
        (["--depth", "0"], "invalid depth: 0"),
        (["--init", "normal(std="], "malformed init"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_folder(tmp_path, args, message):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["init-report", *args, "--out", str(out)])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not out.exists()
