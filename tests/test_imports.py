"""No spec runs code: import paths resolve only in packages the user allowed on the command line or in the
environment (optbench.registry.imports). Every hostile case of issue #12 is here, against real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import optbench
from optbench.errors import OptbenchError
from optbench.registry import imports
from optbench.registry.imports import ENV_VAR

SRC = str(Path(optbench.__file__).resolve().parents[1])

EVIL = """
from pathlib import Path
Path(__file__).with_name("marker.txt").write_text("imported")

class NotAnOptimizer:
    pass
"""


@pytest.fixture(autouse=True)
def nothing_allowed(monkeypatch):
    """Every test starts with no package allowed and ends with the environment it found."""
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def evilmod(tmp_path, monkeypatch):
    """``evilmod.py`` whose import writes ``marker.txt`` beside it, importable (on sys.path)."""
    (tmp_path / "evilmod.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "marker.txt"


def _one_line_exit_2(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# ------------------------------------------------------------------------------ import paths run no code


def test_an_import_path_is_refused_without_opt_in_and_its_module_never_runs(cli, evilmod, tmp_path):
    result = cli("grid", "--optimizer", "evilmod:NotAnOptimizer", "--out", tmp_path / "g")
    message = _one_line_exit_2(result, "'evilmod:NotAnOptimizer'", "--allow-imports evilmod")
    assert f"{ENV_VAR}=evilmod" in message
    assert not evilmod.exists() and not (tmp_path / "g").exists()


def test_allowing_another_package_does_not_import_this_one(cli, evilmod, tmp_path):
    result = cli("grid", "--optimizer", "evilmod:X", "--allow-imports", "mypkg", "--out", tmp_path / "g")
    _one_line_exit_2(result, "--allow-imports evilmod")
    assert not evilmod.exists()


def test_an_allowed_package_is_imported_and_still_type_checked(cli, evilmod, tmp_path):
    result = cli(
        "grid", "--optimizer", "evilmod:NotAnOptimizer", "--allow-imports", "evilmod", "--out", tmp_path
    )
    _one_line_exit_2(result, "not a torch.optim.Optimizer subclass")
    assert evilmod.read_text() == "imported"  # the user opted in: the module ran


def test_a_missing_module_of_an_allowed_package_is_one_line(cli, tmp_path, monkeypatch):
    (tmp_path / "optbench_emptypkg").mkdir()  # a package without the submodule the spec names
    (tmp_path / "optbench_emptypkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = "optbench_emptypkg.nothere:Opt"
    result = cli("grid", "--optimizer", path, "--allow-imports", "optbench_emptypkg", "--out", tmp_path / "g")
    _one_line_exit_2(
        result, f"cannot import optimizer {path!r}", "no module named 'optbench_emptypkg.nothere'"
    )
    assert not (tmp_path / "g").exists()


def test_a_grid_file_cannot_opt_in(cli, evilmod, tmp_path):
    spec = tmp_path / "grid.toml"
    spec.write_text('allow_imports = ["evilmod"]\noptimizer = "evilmod:NotAnOptimizer"\n')
    result = cli("grid", "--spec", spec, "--out", tmp_path / "g")
    _one_line_exit_2(result, "grid.toml, line 1", "cannot allow imports", "--allow-imports")
    assert not evilmod.exists() and not (tmp_path / "g").exists()


def test_allowed_names_are_top_level_packages_never_the_standard_library():
    assert imports.parse_packages(["a,b", " c ", "a"]) == ["a", "b", "c"]
    for bad, needle in (("os", "standard library"), ("builtins", "standard library"), ("a.b", "top-level")):
        with pytest.raises(OptbenchError, match=needle):
            imports.parse_packages(bad)


def test_the_environment_cannot_allow_the_standard_library(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "os,builtins,this,mypkg")
    assert imports.allowed_packages() == {"mypkg"}
    with pytest.raises(OptbenchError, match="names the standard library"):
        imports.import_object("os:_exit", "lr_lambda")


def test_a_callable_must_be_defined_in_an_allowed_package(tmp_path, monkeypatch):
    """``mypkg:os.system`` or a re-exported ``print`` reaches the standard library through a user module."""
    (tmp_path / "reexports.py").write_text("import os\nfrom builtins import print as show\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(ENV_VAR, "reexports")
    for path in ("reexports:os.system", "reexports:show"):
        with pytest.raises(OptbenchError, match="not in an allowed package"):
            imports.import_callable(path, "lr_lambda")
    with pytest.raises(OptbenchError, match="dunder"):
        imports.import_object("reexports:__builtins__", "lr_lambda")


def test_the_python_api_opts_in_for_this_process_and_its_workers(monkeypatch):
    assert optbench.allow_imports("mypkg", "other,mypkg") == ["mypkg", "other"]
    assert os.environ[ENV_VAR] == "mypkg,other"  # what spawned workers inherit
    assert imports.worker_env() == {ENV_VAR: "mypkg,other"}  # what Ray workers are given


def test_the_cli_opt_in_ends_with_the_command(cli, tmp_path):
    cli("grid", "--optimizer", "nomod_xyz:Opt", "--allow-imports", "nomod_xyz", "--out", tmp_path)
    assert ENV_VAR not in os.environ


# ------------------------------------------ callables in spec values, every route, in a fresh interpreter

HOSTILE_ROUTES = r"""
import json, os, sys
from pathlib import Path
from typer.testing import CliRunner
from optbench.cli.app import app

