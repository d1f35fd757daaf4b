"""The README's Quick start is the contract with a newcomer: exactly two commands, and CI runs the second."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_exactly_two_commands_install_and_run_then_install_and_test():
    blocks = _quick_start_blocks()
    assert len(blocks) == 2
    main_job, tests = blocks
    assert "pip install -q torch==2.13.0" in main_job and main_job.endswith(
        "bench lr-sweep --min 0.01 --max 0.5"
    )
    assert "pip install -q torch==2.13.0" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _quick_start_blocks()[1] in ci


def _byop_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bring your own problem", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


@pytest.mark.slow
def test_the_bring_your_own_problem_example_is_short_and_runs_as_it_stands(tmp_path):
    """The README's example, run as a user runs it: a script in an empty folder, a fresh interpreter."""
    import os
    import subprocess
    import sys

    example = _byop_example()
    code_lines = [line for line in example.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code_lines) <= 25, len(code_lines)
    (tmp_path / "example.py").write_text(example)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("suggested lr: ") and float(lines[0].split()[-1]) > 0
    accuracies = [float(line.split()[-1]) for line in lines[1:] if line.split()[-1][0].isdigit()]
    assert len(accuracies) == 8 and all(0.7 < a <= 1 for a in accuracies), done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.py"]  # in memory: nothing written
