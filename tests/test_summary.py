"""The compact answer of a grid (`bench summary`, the end of `bench grid`, ``optbench.summary``), the ETA of
the progress bar and the small things of the command line (--version, -h, metavars, bench list)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from optbench.grid.summary import axis_frame, settings_table, sort_settings, summary

LRS = [0.01, 0.03, 0.1, 0.3, 1.0]


def make_runs(rows) -> pd.DataFrame:
    """runs.parquet-like rows: (problem, optimizer, lr, momentum, seed, status, final_loss[, val_acc])."""
    from optbench.spec import CONFIG_FIELDS

    defaults = {c: None for c in CONFIG_FIELDS}
    defaults.update(scheduler="none", init="default", loss="none", precision="fp32", device="cpu", steps=50)
    frame = []
    for i, row in enumerate(rows):
        problem, optimizer, lr, momentum, seed, status, loss, *acc = row
        frame.append(
            {
                **defaults,
                "run_id": f"r{i}",
                "problem": problem,
                "optimizer": optimizer,
                "lr": lr,
                "momentum": momentum,
                "seed": seed,
                "status": status,
                "final_loss": loss,
                "best_loss": loss,
                "final_val_loss": np.nan,
                "final_val_acc": acc[0] if acc else np.nan,
                "wall_time_s": 0.1,
                "reason": None,
                "warnings": None,
                "batch_size": np.nan,
                "head_lr_scale": 1.0,
                "freeze": 0,
            }
        )
    return pd.DataFrame(frame)


@pytest.fixture
def sweep_runs():
    """SGD: loss 1/lr until lr 0.3 diverges (one seed of two at 0.3, both at 1.0); Adam: loss = lr."""
    rows = []
    for lr in LRS:
        for seed in (0, 1):
            diverged = lr == 1.0 or (lr == 0.3 and seed == 1)
            rows.append(("quadratic", "sgd", lr, 0.9, seed, "diverged" if diverged else "ok", 1 / lr + seed))
            rows.append(("quadratic", "adam", lr, 0.9, seed, "ok", lr + 0.01 * seed))
    return make_runs(rows)


def test_best_setting_and_its_stable_lr_range(sweep_runs):
    table = settings_table(sweep_runs).set_index(["optimizer", "lr"])
    best = table[table["best"]]
    assert sorted(best.index) == [("adam", 0.01), ("sgd", 0.1)]  # sgd at 0.3 lost a seed: not "every seed ok"
    sgd = best.loc[("sgd", 0.1)]
    assert sgd["final_loss"] == pytest.approx((10 + 11) / 2)
    assert sgd["final_loss_std"] == pytest.approx(np.std([10, 11], ddof=1))
    assert (sgd["stable_lr_min"], sgd["stable_lr_max"]) == (0.01, 0.1)  # 0.3 has a diverged seed
    adam = best.loc[("adam", 0.01)]
    assert (adam["stable_lr_min"], adam["stable_lr_max"]) == (0.01, 1.0)  # the whole grid: may go on beyond
    assert table.loc[("sgd", 0.3), "diverged"] == 1 and table.loc[("sgd", 0.3), "ok"] == 1


def test_sorted_top_k_and_sort_columns(sweep_runs):
    top = summary(sweep_runs, top=3)
    assert list(zip(top["optimizer"], top["lr"], strict=True)) == [
        ("adam", 0.01),
        ("adam", 0.03),
        ("adam", 0.1),
    ]
    by_lr = summary(sweep_runs, sort="lr")
    assert by_lr["lr"].is_monotonic_increasing
    last = sort_settings(settings_table(sweep_runs)).iloc[-1]
    assert (last["optimizer"], last["lr"]) == ("sgd", 1.0)  # no ok seed: no loss, ranked last
    with pytest.raises(Exception, match="unknown --sort 'speed'"):
        summary(sweep_runs, sort="speed")
    with pytest.raises(Exception, match="--top must be >= 1"):
        summary(sweep_runs, top=0)


def test_ties_of_diverged_and_lr_go_to_the_lower_final_loss(sweep_runs):
    """sgd comes first in grid order; on a tie in --sort diverged or lr the lower final loss wins."""
    by_lr = summary(sweep_runs, sort="lr")
    assert list(zip(by_lr["lr"], by_lr["optimizer"], strict=True))[:2] == [(0.01, "adam"), (0.01, "sgd")]
    by_diverged = summary(sweep_runs, sort="diverged")
    assert (by_diverged["optimizer"].iloc[0], by_diverged["lr"].iloc[0]) == ("adam", 0.01)  # loss 0.015
    clean = by_diverged[by_diverged["diverged"] == 0]["final_loss"]
    assert clean.is_monotonic_increasing


def test_a_sort_column_no_run_has_is_refused_naming_those_it_has(sweep_runs):
    with pytest.raises(Exception, match="no run here has a final_val_acc") as err:
        summary(sweep_runs, sort="final_val_acc")
    assert str(err.value).endswith("valid here: final_loss, best_loss, wall_time_s, diverged, lr")


def two_problem_runs():
    """quadratic and rosenbrock, sgd and adam, 6 lrs: the quadratic's losses are all lower."""
    rows = []
    for problem, scale in (("quadratic", 1e-6), ("rosenbrock", 1.0)):
        for optimizer in ("sgd", "adam"):
            for lr in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3):
                rows.append((problem, optimizer, lr, None, 0, "ok", scale * (1 + lr)))
    return make_runs(rows)


