"""`bench report`: one offline HTML file (or Markdown + figure files) with what applies to a results folder."""

from __future__ import annotations

import base64
import html.parser
import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def make_folder(out: Path, configs) -> Path:
    """A results folder as `bench grid` writes it, one reference run per config."""
    from optbench.grid import run_grid

    run_grid(configs, out=out, workers=1, engine="reference")
    return out


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.alts: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
            self.alts.append(attrs.get("alt", ""))
        for name in ("href", "src"):
            if tag != "img" and name in attrs:
                self.links.append(attrs[name])


def parse(path: Path) -> tuple[str, _Images]:
    text = path.read_text()
    parser = _Images()
    parser.feed(text)
    return text, parser


def assert_offline(text: str, images: _Images, mime: str = "image/png") -> None:
    assert not re.search(r"https?://", text), "the report must name no network address"
    assert "url(" not in text and "@import" not in text
    assert all(link.startswith("#") for link in images.links)  # only the table of contents
    for source in images.sources:
        prefix = f"data:{mime};base64,"
        assert source.startswith(prefix)
        data = base64.b64decode(source[len(prefix) :])
        assert data.startswith(b"\x89PNG") if mime == "image/png" else b"<svg" in data[:2000]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """`bench lr-sweep` on the quadratic: 5 lrs from 0.05 to 0.45, 40 steps (0.25 is the bound)."""
    from typer.testing import CliRunner

    from optbench.cli.app import app

    out = tmp_path_factory.mktemp("sweep") / "sweep"
    result = CliRunner().invoke(
        app,
        [
            "lr-sweep",
            "--min",
            "0.05",
            "--max",
            "0.45",
            "--num",
            "5",
            "--steps",
            "40",
            "--out",
            str(out),
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_html_report_is_self_contained(cli, sweep):
    result = cli("report", sweep)
    assert result.exit_code == 0, result.output
    text, images = parse(sweep / "report.html")
    assert_offline(text, images)
    assert images.alts == ["loss-vs-step", "sensitivity"]
    assert "Command: <code>" in text and "Experiment: lr-sweep;" in text  # from the manifest (argv: pytest's)
    assert "torch" in text and "Environment" in text
    assert "Stability bound vs measurement" in text
    # lr 0.25 sits at loss 16 (not below its initial loss: unstable), 0.15 converges: 0.15 < 0.25 <= 0.25.
    row = re.search(r"<td[^>]*>0\.25</td><td[^>]*>0\.15</td><td[^>]*>0\.25</td><td>yes</td>", text)
    assert row


@pytest.mark.slow
def test_markdown_report_has_its_figures_beside_it(cli, sweep, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(sweep, folder)
    result = cli("report", folder, "--format", "md", "--figure-format", "svg")
    assert result.exit_code == 0, result.output
    text = (folder / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["report_files/loss_vs_step.svg", "report_files/final_loss_vs_lr.svg"]
    assert all(b"<svg" in (folder / link).read_bytes()[:2000] for link in links)
    assert "| problem | optimizer |" in text


@pytest.mark.slow
def test_svg_figures_embed_in_html(cli, sweep, tmp_path):
    out = tmp_path / "r.html"
    result = cli("report", sweep, "--figure-format", "svg", "--out", out)
    assert result.exit_code == 0, result.output
    assert_offline(*parse(out), mime="image/svg+xml")


@pytest.fixture(scope="module")
def grid_and_find(tmp_path_factory) -> tuple[Path, Path]:
    """Side by side: a grid (SGD on the quadratic, lr x momentum x 2 seeds) and an lr-find on the same problem."""
    from optbench.experiments.lrfind import lr_find
    from optbench.spec import RunConfig

    root = tmp_path_factory.mktemp("side")
    configs = [
        RunConfig(problem="quadratic", optimizer="sgd", lr=lr, momentum=m, seed=s, steps=30)
        for lr, m, s in itertools.product([0.02, 0.1, 0.2, 0.3], [0.0, 0.5], [0, 1])
    ]
    grid = make_folder(root / "grid", configs)
    find = lr_find(
        "quadratic", "sgd", start=1e-4, end=1.0, steps=30, momentum=0.0, out=root / "find", plots=False
    )
    return grid, find.out


@pytest.mark.slow
def test_grid_report_has_heatmap_bounds_and_the_lr_find_comparison(cli, grid_and_find):
    grid, _ = grid_and_find
    result = cli("report", grid)
    assert result.exit_code == 0, result.output
    text, images = parse(grid / "report.html")
    assert_offline(text, images)
    assert images.alts == ["loss-vs-step", "sensitivity", "heatmap"]
    assert "best per optimizer" in text and "Status per group" in text
    # results first, the environment last
    assert (
        text.index("<h2>Results</h2>")
        < text.index("<h2>Runs in detail</h2>")
        < text.index("<h2>Command and environment</h2>")
    )
    # m = 0: bound 0.25 bracketed by 0.2 (stable) and 0.3 (diverged): agrees. m = 0.5: bound 0.375, but every
    # lr swept (<= 0.3) is stable, so nothing was measured above it: not tested, not "yes".
    assert text.count("<td>yes</td>") == 1 and text.count("<td>not tested</td>") == 1
    assert "lr-find suggestions vs this grid" in text
    # lrs 0.3 diverge and there are 2 seeds: the captions name the red region, the hatching and the mean
    for said in (
        "Red shading: every run diverged",
        "Hatched red: every seed diverged",
        "Geometric mean over seeds",
    ):
        assert said in text


def test_report_captions_and_times_say_only_what_happened(cli, tmp_path):
    """Nothing diverged and one seed: no caption speaks of red regions or means. The grid ran in two
    invocations (the second one resumed it and added an lr): the report gives both and the total time."""
    from optbench.spec import RunConfig

    def configs(lrs):
        return [
            RunConfig(problem="quadratic", optimizer="sgd", lr=lr, momentum=m, steps=20)
            for lr, m in itertools.product(lrs, [0.0, 0.5])
        ]

    grid = make_folder(tmp_path / "grid", configs([0.02, 0.1]))
    make_folder(grid, configs([0.02, 0.1, 0.15]))
    assert cli("report", grid).exit_code == 0
    text, images = parse(grid / "report.html")
    assert images.alts == ["loss-vs-step", "sensitivity", "heatmap"]
    for unsaid in ("Red shading", "Hatched red", "Geometric mean"):
        assert unsaid not in text
    when = re.search(
        r"Experiment: grid; first started (\S+), last ended (\S+); 2 invocations \(resumed\), ([\d.]+) s in all",
        text,
    )
    assert when is not None, text[text.index("Experiment:") :][:300]
    assert when.group(1) <= when.group(2)  # ISO times in one zone sort as text


def test_status_table_gives_an_mlp_its_architecture_axes():
    """An MLP grid's width is an axis in the detail table and the Varying line, as in the summary, not a
    part of the problem string."""
    import pandas as pd

    from optbench.report.tables import status_table

    runs = pd.DataFrame(
        {
            "problem": ["mlp-classification(width=8)", "mlp-classification(width=16)"] * 2,
            "optimizer": ["sgd"] * 4,
            "lr": [0.1, 0.1, 0.3, 0.3],
            "seed": [0] * 4,
            "status": ["ok", "ok", "ok", "diverged"],
        }
    )
    table = status_table(runs).set_index("width")
    assert list(table.columns[:2]) == ["problem", "optimizer"]
    assert set(table["problem"]) == {"mlp-classification"}
    assert table.loc[16, "smallest diverged lr"] == 0.3 and pd.isna(table.loc[8, "smallest diverged lr"])
    assert table["runs"].to_dict() == {8: 2, 16: 2}


def test_lr_find_report_compares_with_the_grid_beside_it(cli, grid_and_find):
    _, find = grid_and_find
    result = cli("report", find)
    assert result.exit_code == 0, result.output
    text, images = parse(find / "report.html")
    assert_offline(text, images)
    assert images.alts == ["lr-find"]
    assert "Learning-rate range test" in text and "grid best lr" in text
    assert "No grid over the same problem" not in text


def test_compare_folder_must_exist(cli, sweep, tmp_path):
    result = cli("report", sweep, "--compare", tmp_path / "nope")
    assert result.exit_code == 2 and "--compare folder" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "pdf"], "unknown report format 'pdf'"),
        (["--figure-format", "pdf"], "cannot be embedded in HTML"),
    ],
)
def test_report_bad_options(cli, sweep, args, message):
    result = cli("report", sweep, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_report_missing_or_empty_folder(cli, tmp_path):
    missing = cli("report", tmp_path / "nope")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    empty = cli("report", tmp_path)
    assert empty.exit_code == 2 and "no results in" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_report_draws_the_init_and_amp_figures_with_their_own_modules(cli, tmp_path):
    initprobe = pytest.importorskip("optbench.experiments.initprobe")
    amp = pytest.importorskip("optbench.experiments.amp")
    pytest.importorskip("optbench.figures.init")
    pytest.importorskip("optbench.figures.amp")
    init_out = tmp_path / "init"
    initprobe.init_report(
        ["normal", "normal(std=0.25)"], ["none"], depth=12, width=16, batch=4, out=init_out, plots=False
    )
    result = cli("report", init_out)
    assert result.exit_code == 0, result.output
    text, images = parse(init_out / "report.html")
    assert_offline(text, images)
    assert images.alts == ["init-std", "init-gains"]
    assert "Init report" in text

    amp_out = tmp_path / "amp"
    amp.amp_benchmark(
        device="cpu",
        widths=(16,),
        depth=2,
        batch=16,
        precisions=("fp32",),
        min_run_time_s=0.01,
        warmup_steps=1,
        out=amp_out,
        plot=False,
    )
    result = cli("report", amp_out)
    assert result.exit_code == 0, result.output
    text, images = parse(amp_out / "report.html")
    assert_offline(text, images)
    assert images.alts == ["amp-scaling", "amp"]


@pytest.mark.slow
def test_report_never_imports_the_engine(sweep, tmp_path):
    code = (
        "import sys\n"
        "from optbench.report import build_report\n"
        f"build_report({str(sweep)!r}, out={str(tmp_path / 'r.html')!r})\n"
        "assert 'optbench.engine.reference' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium for the render check")
def test_report_renders_in_headless_chromium(cli, sweep, tmp_path):
    cli("report", sweep)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "check_report_render.sh"),
            str(sweep / "report.html"),
            str(shot),
            "2000",
        ],
        check=True,
        timeout=120,
    )
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000  # a blank page compresses to a few kB
