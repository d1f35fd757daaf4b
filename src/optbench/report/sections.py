"""The report's sections, results first: the answer (best settings, top settings, figures), details (status,
stability bound, lr-find), the other experiments, and last the command and environment."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.grid.summary import axis_frame, varying_axes
from optbench.report.document import Section, Table
from optbench.report.figures import standard_figures
from optbench.report.load import Results
from optbench.report.render import fmt_cell
from optbench.report.tables import (
    lr_find_comparison,
    reasons_table,
    regimes,
    sharpness_table,
    stability_table,
    status_table,
)

ENV_KEYS = ("optbench", "torch", "python", "platform", "cpu", "cpu_count", "cuda_available", "cuda", "gpu")


_NOT_PARAMS = {"command", "argv", "started_at", "ended_at", "first_started_at", *ENV_KEYS}


def _environment(results: Results) -> Section:
    """The command line, when it ran, the versions and device, the parameters: last, after the results."""
    import pandas as pd

    manifest = results.manifest
    section = Section("Command and environment")
    if not manifest:
        section.text.append("This folder has no manifest.json: command and environment unknown.")
        return section
    argv = manifest.get("argv") or []
    argv = [str(a) for a in argv]
    if argv and Path(argv[0]).name in ("bench", "__main__.py"):  # the CLI (or python -m optbench)
        command = shlex.join(["bench", *argv[1:]])
    else:  # the Python API from a script, or a test runner: show what really ran
        command = shlex.join(argv) if argv else f"{manifest.get('command', '?')} (no argv recorded)"
    section.text.append(f"Command: `{command}`")
    section.text.append(f"Experiment: {results.experiment or 'unknown'}; {_when(manifest)}.")
    env = [(k, manifest[k]) for k in ENV_KEYS if k in manifest]
    section.tables.append(Table("Environment", pd.DataFrame(env, columns=["key", "value"])))
    params = [(k, _compact(v)) for k, v in manifest.items() if k not in _NOT_PARAMS]
    if params:
        section.tables.append(
            Table("Parameters recorded in the manifest", pd.DataFrame(params, columns=["key", "value"]))
        )
    return section


def _when(manifest: dict) -> str:
    """When it ran; a resumed grid's first start, its invocations and its total time, not the last one's."""
    ended = manifest.get("ended_at") or "not recorded (interrupted?)"
    invocations = manifest.get("invocations") or 1
    if invocations <= 1:
        return f"started {manifest.get('started_at')}, ended {ended}"
    total = manifest.get("total_elapsed_s")
    took = f", {total:.1f} s in all" if isinstance(total, (int, float)) else ""
    return (
        f"first started {manifest.get('first_started_at')}, last ended {ended}; "
        f"{invocations} invocations (resumed){took}"
    )


def _compact(value, limit: int = 240) -> str:
    """One line of JSON (floats to 6 significant digits), cut at ``limit`` characters."""

    def shorten(v):
        if isinstance(v, float):
            return float(f"{v:.6g}")
        if isinstance(v, dict):
            return {k: shorten(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [shorten(x) for x in v]
        return v

    text = value if isinstance(value, str) else json.dumps(shorten(value), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


ANSWER_TOP = 10


def _answer(results: Results) -> Section:
    """The results first: the grid's shape, the best setting per optimizer, the top settings."""
    from optbench.grid.summary import summary
    from optbench.report.answer import best_table, shape_line, top_table

    runs = results.runs
    section = Section("Results")
    table = summary(runs)
    section.text.append(shape_line(runs, table) + ".")
    if results.experiment == "lr-find":
        return section
    for text, note in (
        (
            best_table(table),
            "Stable lr: the lrs around the best one (other axes fixed) where every seed "
            "finished without diverging; a range at the grid's edge may go on beyond it.",
        ),
        (
            top_table(table, ANSWER_TOP, "final_loss"),
            f"All {len(table)} settings: bench summary {results.folder} --top {len(table)}",
        ),
    ):
        if text.rows:
            section.tables.append(Table(text.title, text.frame(), note, [n for _, n in text.columns]))
    return section


def _details(results: Results, compare: list[Path]) -> list[Section]:
    """Status per group, invalid/failed reasons, the stability bound, lr-find comparisons."""
    runs = results.runs
    details = Section("Runs in detail")
    counts = runs["status"].value_counts()
    frame = axis_frame(runs)
    axes = ", ".join(f"{c} ({frame[c].astype(str).nunique()})" for c in varying_axes(frame))
    details.text.append(
        f"{len(runs)} runs: "
        + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("ok", "diverged", "invalid", "failed"))
        + f". Varying: {axes or 'nothing'}; seeds per cell: {runs['seed'].nunique()}."
    )
    details.tables.append(Table("Status per group", status_table(runs)))
    reasons = reasons_table(runs)
    if reasons is not None:
        details.tables.append(Table("Invalid and failed runs", reasons))
    sections = [details]
    for section in (_stability_section(results), _sharpness_section(results)):
        if section is not None:
            sections.append(section)
    if results.experiment == "lr-find":
        sections.insert(0, _lr_find_section(results, compare))
    else:
        comparison = lr_find_comparison(results, compare)
        if len(comparison):
            section = Section("lr-find suggestions vs this grid")
            section.tables.append(Table("Range-test suggestion against the grid's best lr", comparison))
            sections.append(section)
    return sections


