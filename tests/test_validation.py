"""Every bad value stops the command with one line before a folder exists: stand-in builds of each distinct
spec (optbench.registry.standins), caps on steps and sizes (limits), quoting what the user typed, TOML that
is not UTF-8; and a run that never updated is not ``ok``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench.engine.reference import run
from optbench.engine.summary import summary_of
from optbench.errors import OptbenchError
from optbench.grid import GridSpec, expand, load_spec_toml
from optbench.registry import limits, standins
from optbench.registry.validate import canonical_config, check_buildable, check_lr
from optbench.spec import RunConfig


def _one_line_exit_2(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# ------------------------------------------------------------------------ stand-in builds stop the command

STOPPED = {
    "optimizer value": (
        ["--optimizer", 'adamw(weight_decay="lots")'],
        ["optimizer 'adamw(weight_decay=\"lots\")' cannot be built", "TypeError"],
    ),
    "width 0": (
        ["--problem", "mlp-classification", "--width", "0"],
        ["problem 'mlp-classification(width=0)' cannot be built", "width must be >= 1"],
    ),
    "scheduler value at step()": (
        ["--scheduler", 'steplr(step_size="x")'],
        ["scheduler 'steplr(step_size=\"x\")' cannot be built", "TypeError"],
    ),
    "init argument": (
        ["--problem", "mlp-regression", "--init", "normal(sd=1.0)"],
        ["init 'normal' has no argument 'sd'"],
    ),
    "loss value at forward": (
        ["--problem", "mlp-regression", "--loss", "huber(delta='x')"],
        ["loss \"huber(delta='x')\" cannot be built"],
    ),
    "nesterov without momentum": (
        ["--optimizer", "sgd(nesterov=True)", "--momentum", "0"],
        ["Nesterov momentum requires a momentum"],
    ),
    "no data": (["--problem", "mlp-regression(n_train=0)"], ["'mlp-regression(n_train=0)' cannot be built"]),
    "scaler option": (
        ["--problem", "mlp-regression", "--precision", "fp16(init_scale='x')"],
        ["init_scale must be a positive finite number"],
    ),
}


@pytest.mark.parametrize("command", ["grid", "lr-sweep"])
@pytest.mark.parametrize("case", list(STOPPED))
def test_a_value_no_cell_accepts_stops_the_command_before_its_folder(cli, tmp_path, case, command):
    args, needles = STOPPED[case]
    if command == "lr-sweep":
        if "--width" in args:  # lr-sweep has no --width: the same value in the problem's spec
            args = ["--problem", "mlp-classification(width=0)"]
            needles = ["mlp-classification(width=0)", "width must be >= 1"]
        extra = ["--num", "2", "--no-plots"]
    else:
        extra = ["--workers", "1", "--no-progress"]
    out = tmp_path / "out"
    result = cli(command, *args, "--steps", "3", *extra, "--out", out)
    _one_line_exit_2(result, *needles)
    assert not out.exists()


def test_lr_find_builds_its_stand_ins_before_its_folder(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("lr-find", "--optimizer", 'adamw(weight_decay="lots")', "--steps", "10", "--out", out)
    _one_line_exit_2(result, "optimizer 'adamw(weight_decay=\"lots\")' cannot be built")
    assert not out.exists()


def test_a_value_refused_in_some_cells_only_stays_a_cell_status(tmp_path):
    """Nesterov needs a momentum: with momentum 0 and 0.9, only the momentum-0 cells are invalid."""
    from optbench.grid import run_grid

    runs = run_grid(
        GridSpec(optimizer="sgd(nesterov=True)", momentum="0,0.9", steps=5), out=tmp_path, workers=1
    )
    by_momentum = dict(zip(runs["momentum"], runs["status"], strict=True))
    assert by_momentum == {0.0: "invalid", 0.9: "ok"}
    assert "Nesterov" in runs.loc[runs["momentum"] == 0.0, "reason"].item()


@pytest.mark.parametrize(
    "axes",
    [
        {"optimizer": "adagrad", "momentum": "0.9"},  # no momentum knob: a combination, every cell invalid
        {"optimizer": "sparseadam"},  # dense parameters
        {"problem": "quadratic", "init": "kaiming_normal"},  # an init on a toy function
        {"optimizer": "adagrad", "scheduler": "cycliclr"},  # cycle_momentum without a momentum
    ],
)
def test_combinations_optbench_marks_not_applicable_are_never_refused_up_front(axes):
    assert expand(GridSpec(steps=5, **axes))  # the cells are `invalid` when they run, as the README says


def test_stand_ins_are_built_once_per_distinct_value_and_context():
    standins.optimizer_verdict.cache_clear()
    standins._built.cache_clear()
    spec = GridSpec(optimizer="sgd,adam", lr="logspace(-3,-1,50)", momentum="0,0.9", seed=range(20), steps=10)
    configs = expand(spec)
    assert len(configs) == 2 * 50 * 2 * 20
    # one accepting context per value suffices; the other 199 (lr, momentum) contexts are not built
    assert standins.optimizer_verdict.cache_info().misses == 2
    assert standins._built.cache_info().misses == 1  # the quadratic
    expand(spec)
    assert standins.optimizer_verdict.cache_info().misses == 2  # cached across calls


def test_check_buildable_quotes_the_text_given_for_the_value():
    config = canonical_config(RunConfig(optimizer="adam(eps='tiny')"))
    with pytest.raises(OptbenchError, match="optimizer 'SGD-as-typed' cannot be built"):
        check_buildable([config], {("optimizer", config.optimizer): "SGD-as-typed"})


# ------------------------------------------------------------------------------------------------- caps


def test_steps_are_capped_by_the_memory_a_run_would_need(cli, tmp_path):
    result = cli("grid", "--steps", "10000000000000", "--out", tmp_path / "g")
    message = _one_line_exit_2(result, "--steps 10000000000000", "per step", "steps fit")
    assert "72.8 PiB" in message  # 10^13 steps x 8 KiB
    assert not (tmp_path / "g").exists()
    result = cli("lr-sweep", "--steps", "10000000000000", "--num", "2", "--no-plots", "--out", tmp_path / "s")
    _one_line_exit_2(result, "--steps 10000000000000")
    result = cli("lr-find", "--steps", "10000000000000", "--out", tmp_path / "f")
    _one_line_exit_2(result, "--steps 10000000000000")
    result = cli("schedules", "--steps", "10000000000000", "--out", tmp_path / "c")
    _one_line_exit_2(result, "--steps 10000000000000")
    assert not any((tmp_path / name).exists() for name in ("s", "f", "c"))


def test_the_steps_cap_follows_the_machines_memory(monkeypatch):
    monkeypatch.setattr(limits, "memory_bytes", lambda device="cpu": 100 * limits.RUN_BYTES_PER_STEP)
    limits.check_steps(100)
    with pytest.raises(OptbenchError, match="at most 100 steps fit"):
        limits.check_steps(101)


def test_an_mlp_too_large_for_memory_is_refused(cli, tmp_path):
    result = cli("grid", "--problem", "mlp-classification", "--width", "1000000", "--out", tmp_path / "g")
    _one_line_exit_2(result, "mlp-classification(width=1000000)", "parameters", "more than the")
    assert not (tmp_path / "g").exists()


def test_the_mlp_size_estimate_counts_the_parameters_torch_builds():
    from optbench.registry.problems import build_problem

    for problem in ("mlp-classification(width=7, depth=3)", "mlp-regression(depth=0)", "mlp-regression"):
        built = build_problem(problem, steps=1)
        sizes = limits.mlp_sizes(problem)
        assert limits.mlp_parameters(
            sizes["width"], sizes["depth"], sizes["in_dim"], sizes["out_dim"]
        ) == sum(p.numel() for p in built.model.parameters())


def test_init_report_width_is_capped_by_memory(cli, tmp_path):
    result = cli("init-report", "--width", "200000", "--out", tmp_path / "i")
    _one_line_exit_2(result, "--width 200000", "200000x200000", "more than the")
    assert not (tmp_path / "i").exists()
    assert limits.init_stack_bytes(100, 200000, 16) > 100 * 8 * 200000**2  # 298 GiB a layer


# ---------------------------------------------------------------------------- quoting, literals, TOML


def test_a_non_finite_literal_is_refused_quoting_what_was_typed(cli, tmp_path):
    result = cli("grid", "--optimizer", "sgd(momentum=1e400)", "--out", tmp_path / "g")
    message = _one_line_exit_2(result, "'sgd(momentum=1e400)'", "'1e400'", "not a finite number")
    assert "inf" not in message.replace("reads as inf", "")


def test_a_toml_file_that_is_not_utf8_is_one_line_naming_it(cli, tmp_path):
    spec = tmp_path / "latin1.toml"
    spec.write_bytes('optimizer = "sgd"\n# caf\xe9\n'.encode("latin-1"))
    result = cli("grid", "--spec", spec, "--out", tmp_path / "g")
    _one_line_exit_2(result, str(spec), "not UTF-8", "byte 0xe9 on line 2")
    with pytest.raises(OptbenchError, match="not UTF-8"):
        load_spec_toml(spec)


def test_one_lr_check():
    assert check_lr(0.1) == 0.1 and check_lr(1) == 1.0
    for bad in (0, -0.1, math.inf, math.nan, True, "0.1"):
        with pytest.raises(OptbenchError, match="must be a positive learning rate"):
            check_lr(bad, "--lr")


# ------------------------------------------------------------------------------- runs that never updated


def test_fp16_whose_grad_scaler_skipped_every_step_is_failed_not_ok():
    """init_scale=1e30 overflows fp16 at every scale down to 1e30/2^29: no step was ever taken."""
    config = RunConfig(problem="mlp-regression(width=8)", precision="fp16(init_scale=1e30)", lr=1e6, steps=30)
    result = run(config)
    assert result.trace["skipped_step"].all()
    assert result.summary.status == "failed"
    assert result.summary.reason == (
        "GradScaler skipped all 30 steps (inf/nan gradients at every loss scale from 1e+30 down to "
        "1.86265e+21): the parameters never changed"
    )
    assert np.all(result.trace["update_norm"] == 0)  # the run is still data
    ordinary = run(config.replace(precision="fp16", lr=0.01))
    assert ordinary.summary.status == "ok" and not ordinary.trace["skipped_step"].all()


def test_final_val_metrics_are_the_last_measured_values():
    """One trace->summary function for both engines: NaN means "not evaluated at this step" and is skipped;
    an inf was measured (the held-out loss blew up) and is reported, not hidden behind an older value."""
    trace = {"loss": np.array([2.0, 1.0, 0.5, 0.25]), "val_loss": np.array([0.5, np.nan, math.inf, np.nan]),
             "val_acc": np.array([0.5, np.nan, 0.75, np.nan])}  # fmt: skip
    summary = summary_of(trace, diverged_step=None, steps_done=4)
    assert summary["final_val_loss"] == math.inf and summary["final_val_acc"] == 0.75
    assert summary["final_loss"] == 0.25 and summary["best_loss"] == 0.25 and summary["status"] == "ok"
    nothing = summary_of({**trace, "val_loss": np.full(4, np.nan)}, diverged_step=None, steps_done=4)
    assert nothing["final_val_loss"] is None


def test_the_runs_of_a_refused_grid_leave_no_rows(tmp_path):
    """run_grid on RunConfigs checks the stand-ins too (the Python API, not only the CLI)."""
    from optbench.grid import run_grid

    with pytest.raises(OptbenchError, match="cannot be built"):
        run_grid([RunConfig(optimizer="adam(eps='tiny')")], out=tmp_path / "g", workers=1)
    assert not (tmp_path / "g").exists()


# ---------------------------------------------------------------------------------------------------- CUDA

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@needs_cuda
def test_cuda_runs_are_capped_by_the_gpus_memory_too():
    gpu = torch.cuda.get_device_properties(0).total_memory
    assert limits.memory_bytes("cuda") == min(gpu, limits.host_memory_bytes())
    assert limits.memory_bytes("cuda:0") == limits.memory_bytes("cuda")
    with pytest.raises(OptbenchError, match=r"cuda \(or this machine\)"):
        limits.check_steps(gpu // limits.RUN_BYTES_PER_STEP + 1, "cuda")


@pytest.mark.cuda
@needs_cuda
def test_optimizer_stand_ins_run_on_the_cells_device():
    """capturable=True needs the parameters on a GPU: refused on CPU, accepted on CUDA, so a grid over both
    devices runs (its CPU cells are invalid) and a CPU-only grid stops."""
    assert standins.optimizer_verdict("adam(capturable=True)", 0.01, None, "cuda") is None
    assert "capturable" in standins.optimizer_verdict("adam(capturable=True)", 0.01, None, "cpu")
    assert expand(GridSpec(optimizer="adam(capturable=True)", device="cpu,cuda", steps=5))
    with pytest.raises(OptbenchError, match="capturable"):
        expand(GridSpec(optimizer="adam(capturable=True)", device="cpu", steps=5))
