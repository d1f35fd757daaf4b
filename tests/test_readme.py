"""The README's Quick start is the contract with a newcomer: exactly two commands, and CI runs the second."""

from __future__ import annotations

import re
from pathlib import Path

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