def _stability_section(results: Results) -> Section | None:
    if not results.runs["problem"].map(_is_toy).any():
        return None
    table = stability_table(results)
    if not len(table):
        return None
    section = Section("Stability bound vs measurement")
    section.text.append(
        "SGD (heavy ball m) on a quadratic of curvature L is stable iff lr < 2(1+m)/L. "
        "Measured: an lr is stable when every seed ends ok below its initial loss; the "
        "bound agrees when largest stable < bound <= smallest unstable."
    )
    section.tables.append(Table("Analytic bound vs measured bracket", table))
    return section


SHARPNESS_TITLE = "Sharpness and the edge of stability"
_SHARPNESS_TEXT = (
    "Gradient descent with heavy-ball momentum m is locally stable iff lr < 2(1+m)/lambda_max, lambda_max "
    "(the sharpness) being the top eigenvalue of the loss's Hessian, measured by Lanczos on Hessian-vector "
    "products on a fixed batch (the whole training set up to 2,048 rows). Under full-batch gradient descent "
    "the sharpness rises until it reaches 2/lr and hovers there while the loss keeps falling, not "
    "monotonically (the edge of stability, Cohen et al. 2021); Adam's preconditioned sharpness "
    "lambda_max(P^-1 H) hovers near (2+2 beta1)/((1-beta1) lr) = 38/lr at beta1 = 0.9 (Cohen et al. 2022). "
    "Regime: monotone (the loss fell without a spike), catapult (it spiked, then converged: expected between "
    "2(1+m)/lambda_0 and divergence, Lewkowycz et al. 2020), no progress, diverged."
)


def _sharpness_section(results: Results) -> Section | None:
    """The initial sharpness and its predicted bound (lr-sweep folders), the tracked sharpness per run."""
    import pandas as pd

    manifest = results.manifest
    swept = manifest.get("initial_sharpness") is not None
    table = sharpness_table(results) if "sharpness" in results.traces.columns else None
    if table is None and not swept:
        return None
    section = Section(SHARPNESS_TITLE)
    section.text.append(_SHARPNESS_TEXT)
    if swept:
        section.text.append(_prediction_line(manifest))
    if table is not None:
        note = f"The first {len(table)} runs in lr order." if len(table) < _tracked(results) else None
        section.tables.append(Table("Sharpness per run against its stability threshold", table, note))
    elif swept:
        runs = results.runs.sort_values("lr")
        frame = runs[["lr", "final_loss", "status"]].assign(regime=regimes(runs, results.traces))
        section.tables.append(Table("Regime per learning rate", pd.DataFrame(frame)))
    return section


def _prediction_line(manifest: dict) -> str:
    line = f"Initial sharpness lambda_0 = {fmt_cell(manifest['initial_sharpness'])}"
    bound = manifest.get("predicted_bound")
    if bound is None:
        return line + "; no predicted bound (2(1+m)/lambda_0 bounds heavy-ball SGD at a constant lr)."
    verdict = {True: "agrees", False: "disagrees", None: "not tested"}[manifest.get("prediction_agrees")]
    return (
        f"{line}; predicted bound lr < 2(1+m)/lambda_0 = {fmt_cell(bound)}; the sweep {verdict} (largest "
        "monotone lr < bound <= smallest lr that was not monotone)."
    )


def _tracked(results: Results) -> int:
    traces = results.traces
    return traces.loc[traces["sharpness"].notna(), "run_id"].nunique()


def _is_toy(problem: str) -> bool:
    try:
        from optbench.registry.problems import is_toy

        return is_toy(problem)
    except OptbenchError:
        return False


def _lr_find_section(results: Results, compare: list[Path]) -> Section:
    import pandas as pd

    section = Section("Learning-rate range test")
    info = results.manifest.get("lr_find", {})
    params = results.manifest.get("lr_find_params", {})
    run = results.runs.iloc[0]
    section.text.append(
        f"{run['problem']} with {run['optimizer']}: lr from {params.get('start')} to {params.get('end')} over "
        f"{params.get('steps')} steps (ExponentialLR), loss smoothed by an EMA with beta {params.get('beta')}; "
        f"stopped: {info.get('stopped_because', '?')} after {info.get('stop_step', '?')} steps. Suggested lr "
        f"(valley rule): {fmt_cell(results.manifest.get('suggested_lr'))}."
    )
    rules = [
        (
            "valley",
            info.get("valley_lr"),
            "longest decreasing stretch of the smoothed loss, about half way down",
        ),
        ("steepest", info.get("steepest_lr"), "most negative slope of the smoothed loss against log lr"),
        ("minimum/10", info.get("minimum_lr_div10"), "lr at the smallest smoothed loss, divided by 10"),
    ]
    section.tables.append(Table("Suggestions", pd.DataFrame(rules, columns=["rule", "lr", "meaning"])))
    comparison = lr_find_comparison(results, compare)
    if len(comparison):
        section.tables.append(
            Table(
                "Against the best lr of grids over the same problem and optimizer",
                comparison,
                "Grids found beside this folder (or named with --compare); best = lowest mean "
                "final loss over seeds.",
            )
        )
    else:
        section.text.append(
            "No grid over the same problem and optimizer was found beside this folder "
            "(name one with --compare) to compare the suggestion with."
        )
    return section


