"""``bench report DIR``: one self-contained HTML file (or Markdown with figure files) about a results folder.

The report only reads what is in DIR (never re-runs anything) and shows what applies to it:

- the command line and environment from manifest.json;
- for run folders (runs.parquet: lr-sweep, grid, lr-find): status counts, the best cell per optimizer,
  diverged counts, the analytic stability bound against the measured bracket for toy problems, the
  invalid/failed reasons; figures: loss vs step per lr, final loss vs lr (log x, diverged region shaded,
  bound dashed), the lr x momentum heatmap, trajectories on the contours of 2-D toy functions, the lr
  each scheduler used; for lr-find, the range test with its suggestions, compared with the best lr of
  any grid over the same problem and optimizer found beside DIR (or named with ``compare``);
- schedules.parquet (``bench schedules``): the lr per step of every scheduler;
- the init report's Parquet (layers/gains): its std-per-layer and gain figures, drawn by ``optbench.figures.init``;
- the AMP benchmark's Parquet: the speed-up bars, drawn by ``optbench.figures.amp``.

A part whose data or plotting module is absent is skipped. The HTML embeds every figure as a ``data:`` URI
and has no reference to the network: it opens offline. ``standard_figures`` draws the figures alone
(``bench plot DIR --figure NAME``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.report.figures import FIGURE_NAMES, standard_figures
from optbench.report.load import Results, load
from optbench.report.render import render_html, render_markdown
from optbench.report.sections import build_sections

REPORT_FORMATS = ("html", "md")


def build_report(
    folder: Path | str,
    fmt: str = "html",
    figure_format: str = "png",
    compare: list[Path | str] | None = None,
    out: Path | str | None = None,
) -> Path:
    """Write DIR/report.html (figures embedded) or DIR/report.md (+ DIR/report_files/); return its path."""
    from optbench import store

    if fmt not in REPORT_FORMATS:
        raise OptbenchError(f"unknown report format {fmt!r}; valid: {', '.join(REPORT_FORMATS)}")
    if fmt == "html" and figure_format not in ("png", "svg"):
        raise OptbenchError(f"--figure-format {figure_format!r} cannot be embedded in HTML; valid: png, svg")
    for other in compare or []:
        if not Path(other).is_dir():
            raise OptbenchError(f"--compare folder {str(other)!r} does not exist")
    results = load(folder)
    folder = Path(folder)
    title = f"optbench report: {folder.resolve().name}"
    compare = [Path(c) for c in compare or []]
    if fmt == "md":
        target = Path(out) if out is not None else folder / "report.md"
        figdir = target.parent / f"{target.stem}_files"
        sections = build_sections(results, figdir, figure_format, compare)
        store.write_text_atomic(render_markdown(sections, title, target.parent), target)
        return target
    target = Path(out) if out is not None else folder / "report.html"
    with tempfile.TemporaryDirectory(prefix="optbench-report-") as tmp:
        sections = build_sections(results, Path(tmp), figure_format, compare)
        store.write_text_atomic(render_html(sections, title), target)
    return target


__all__ = [
    "FIGURE_NAMES",
    "REPORT_FORMATS",
    "Results",
    "build_report",
    "build_sections",
    "load",
    "standard_figures",
]