def test_the_top_table_ranks_within_each_problem():
    """Losses of different problems are not comparable: the top 10 of two problems are the best 5 of each,
    problem first, ranked 1..5 within it (the 10 lowest losses are all the quadratic's)."""
    from optbench.report.answer import top_table

    table = summary(two_problem_runs())
    assert table.head(10)["problem"].eq("quadratic").all()  # the trap: one problem's rows only
    shown = top_table(table, 10, "final_loss")
    names = [name for name, _ in shown.columns]
    assert names[:2] == ["problem", "#"]
    assert [(row[0], row[1]) for row in shown.rows] == [
        (problem, str(rank)) for problem in ("quadratic", "rosenbrock") for rank in range(1, 6)
    ]
    assert shown.title == "top 5 per problem of 24 settings by final_loss"
    losses = [float(row[names.index("final loss")]) for row in shown.rows if row[0] == "rosenbrock"]
    assert losses == sorted(losses) and losses[0] == pytest.approx(1.001, rel=1e-3)
    assert len(top_table(table, 3, "final_loss").rows) == 4  # ceil(3 / 2) each: every problem shown


def test_accuracy_sorts_highest_first():
    runs = make_runs(
        [("mlp-classification", "adam", lr, None, 0, "ok", 1.0, acc) for lr, acc in ((0.01, 0.5), (0.1, 0.9))]
    )
    assert summary(runs, sort="final_val_acc")["lr"].tolist() == [0.1, 0.01]


def test_folded_architecture_options_are_axes_again():
    runs = make_runs(
        [
            ("mlp-classification(activation='tanh', width=16)", "adam", 0.1, None, 0, "ok", 0.5),
            ("mlp-classification(width=64)", "adam", 0.1, None, 0, "ok", 0.2),
        ]
    )
    frame = axis_frame(runs)
    assert frame["problem"].unique().tolist() == ["mlp-classification"]
    assert frame["width"].tolist() == [16, 64]
    assert frame["activation"].iloc[0] == "tanh" and pd.isna(frame["activation"].iloc[1])  # the default
    table = settings_table(runs)
    assert table["best"].sum() == 1 and table.loc[table["best"], "width"].item() == 64  # they compete


def test_best_per_another_axis(sweep_runs):
    table = settings_table(sweep_runs, by=["lr"])
    assert table["best"].sum() == len(LRS)  # one best per lr
    assert table.loc[table["best"] & (table["lr"] == 1.0), "optimizer"].item() == "adam"  # sgd diverged there
    with pytest.raises(Exception, match="unknown --by 'colour'"):
        settings_table(sweep_runs, by=["colour"])


# ------------------------------------------------------------------------------------------ bench summary


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from optbench.grid import run_grid

    out = tmp_path_factory.mktemp("grid")
    run_grid(
        {"optimizer": ["sgd", "adam"], "lr": "logspace(-3,0,7)", "momentum": [0, 0.9], "steps": 30},
        out=out,
        workers=1,
    )
    return out