value = sys.argv[1]
tmp = Path(sys.argv[2])
toml = tmp / "grid.toml"
toml.write_text(f"scheduler = '{value}'\nsteps = 3\n")
routes = {
    "grid": ["grid", "--scheduler", value, "--steps", "3", "--workers", "1", "--out", str(tmp / "grid")],
    "toml": ["grid", "--spec", str(toml), "--workers", "1", "--out", str(tmp / "toml")],
    "lr-sweep": ["lr-sweep", "--scheduler", value, "--num", "2", "--steps", "3", "--no-plots",
                 "--out", str(tmp / "sweep")],
    "schedules": ["schedules", "--schedulers", value, "--steps", "3", "--out", str(tmp / "schedules")],
}
results = {}
for name, args in routes.items():
    r = CliRunner().invoke(app, args)
    results[name] = {"code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                     "folder": (tmp / args[-1]).exists()}
print("RESULTS " + json.dumps(results))
"""


@pytest.mark.slow
@pytest.mark.parametrize("value", ['lambdalr(lr_lambda="os:_exit")', 'lambdalr(lr_lambda="builtins:print")'])
def test_a_callable_in_a_spec_value_is_refused_on_every_route(tmp_path, value):
    """``os:_exit`` would end the interpreter with status 0 and no output; ``builtins:print`` would print
    ``0``. Each route runs in one fresh interpreter, so a call would show (no RESULTS line, or output)."""
    proc = subprocess.run(
        [sys.executable, "-c", HOSTILE_ROUTES, value, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, ENV_VAR: ""},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("RESULTS "), (proc.stdout, proc.stderr)  # the interpreter was not ended
    results = json.loads(proc.stdout.removeprefix("RESULTS "))
    for route, result in results.items():
        assert result["code"] == 2, (route, result)
        assert result["stdout"] == "", (route, result)  # nothing printed by the callable
        assert result["stderr"].count("\n") == 1 and "names the standard library" in result["stderr"], route
        assert not result["folder"], route


@pytest.mark.slow
def test_this_is_never_imported(tmp_path):
    """``import this`` prints the Zen of Python: refused before any import, in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "optbench", "grid", "--optimizer", "this:X", "--out", str(tmp_path / "g")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
    assert proc.stderr.strip() == (
        "error: optimizer 'this:X' names the standard library (this); optbench never imports it from a spec"
    )


# ------------------------------------------------------------- an allowed user package works end to end

USER_PACKAGE = {
    "__init__.py": "",
    "optim.py": '''
        import torch

        class PlainSGD(torch.optim.Optimizer):
            """w -= lr * g, written by a user."""

            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        p.add_(p.grad, alpha=-group["lr"])
    ''',
    "sched.py": '''
        def halve_every_5(t):
            return 0.5 ** (t // 5)

        class Halving:
            """Halves every group's lr every 5 steps by writing param_groups."""

            def __init__(self, optimizer):
                self.optimizer, self.t = optimizer, 0

            def step(self):
                self.t += 1
                if self.t % 5 == 0:
                    for group in self.optimizer.param_groups:
                        group["lr"] *= 0.5
    ''',
}


@pytest.fixture
def userpkg(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    (folder / "optbench_userpkg").mkdir(parents=True)
    for name, text in USER_PACKAGE.items():
        (folder / "optbench_userpkg" / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(folder))  # spawned workers get the parent's sys.path
    return "optbench_userpkg"


@pytest.mark.slow
def test_an_allowed_user_package_runs_as_optimizer_scheduler_and_lr_lambda_on_two_workers(
    cli, userpkg, tmp_path
):
    out = tmp_path / "g"
    result = cli(
        "grid",
        "--optimizer",
        "sgd,optbench_userpkg.optim:PlainSGD",
        "--scheduler",
        "steplr(step_size=5, gamma=0.5),optbench_userpkg.sched:Halving,"
        "lambdalr(lr_lambda='optbench_userpkg.sched:halve_every_5')",
        "--lr",
        "0.01,0.05",
        "--steps",
        "12",
        "--workers",
        "2",
        "--no-progress",
        "--allow-imports",
        userpkg,
        "--out",
        out,
    )
    assert result.exit_code == 0, (result.output, result.exception)
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 12 and set(runs["status"]) == {"ok"}, runs[["optimizer", "scheduler", "reason"]]
    cells = runs[["run_id", "optimizer", "scheduler", "lr"]].rename(columns={"lr": "base_lr"})
    traces = pd.read_parquet(out / "traces").merge(cells, on="run_id").sort_values("step")
    for (_, _, lr), group in traces.groupby(["optimizer", "scheduler", "base_lr"]):
        np.testing.assert_allclose(group["lr"], [lr * 0.5 ** (t // 5) for t in range(12)], rtol=1e-12)
    # the user's SGD is torch's SGD: the same losses, bit for bit, under each schedule
    by = traces.groupby(["optimizer", "scheduler", "base_lr"])["loss"].apply(list)
    for (optimizer, scheduler, lr), losses in by.items():
        if optimizer == "sgd":
            assert losses == by[("optbench_userpkg.optim:PlainSGD", scheduler, lr)]


@pytest.mark.slow
@pytest.mark.ray
def test_ray_workers_see_the_packages_allowed_after_ray_started(userpkg, tmp_path, monkeypatch):
    """Ray workers do not inherit the driver's environment: the allowed packages travel in the tasks'
    runtime_env. Allowed only after ray.init, so nothing else could carry them."""
    ray = pytest.importorskip("ray")
    from optbench.grid import GridSpec, run_grid

    site = tmp_path / "site"  # the workers import the user's package from here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), SRC, os.environ.get("PYTHONPATH", "")]))
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        optbench.allow_imports(userpkg)
        spec = GridSpec(optimizer=f"sgd,{userpkg}.optim:PlainSGD", lr="0.01,0.05", steps=5)
        runs = run_grid(spec, out=tmp_path / "g", executor="ray")
    finally:
        ray.shutdown()
    assert set(runs["status"]) == {"ok"}, runs["reason"].tolist()
    losses = runs.set_index(["optimizer", "lr"])["final_loss"]
    assert losses[(f"{userpkg}.optim:PlainSGD", 0.05)] == losses[("sgd", 0.05)]
