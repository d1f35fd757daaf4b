"""Which standard figures a folder gets, at the edges: one cell, every run diverged, too many panels."""

from __future__ import annotations

import pytest


def grid(out, **axes):
    from optbench.grid import run_grid

    run_grid({"problem": ["quadratic"], "steps": 10, **axes}, out=out, workers=1)
    return out


def test_a_one_cell_grid_gets_its_loss_curve(cli, tmp_path):
    from optbench import report

    one = grid(tmp_path / "one", lr=[0.01])
    figures = report.standard_figures(report.load(one), tmp_path / "figs")
    assert [f.name for f in figures] == ["loss-vs-step"] and figures[0].path.exists()
    assert cli("plot", one, "--figure", "loss-vs-step", "--out", tmp_path / "f").exit_code == 0


def test_every_run_diverged_is_a_figure_not_an_error(cli, tmp_path):
    """SGD on 4x^2 diverges for every lr above 0.25: the sensitivity figure shows the lrs as x marks over
    the shaded region, without a y scale (there is no final loss), and --figure all exits 0."""
    import matplotlib.pyplot as plt

    from optbench.figures import runs as plots
    from optbench.store import read_runs

    div = grid(tmp_path / "div", optimizer=["sgd"], lr=[0.5, 0.8, 1.0], momentum=[0.0, 0.5])
    result = cli("plot", div, "--figure", "all")
    assert result.exit_code == 0, result.output
    assert "figure: " in result.stdout and "final_loss_vs_lr" in result.stdout
    captured = {}
    real_save = plots.save

    def keep(fig, path):
        captured["fig"] = fig
        return real_save(fig, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save", keep)
        plt.close("all")
        plots.sensitivity(read_runs(div), tmp_path / "s.png")
    plot = cli("plot", div, "--y", "final_loss")
    assert plot.exit_code == 2 and "every run diverged: --figure sensitivity shows where" in plot.stderr
    assert "0 or less" not in plot.stderr
    (ax,) = captured["fig"].axes
    marks = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert sorted(marks[0].get_xdata()) == [0.5, 0.8, 1.0]
    assert list(ax.get_yticks()) == [] and "every run diverged" in ax.get_title()
    heatmap = plots.heatmap_figure(read_runs(div))
    assert len(heatmap.axes) == 1  # no colour bar: no cell has a loss to colour
    plt.close(heatmap)


@pytest.mark.slow
def test_figure_all_skips_a_figure_that_does_not_suit_and_names_a_selection(cli, tmp_path):
    """16 optimizer x scheduler panels: the heatmap (at most 12) is skipped under --figure all (exit 0) with
    a command that draws a selection, and refused when asked for by name (exit 2)."""
    many = grid(
        tmp_path / "many",
        optimizer=["sgd", "adam", "rmsprop", "adamw"],
        scheduler=["none", "cosine", "steplr(step_size=5)", "onecycle"],
        lr=[0.01, 0.1],
        momentum=[0.0, 0.5],
    )
    result = cli("plot", many, "--figure", "all", "--out", tmp_path / "all")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and "16 lr x momentum panels are too many" in skipped[0]
    assert f"bench plot {many} --y final_loss --hue momentum --where scheduler=" in skipped[0]
    alone = cli("plot", many, "--figure", "heatmap", "--out", tmp_path / "one")
    assert alone.exit_code == 2 and "does not suit the data" in alone.stderr