def test_python_api_returns_the_settings_table(folder):
    import optbench

    table = optbench.summary(folder)
    assert isinstance(table, pd.DataFrame) and len(table) == 2 * 7 * 2
    assert table["best"].sum() == 2 and {"stable_lr_min", "stable_lr_max", "final_loss_std"} <= set(
        table.columns
    )


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_bench_summary_machine_formats(cli, folder, fmt):
    result = cli("summary", folder, "--format", fmt, "--top", "5", "--sort", "final_loss")
    assert result.exit_code == 0, result.output
    if fmt == "csv":
        frame = pd.read_csv(__import__("io").StringIO(result.stdout))
    else:
        frame = pd.DataFrame(json.loads(result.stdout))
    assert len(frame) == 5 and frame["final_loss"].is_monotonic_increasing


def _numbers(text: str) -> list[str]:
    return re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?:e[-+]\d+)?", text)


def test_the_answer_fits_80_columns_and_never_cuts_a_number(folder):
    from rich.console import Console

    from optbench.cli.summary import print_summary
    from optbench.grid.summary import load_runs

    runs = load_runs(folder)
    table = summary(runs)
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_summary(console, runs, table, folder, top=10)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) <= 40  # one screen
    best = table[table["best"]]
    for _, row in best.iterrows():  # every best loss appears whole
        assert f"{row['final_loss']:.3g}" in text
    assert f"bench report {folder}" in text and "best per optimizer" in text


@pytest.mark.parametrize("width", [50, 40, 30])
def test_a_narrow_terminal_loses_whole_columns_never_part_of_a_number(folder, width):
    """Narrower than the table: text columns are cut with an ellipsis, then whole columns are left out
    (and named); a loss is never cut. Narrower than settings + loss (30), the table overflows whole."""
    from rich.console import Console

    from optbench.cli.summary import print_summary
    from optbench.grid.summary import load_runs

    runs = load_runs(folder)
    table = summary(runs)
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_summary(console, runs, table, folder, top=10)
    text = console.export_text()
    for _, row in table.head(10).iterrows():
        assert f"{row['final_loss']:.3g}" in text
    # each "(left out ...)" note follows its table: none of the columns it names is in that table's header
    said, header, lines = [], None, text.splitlines()
    for i, line in enumerate(lines):
        header = line if "final loss" in line else header
        if line.startswith("(left out to fit"):
            note = re.search(r"fit (\d+) columns: (.+?);", " ".join(lines[i : i + 4]))  # the note may wrap
            said.append(int(note.group(1)))
            assert not any(f" {name.strip()} " in f"{header} " for name in note.group(2).split(","))
    assert said and set(said) == {width}
    if width >= 40:
        assert max(len(line) for line in text.splitlines()) <= width


def test_the_top_table_shows_the_column_it_is_sorted_on(folder):
    from optbench.report.answer import top_table

    shown = top_table(summary(load_folder(folder), sort="wall_time_s"), 5, "wall_time_s")
    names = [name for name, _ in shown.columns]
    assert "time (s)" in names
    times = [float(row[names.index("time (s)")]) for row in shown.rows]
    assert times == sorted(times)
    assert "time (s)" not in [n for n, _ in top_table(summary(load_folder(folder)), 5, "final_loss").columns]


def load_folder(folder):
    from optbench.grid.summary import load_runs

    return load_runs(folder)


def test_bench_summary_bad_input(cli, folder, tmp_path):
    assert cli("summary", tmp_path / "nope").exit_code == 2
    bad = cli("summary", folder, "--sort", "speed")
    assert bad.exit_code == 2 and "unknown --sort 'speed'" in bad.stderr
    fmt = cli("summary", folder, "--format", "xml")
    assert fmt.exit_code == 2 and "unknown --format 'xml'" in fmt.stderr


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
@pytest.mark.parametrize("top", ["0", "-1"])
def test_bench_summary_refuses_a_top_below_one_in_every_format(cli, folder, fmt, top):
    result = cli("summary", folder, "--top", top, "--format", fmt)
    assert result.exit_code == 2 and result.stderr.strip() == f"error: --top must be >= 1, got {top}"
    assert result.stdout == ""


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_bench_summary_refuses_a_sort_column_the_folder_lacks(cli, folder, fmt):
    result = cli("summary", folder, "--sort", "final_val_acc", "--format", fmt)
    assert result.exit_code == 2 and result.stdout == ""
    assert (
        result.stderr.count("\n") == 1 and "valid here: final_loss, best_loss, wall_time_s" in result.stderr
    )


