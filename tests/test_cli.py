"""The ``bench`` CLI end to end: lr-sweep into tmp_path and read back, ``list``, bad inputs (one line on
stderr, exit 2, no traceback, nothing left behind), ``--help`` without heavy imports, ``python -m optbench``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from optbench.registry import by_kind
from optbench.spec import runs_schema

# ------------------------------------------------------------------------------------------------ lr-sweep


def test_lr_sweep_end_to_end(cli, tmp_path):
    out = tmp_path / "sweep"
    result = cli(
        "lr-sweep",
        "--min",
        "0.05",
        "--max",
        "0.35",
        "--num",
        "4",
        "--steps",
        "60",
        "--out",
        out,
        "--no-plots",
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "largest stable lr: 0.15" in result.stdout
    assert "analytic bound lr < 0.25" in result.stdout and "agrees" in result.stdout

    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs.columns) == runs_schema().names
    assert runs["lr"].tolist() == pytest.approx([0.05, 0.15, 0.25, 0.35])
    assert runs["status"].tolist() == ["ok", "ok", "ok", "diverged"]  # 0.35: 16·3.24^t > 1.6e7 at t = 12
    assert runs[["problem", "optimizer", "scheduler", "init", "loss", "device"]].iloc[0].tolist() == [
        "quadratic",
        "sgd",
        "none",
        "default",
        "none",
        "cpu",
    ]
    traces = pd.read_parquet(out / "traces")
    assert traces.groupby("run_id").size().to_dict() == dict(
        zip(runs["run_id"], [60, 60, 60, 13], strict=True)
    )
    first = traces[traces["run_id"] == runs["run_id"][0]].sort_values("step")
    assert first["loss"].iloc[0] == 16.0
    assert first["loss"].iloc[-1] == pytest.approx(16 * (1 - 8 * 0.05) ** (2 * 59), rel=1e-4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bound_agrees"] is True and manifest["torch"] == torch.__version__


@pytest.mark.slow
def test_lr_sweep_with_momentum_and_plots(cli, tmp_path):
    out = tmp_path / "hb"
    result = cli(
        "lr-sweep", "--momentum", "0.5", "--min", "0.30", "--max", "0.45", "--num", "16", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "largest stable lr: 0.37" in result.stdout
    assert "analytic bound lr < 0.375" in result.stdout and "measurement agrees" in result.stdout
    assert (out / "loss_vs_step.png").exists() and (out / "final_loss_vs_lr.png").exists()
    assert "diverged at step" in result.stdout


def test_lr_sweep_shows_invalid_cells_with_their_reason(cli, tmp_path):
    result = cli(
        "lr-sweep",
        "--optimizer",
        "sparseadam",
        "--num",
        "2",
        "--steps",
        "3",
        "--out",
        tmp_path / "x",
        "--no-plots",
    )
    assert result.exit_code == 0, result.output
    assert "invalid" in result.stdout and "largest stable lr: none" in result.stdout
    assert pd.read_parquet(tmp_path / "x" / "runs.parquet")["status"].tolist() == ["invalid", "invalid"]


# ---------------------------------------------------------------------------------------------------- list


@pytest.mark.parametrize("kind", ["problems", "optimizers", "schedulers", "inits", "losses"])
def test_list_prints_every_registered_name(cli, kind):
    result = cli("list", kind)
    assert result.exit_code == 0, result.output
    first_words = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert first_words == by_kind(kind).names()


def test_list_schedulers_shows_aliases_and_derived_defaults(cli):
    lines = {line.split()[0]: line for line in cli("list", "schedulers").stdout.splitlines()}
    assert "(alias: cosine)" in lines["cosineannealinglr"]
    assert "T_max=steps" in lines["cosineannealinglr"]


def test_list_activations(cli):
    result = cli("list", "activations")
    assert result.exit_code == 0
    assert "calculate_gain('tanh')" in result.stdout


def test_list_unknown_kind(cli):
    result = cli("list", "optimisers")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: unknown kind 'optimisers'; valid: problems, optimizers, schedulers, inits, losses, activations"
    )


# ---------------------------------------------------------------------------------------------- bad inputs

BAD_INPUTS = {
    "min > max": (["--min", "0.3", "--max", "0.1"], ["0.3", "0.1"]),
    "zero lr": (["--min", "0"], ["--min", "0"]),
    "negative lr": (["--min", "-0.1"], ["-0.1"]),
    "negative max": (["--max", "-1"], ["--max", "-1"]),
    "num 0": (["--num", "0"], ["--num", "0"]),
    "unknown optimizer": (["--optimizer", "adamm"], ["adamm", "adam,", "sgd-l1l2"]),
    "unknown problem": (["--problem", "quadratik"], ["quadratik", "quadratic", "rosenbrock"]),
    "unknown scheduler": (["--scheduler", "steplrr"], ["steplrr", "steplr", "warmup-cosine"]),
    "unknown init": (["--init", "he"], ["'he'", "xavier_normal"]),
    "unknown loss": (["--loss", "dicee"], ["dicee", "focal"]),
    "unknown device": (["--device", "tpu"], ["tpu", "cpu"]),
    "unknown spacing": (["--spacing", "cubic"], ["cubic", "linear", "log"]),
    "missing paren": (["--scheduler", "steplr(step_size=5"], ["steplr(step_size=5", "')'"]),
    "non-literal value": (["--optimizer", "adam(betas=foo)"], ["'foo'", "betas"]),
    "positional argument": (["--scheduler", "steplr(5)"], ["steplr(5)"]),
    "bad momentum": (["--momentum", "1.5"], ["1.5"]),
    "zero steps": (["--steps", "0"], ["--steps", "0"]),
    "optimizer import path": (
        ["--optimizer", "no_such_module_xyz:Opt"],
        ["no_such_module_xyz:Opt", "--allow-imports no_such_module_xyz"],
    ),
    "missing allowed module": (
        ["--optimizer", "no_such_module_xyz:Opt", "--allow-imports", "no_such_module_xyz"],
        ["no_such_module_xyz:Opt", "no module named"],
    ),
    "standard library": (
        ["--optimizer", "collections:OrderedDict"],
        ["collections:OrderedDict", "standard library"],
    ),
    # bad values the engine would only discover per cell: refused up front like the rest
    "bad toy start": (["--problem", "rosenbrock(x0=1.0)", "--optimizer", "adam"], ["x0"]),
    "scheduler import path": (["--scheduler", "no_such_module_xyz:Sched"], ["no_such_module_xyz:Sched"]),
    "unknown scheduler argument": (["--scheduler", "steplr(bogus=1)"], ["bogus", "step_size"]),
    "unknown optimizer argument": (["--optimizer", "sgd(bogus=1)"], ["bogus"]),
    "unknown problem argument": (["--problem", "quadratic(bogus=1)"], ["bogus", "scale", "x0"]),
    "chained call": (["--scheduler", "steplr(step_size=5)(gamma=0.5)"], ["steplr(step_size=5)(gamma=0.5)"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, tmp_path, monkeypatch, case):
    args, needles = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)  # the default output folder would go under ./results
    out = tmp_path / "out"
    extra = ["--no-plots", "--out", out]
    extra += ["--num", "2"] if "--num" not in args else []
    extra += ["--steps", "3"] if "--steps" not in args else []
    result = cli("lr-sweep", *args, *extra)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert result.stdout == ""
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("lr-sweep", "--device", "cuda", "--num", "2", "--steps", "3")
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("error: ") and "cuda" in message and "CUDA" in message
    assert "\n" not in message and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ start-up, entry points

_HELP_PROBE = """
import sys, time
start = time.perf_counter()
import optbench.cli.app
after_import = [m for m in ("torch", "pandas", "matplotlib", "pyarrow") if m in sys.modules]
for argv in (["--help"], ["lr-sweep", "--help"], ["list", "--help"]):
    sys.argv = ["bench", *argv]
    try:
        optbench.cli.main()
    except SystemExit as exit:
        assert exit.code in (0, None), (argv, exit.code)
