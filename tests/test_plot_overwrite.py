"""`bench plot` writes over a file only if it drew it: never a results folder's own figures, never a file
optbench did not draw (the mark each figure carries: figures/stamp.py)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from typer.testing import CliRunner

    from optbench.cli.app import app

    out = tmp_path_factory.mktemp("s") / "sweep"
    result = CliRunner().invoke(app, ["lr-sweep", "--num", "3", "--steps", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_every_figure_carries_the_mark_and_others_do_not(tmp_path, fmt):
    from optbench.figures import style
    from optbench.figures.stamp import written_by_optbench

    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    ours = style.save(fig, tmp_path / f"ours.{fmt}")
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    fig.savefig(tmp_path / f"theirs.{fmt}")  # plain matplotlib, as a user's own script would
    plt.close(fig)
    assert written_by_optbench(ours) and not written_by_optbench(tmp_path / f"theirs.{fmt}")


def test_figure_all_into_the_sweep_folder_itself_is_refused(cli, sweep):
    before = {p.name: p.read_bytes() for p in sweep.glob("*.png")}
    result = cli("plot", sweep, "--figure", "all", "--out", sweep)
    assert result.exit_code == 2
    assert "is the lr-sweep's results folder; --figure writes into a folder of its own" in result.stderr
    named = cli("plot", sweep, "--out", sweep / "loss_vs_step.png")
    assert named.exit_code == 2 and "belongs to the lr-sweep" in named.stderr
    assert {p.name: p.read_bytes() for p in sweep.glob("*.png")} == before


def test_a_file_optbench_did_not_draw_is_never_written_over(cli, sweep, tmp_path):
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my own picture")
    result = cli("plot", sweep, "--out", mine)
    assert result.exit_code == 2 and "optbench did not draw it" in result.stderr
    folder = tmp_path / "figs"
    folder.mkdir()
    (folder / "loss_vs_step.png").write_bytes(b"my own picture")
    result = cli("plot", sweep, "--figure", "all", "--out", folder)
    assert result.exit_code == 2 and "optbench did not draw it" in result.stderr
    assert mine.read_bytes() == (folder / "loss_vs_step.png").read_bytes() == b"my own picture"


def test_its_own_figures_are_redrawn_and_a_file_name_is_not_a_folder(cli, sweep, tmp_path):
    for _ in range(2):
        assert cli("plot", sweep, "--out", tmp_path / "p.png").exit_code == 0
        assert cli("plot", sweep, "--figure", "all", "--out", tmp_path / "f").exit_code == 0
    result = cli("plot", sweep, "--figure", "heatmap", "--out", tmp_path / "h.png")
    assert result.exit_code == 2 and "names a file" in result.stderr
    assert not (tmp_path / "h.png").exists()