def test_bench_summary_by_takes_comma_lists_once_each(cli, folder):
    twice = cli("summary", folder, "--by", "optimizer", "--by", "optimizer")
    assert twice.exit_code == 0, twice.output
    header = next(line for line in twice.stdout.splitlines() if "final loss" in line)
    assert header.split().count("optimizer") == 1
    listed = cli("summary", folder, "--by", "optimizer,momentum", "--by", "momentum")
    assert listed.exit_code == 0, listed.output
    assert "best per optimizer, momentum (" in listed.stdout
    assert settings_table(load_folder(folder), by=["lr", "lr"]).attrs["by"] == ["lr"]


def test_a_title_is_a_line_of_its_own_never_wrapped_at_the_table_width():
    """A rich Table wraps its title at the table's width ("top 10 of 10 settings by⏎final_loss")."""
    from rich.console import Console

    from optbench.cli.summary import fitted_table
    from optbench.report.answer import TextTable

    narrow = TextTable(
        "top 3 of 3 settings by final_loss (a title wider than the table)",
        [("#", True), ("lr", True)],
        [["1", "0.1"], ["2", "0.01"], ["3", "1"]],
    )
    console = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    fitted_table(console, narrow)
    lines = console.export_text().splitlines()
    assert lines[0] == narrow.title
    console = Console(width=30, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    fitted_table(console, narrow)
    assert console.export_text().splitlines()[0] == narrow.title[:29] + "…"  # cut, not wrapped


def test_bench_summary_piped_prints_each_title_on_one_line(cli, folder):
    text = cli("summary", folder).stdout
    assert "best per optimizer (lowest mean final loss, all seeds ok)\n" in text
    assert "top 10 of 28 settings by final_loss\n" in text


def test_bench_grid_refuses_a_sort_column_its_runs_lack_and_keeps_them(cli, tmp_path):
    """Toy functions have no held-out set: refused before the grid runs, nothing written. A regression MLP
    has a held-out loss but no accuracy, known only from its runs: refused when it ends (one line, exit 2),
    with the runs it made committed."""
    toy = tmp_path / "toy"
    result = cli(
        "grid", "--lr", "0.1", "--steps", "3", "--sort", "final_val_acc", "--no-progress", "--out", toy
    )
    assert result.exit_code == 2 and "toy functions have no held-out set" in result.stderr
    assert not toy.exists()
    out = tmp_path / "g"
    args = ["--problem", "mlp-regression(n_train=32, n_val=8, width=4)", "--lr", "0.1", "--steps", "3"]
    result = cli("grid", *args, "--sort", "final_val_acc", "--no-progress", "--out", out)
    assert result.exit_code == 2 and "no run here has a final_val_acc" in result.stderr
    assert len(load_folder(out)) == 1


def test_bench_grid_refuses_a_bad_sort_before_running(cli, tmp_path):
    result = cli("grid", "--lr", "0.1", "--sort", "speed", "--out", tmp_path / "g")
    assert result.exit_code == 2 and "unknown --sort 'speed'" in result.stderr
    assert not (tmp_path / "g").exists()


# ------------------------------------------------------------------------------------------------- ETA


def test_eta_counts_config_steps_and_says_a_batch_is_running():
    """(More in tests/test_progress.py.) Two workers: a batch of 6 x 100 steps took 10 s (60 config-steps
    per worker-second); a batch of 6 x 800 steps runs since 5 s on the other worker."""
    from optbench.grid.progress import Work, eta_text

    works = [Work(6, 600, True, started=0.0), Work(6, 4800, True, started=5.0), Work(6, 600, True)]
    assert eta_text(works, 2, now=6.0) == "ETA: measuring · batches 1, 2 of 3 running"  # no pace yet
    works[0].finished = 10.0
    # The 800-step batch: 80 s at that pace, 5 of them run; the last batch: 10 s on the free worker.
    assert eta_text(works, 2, now=10.0) == "ETA 0:01:15 · batch 2 of 3 running"


# ------------------------------------------------------------------------------------------ command line


def test_version_and_short_help(cli):
    from optbench import __version__

    assert cli("--version").stdout.strip() == f"optbench {__version__}"
    assert cli("-h").exit_code == 0 and "Usage" in cli("-h").stdout
    assert cli("grid", "-h").exit_code == 0


@pytest.mark.parametrize("command", ["grid", "plot", "report", "lr-sweep", "summary", "list", "amp"])
def test_metavars_read_like_typers(cli, command):
    text = cli(command, "--help").stdout
    assert not re.search(r"<(bool|str|int|float|path|list\[\w+\])>", text, re.IGNORECASE), text


@pytest.mark.parametrize(
    ("command", "argument"),
    [
        ("plot", "DIR"),
        ("summary", "DIR"),
        ("report", "DIR"),
        ("verify", "DIR"),
        ("export", "DIR"),
        ("list", "KIND"),
    ],
)
def test_usage_lines_name_arguments_without_braces(cli, command, argument):
    usage = next(line for line in cli(command, "-h").stdout.splitlines() if "Usage:" in line)
    assert usage.split() == ["Usage:", "bench", command, "[OPTIONS]", argument]


def _help_paragraphs(text: str | None) -> list[str]:
    return [" ".join(p.split()) for p in (text or "").split("\n\n") if p.strip()]


def test_help_paragraphs_flow_in_a_wide_terminal(cli, monkeypatch):
    """A docstring's line breaks are not kept: in a terminal wide enough, each paragraph is one line."""
    from optbench.cli.app import app

    monkeypatch.setenv("COLUMNS", "400")
    listing = [" ".join(line.strip("│ ").split()) for line in cli("-h").stdout.splitlines()]
    for info in app.registered_commands:
        first = _help_paragraphs(info.callback.__doc__)[0]
        assert any(line.endswith(first) for line in listing), first
    for name in ("grid", "summary", "plot", "lr-sweep"):
        lines = [" ".join(line.split()) for line in cli(name, "-h").stdout.splitlines()]
        callback = next(i.callback for i in app.registered_commands if i.name == name)
        for paragraph in _help_paragraphs(callback.__doc__):
            assert paragraph in lines, paragraph


def test_plot_figure_help_lists_every_standard_figure(cli, monkeypatch):
    """Its help and its error message (``FIGURE_NAMES``) name the same figures."""
    from optbench.report.figures import FIGURE_NAMES

    monkeypatch.setenv("COLUMNS", "400")
    text = " ".join(cli("plot", "-h").stdout.split())
    listed = re.search(r"Draw a standard figure instead: (.+?), or all\.", text).group(1).split(", ")
    assert listed == list(FIGURE_NAMES)


def test_bench_list_shows_no_markup(cli):
    text = cli("list", "inits").stdout
    assert ":math:" not in text and "`" not in text
    assert "Fill the input Tensor with the value val." in text


@pytest.mark.slow
def test_a_script_without_a_main_guard_is_told_so(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import optbench
            optbench.run_grid({{"lr": [0.01, 0.1], "steps": 5}}, out={str(tmp_path / "out")!r}, workers=2,
                              engine="reference")
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0  # it runs in this process (tests/test_progress.py has more)
    assert len(result.stderr.splitlines()) == 1 and 'if __name__ == "__main__":' in result.stderr
    assert "another grid" not in result.stderr  # the old, misleading lock error


def test_a_users_by_still_keeps_problems_apart():
    """--by optimizer on two problems: the best setting is found per problem and optimizer, never one
    optimizer's best across losses that are not comparable."""
    table = summary(two_problem_runs(), by=["optimizer"])
    best = table[table["best"]]
    assert table.attrs["by"] == ["problem", "optimizer"]
    assert sorted(zip(best["problem"], best["optimizer"], strict=True)) == sorted(
        {(p, o) for p, o in zip(table["problem"], table["optimizer"], strict=True)}
    )