elapsed = time.perf_counter() - start
heavy = [m for m in ("torch", "pandas", "matplotlib", "pyarrow") if m in sys.modules]
print(repr((after_import, heavy, elapsed)), file=sys.stderr)
"""


def test_help_is_fast_and_imports_nothing_heavy():
    probe = subprocess.run([sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    after_import, heavy, elapsed = ast.literal_eval(probe.stderr.strip().splitlines()[-1])
    assert after_import == [] and heavy == []
    assert "lr-sweep" in probe.stdout and "--min" in probe.stdout
    assert elapsed < 2.0, f"bench --help took {elapsed:.2f} s"


def test_spec_module_imports_nothing_heavy():
    code = "import sys, optbench.spec, optbench.errors; print(sorted({'torch', 'pyarrow', 'pandas'} & set(sys.modules)))"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "[]", probe.stderr


@pytest.mark.slow
def test_python_dash_m_optbench():
    probe = subprocess.run(
        [sys.executable, "-m", "optbench", "list", "losses"], capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    assert [line.split()[0] for line in probe.stdout.splitlines()] == by_kind("losses").names()
    bad = subprocess.run(
        [sys.executable, "-m", "optbench", "list", "nope"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown kind 'nope'")
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["lr-sweep", "--num", "2", "--steps", "3"],
        ["grid", "--steps", "3"],
        ["init-report", "--depth", "2"],
        ["schedules", "--steps", "5"],
    ],
)
def test_an_out_that_is_a_file_is_a_one_line_error(cli, tmp_path, argv):
    target = tmp_path / "afile"
    target.write_text("keep me")
    result = cli(*argv, "--out", str(target))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --out {target} is a file, not a folder"
    assert target.read_text() == "keep me"


def test_lr_sweep_takes_a_precision(cli, tmp_path):
    out = tmp_path / "bf16"
    result = cli(
        "lr-sweep",
        "--problem",
        "mlp-regression",
        "--precision",
        "bf16",
        "--num",
        "2",
        "--steps",
        "5",
        "--no-plots",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    runs = pd.read_parquet(out / "runs.parquet")
    assert set(runs["precision"]) == {"bf16"} and set(runs["status"]) == {"ok"}


def test_a_sweep_that_brackets_nothing_does_not_claim_agreement(cli, tmp_path):
    # every cell is invalid (an init on a toy function): nothing was measured on either side of 0.25
    result = cli(
        "lr-sweep",
        "--init",
        "kaiming_normal",
        "--num",
        "2",
        "--steps",
        "3",
        "--no-plots",
        "--out",
        str(tmp_path / "x"),
    )
    assert result.exit_code == 0
    assert "not tested" in result.stdout and "agrees" not in result.stdout


def test_schedules_rejects_a_misspelt_argument(cli, tmp_path):
    result = cli("schedules", "--schedulers", "steplr(step_siz=5)", "--out", str(tmp_path / "s"))
    assert result.exit_code == 2 and "no argument 'step_siz'" in result.stderr
    assert not (tmp_path / "s").exists()