def _other_sections(results: Results) -> list[Section]:
    import pandas as pd

    sections = []
    if results.schedules is not None:
        section = Section("LR schedulers")
        notes = results.manifest.get("schedule_notes", {})
        if notes:
            section.tables.append(
                Table("Notes", pd.DataFrame(sorted(notes.items()), columns=["scheduler", "note"]))
            )
        sections.append(section)
    if results.layers is not None:
        section = Section("Init report")
        layers = results.layers
        rows = []
        for (init, act), group in layers.groupby(["init", "activation"], sort=False):
            bad = group[~group["finite"].astype(bool)]["layer"]
            last = group[group["layer"] == group["layer"].max()]["act_std"]
            rows.append(
                {
                    "init": init,
                    "activation": act,
                    "first non-finite layer": int(bad.min()) if len(bad) else None,
                    "std of the last layer": float(last.mean()) if len(last) else None,
                }
            )
        section.tables.append(Table("Activation std per init", pd.DataFrame(rows)))
        if results.gains is not None:
            section.tables.append(Table("Gains", results.gains))
        sections.append(section)
    if results.amp is not None:
        sections.append(_amp_section(results))
    return sections


# amp.parquet columns the report's table shows (times in ms), when a folder has them.
_AMP_COLUMNS = {
    "width": "width", "batch": "batch", "precision": "precision", "tf32": "TF32",
    "median_s": "step ms", "iqr_s": "IQR ms", "n_blocks": "blocks", "device_s": "device ms",
    "graph_median_s": "graph ms", "speedup": "vs fp32", "speedup_tf32": "vs fp32+TF32",
    "ceiling_share": "of ceiling", "ceiling_share_tf32": "of ceiling (TF32)",
    "graph_over_eager": "graph vs eager", "peak_mem_bytes": "peak MiB", "peak_mem_ratio": "peak vs fp32",
}  # fmt: skip


def _amp_section(results: Results) -> Section:
    """The answer (summary lines), the ceiling, the step table and every warning naming its rows."""
    import pandas as pd

    amp, manifest = results.amp, results.manifest
    section = Section("Mixed precision (AMP)")
    section.text += [f"Answer: {line}" for line in manifest.get("amp_summary", {}).get("lines", [])]
    ceiling = manifest.get("amp_ceiling", {})
    if ceiling.get("tflops"):
        rates = ", ".join(f"{k} {fmt_cell(v)}" for k, v in ceiling["tflops"].items())
        section.text.append(
            f"Ceiling ({ceiling.get('n')}^3 matmul, torch.utils.benchmark), TFLOP/s: {rates}. A step's "
            "speed-up can approach the ratio of these rates."
        )
    shown = {c: name for c, name in _AMP_COLUMNS.items() if c in amp.columns and amp[c].notna().any()}
    table = amp[list(shown)].copy()
    for column in ("median_s", "iqr_s", "device_s", "graph_median_s"):
        if column in table:
            table[column] = table[column] * 1e3
    if "peak_mem_bytes" in table:
        table["peak_mem_bytes"] = table["peak_mem_bytes"] / 2**20
    section.tables.append(Table("Step time per size and configuration", table.rename(columns=shown)))
    warnings = manifest.get("warnings") if "amp_summary" in manifest else None
    if warnings is None and "warning" in amp.columns:  # a folder written before the summary existed
        warnings = list(dict.fromkeys(w for text in amp["warning"].dropna() for w in str(text).split("\n")))
    if warnings:
        section.tables.append(Table("Warnings", pd.DataFrame({"warning": warnings})))
    return section


# Which section each figure belongs to.
_FIGURE_SECTION = {
    "loss-vs-step": "Results",
    "sensitivity": "Results",
    "heatmap": "Results",
    "trajectories": "Results",
    "lr-schedules": "Results",
    "lr-find": "Learning-rate range test",
    "schedules": "LR schedulers",
    "init-std": "Init report",
    "init-gains": "Init report",
    "amp": "Mixed precision (AMP)",
    "amp-scaling": "Mixed precision (AMP)",
    "sharpness": SHARPNESS_TITLE,
}


def build_sections(
    results: Results, outdir: Path, fmt: str = "png", compare: list[Path] | None = None
) -> list[Section]:
    """Results first (the answer, then its figures with one-line captions), details next, environment last."""
    sections = []
    if results.runs is not None and len(results.runs):
        sections += [_answer(results), *_details(results, list(compare or []))]
    sections += _other_sections(results)
    environment = _environment(results)
    by_title = {s.title: s for s in sections}
    for figure in standard_figures(results, outdir, fmt):
        by_title.get(_FIGURE_SECTION[figure.name], sections[0] if sections else environment).figures.append(
            figure
        )
    return [*sections, environment]
