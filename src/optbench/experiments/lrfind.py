"""``bench lr-find``: the learning-rate range test (Smith 2015, as popularised by fastai's ``lr_find``).

One real run through the reference engine: the lr starts at ``start`` and grows exponentially to ``end``
over ``steps`` steps, driven by torch's own ``ExponentialLR`` (lr_t = start·gamma^t with
gamma = (end/start)^(1/(steps - 1)), so the last step uses exactly ``end``). The run is written as a
normal results folder (runs.parquet, traces/, manifest.json with experiment "lr-find") and analysed
from its trace, pairing each step's lr with the loss measured at that step (before its update):

- smoothing: exponential moving average with bias correction,
  ``avg_t = beta·avg_{t-1} + (1 - beta)·loss_t``, ``smoothed_t = avg_t / (1 - beta^(t+1))`` (beta 0.98);
- stop: at the first step whose smoothed loss exceeds ``stop_factor`` (4) x the smallest smoothed loss so
  far, or whose loss is not finite (the engine may also have stopped the run as diverged); the analysis
  keeps the steps before it. (The run itself is not cut short: steps are cheap and the trace shows the
  blow-up.)
- the suggestions look at the kept steps without the first 10 % and the last 5 (the noisy start and the
  blow-up, as fastai does), on the smoothed loss:

  * ``steepest``: the lr at the most negative slope d(smoothed loss)/d(log lr) (forward differences;
    the lr at the left end of the steepest segment);
  * ``valley``: the longest valley, fastai's rule: the longest strictly decreasing subsequence of the
    smoothed loss (O(n²) dynamic programme) runs from index a to index b; the suggestion is the point
    a + ⌊(b - a)/3⌋ + ⌊(b - a)/6⌋, i.e. about half way down the valley, biased towards its start;
  * ``minimum/10``: the lr at the smallest smoothed loss, divided by 10 (Smith's rule of thumb).

The manifest stores all three under ``lr_find`` and ``suggested_lr`` = the valley lr (fastai's default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optbench.errors import OptbenchError
from optbench.registry.validate import check_lr

FIGURE = "lr_find"
BETA = 0.98
STOP_FACTOR = 4.0


@dataclass
class LRFindAnalysis:
    lrs: np.ndarray  # lr of each recorded step
    losses: np.ndarray  # loss of each recorded step
    smoothed: np.ndarray  # bias-corrected EMA of the loss
    stop: int  # number of steps kept (the test stopped at this index; == len(lrs) if it never stopped)
    stopped_because: str  # "blow-up (smoothed > 4x min)", "non-finite loss", "end of schedule"
    steepest: int | None = None  # indices into lrs
    valley: int | None = None
    valley_span: tuple[int, int] | None = None
    minimum: int | None = None

    @property
    def steepest_lr(self) -> float | None:
        return None if self.steepest is None else float(self.lrs[self.steepest])

    @property
    def valley_lr(self) -> float | None:
        return None if self.valley is None else float(self.lrs[self.valley])

    @property
    def minimum_lr_div10(self) -> float | None:
        return None if self.minimum is None else float(self.lrs[self.minimum]) / 10

    def suggestions(self) -> dict[str, tuple[float | None, int | None]]:
        """label -> (lr, index of the step whose lr is closest to it) for the figure and the report."""
        tenth = None
        if self.minimum is not None:
            tenth = int(np.argmin(np.abs(np.log(self.lrs[: self.minimum + 1] / self.minimum_lr_div10))))
        return {
            "steepest": (self.steepest_lr, self.steepest),
            "valley": (self.valley_lr, self.valley),
            "minimum/10": (self.minimum_lr_div10, tenth),
        }

    def to_dict(self) -> dict:
        return {
            "steepest_lr": self.steepest_lr,
            "valley_lr": self.valley_lr,
            "minimum_lr_div10": self.minimum_lr_div10,
            "min_smoothed_loss_lr": None if self.minimum is None else float(self.lrs[self.minimum]),
            "stop_step": int(self.stop),
            "stopped_because": self.stopped_because,
            "valley_span_lr": None
            if self.valley_span is None
            else [float(self.lrs[i]) for i in self.valley_span],
        }


def smooth(losses, beta: float = BETA) -> np.ndarray:
    """Bias-corrected exponential moving average (non-finite losses propagate)."""
    out = np.empty(len(losses))
    avg = 0.0
    for t, loss in enumerate(np.asarray(losses, dtype=float)):
        avg = beta * avg + (1 - beta) * loss
        out[t] = avg / (1 - beta ** (t + 1))
    return out


def longest_valley(values) -> tuple[int, int]:
    """(first, last) index of the longest strictly decreasing subsequence of ``values``."""
    n = len(values)
    length = [1] * n
    before = list(range(n))  # predecessor in the best subsequence ending at i
    for i in range(1, n):
        for j in range(i):
            if values[i] < values[j] and length[j] + 1 > length[i]:
                length[i], before[i] = length[j] + 1, j
    last = max(range(n), key=lambda i: (length[i], -i))  # longest; the earliest such end on ties
    first = last
    while before[first] != first:
        first = before[first]
    return first, last


def analyse(lrs, losses, beta: float = BETA, stop_factor: float = STOP_FACTOR) -> LRFindAnalysis:
    """Smooth, find where the test stops and compute the suggestions (see the module docstring)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    smoothed = smooth(losses, beta)
    stop, because, best = len(lrs), "end of schedule", math.inf
    for t in range(len(lrs)):
        if not (math.isfinite(losses[t]) and math.isfinite(smoothed[t])):
            stop, because = t, "non-finite loss"
            break
        if t > 0 and smoothed[t] > stop_factor * best:
            stop, because = t, f"blow-up (smoothed loss > {stop_factor:g}x its minimum)"
            break
        best = min(best, smoothed[t])
    result = LRFindAnalysis(lrs, losses, smoothed, stop, because)
    lo, hi = stop // 10, stop - 5  # skip the noisy start and the last points before the stop
    if hi - lo < 3:
        lo, hi = 0, stop
    if hi - lo < 2:
        return result
    window = smoothed[lo:hi]
    slopes = np.diff(window) / np.diff(np.log(lrs[lo:hi]))
    result.steepest = lo + int(np.argmin(slopes))
    first, last = longest_valley(list(window))
    span = last - first
    result.valley = lo + first + span // 3 + span // 6
    result.valley_span = (lo + first, lo + last)
    result.minimum = lo + int(np.argmin(window))
    return result


@dataclass
class LRFindResult:
    out: Path
    config: object  # the RunConfig that ran
    status: str  # the run's status (ok / diverged)
    analysis: LRFindAnalysis
    figures: list[Path] = field(default_factory=list)

    @property
    def suggested_lr(self) -> float | None:
        return self.analysis.valley_lr


def check_range(start: float, end: float, steps: int) -> float:
    """Validate the range; return gamma."""
    check_lr(start, "--start")
    check_lr(end, "--end")
    if end <= start:
        raise OptbenchError(f"--end {end} must be larger than --start {start}")
    if steps < 10:
        raise OptbenchError(f"--steps must be >= 10 for a range test, got {steps}")
    return (end / start) ** (1 / (steps - 1))


def lr_find(
    problem: str = "mlp-classification",
    optimizer: str = "sgd",
    *,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    momentum: float | None = None,
    init: str = "default",
    loss: str = "auto",
    batch_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    beta: float = BETA,
    stop_factor: float = STOP_FACTOR,
    out: Path | str | None = None,
    plots: bool = True,
    fmt: str = "png",
    command: str = "lr-find",
) -> LRFindResult:
    """Run the range test with the real engine and ExponentialLR; write the folder, figure and manifest."""
    from optbench import store
    from optbench.registry.validate import canonical_config, check_buildable
    from optbench.spec import RunConfig

    gamma = check_range(start, end, steps)
    if not 0 <= beta < 1:
        raise OptbenchError(f"--beta must be in [0, 1), got {beta}")
    if not stop_factor > 1:
        raise OptbenchError(f"--stop-factor must be > 1, got {stop_factor}")
    if plots:
        from optbench.figures.style import check_format

        check_format(fmt)
    config = canonical_config(
        RunConfig(
            problem=problem,
            optimizer=optimizer,
            lr=start,
            momentum=momentum,
            scheduler=f"exponentiallr(gamma={gamma!r})",
            init=init,
            loss=loss,
            device=device,
            seed=seed,
            steps=steps,
            batch_size=batch_size,
        )
    )
    check_buildable([config])  # a value the run cannot accept stops here, before the folder is made
    out = store.check_out(out, "lr-find") if out is not None else store.default_out("lr-find")
    params = {
        "start": start,
        "end": end,
        "steps": steps,
        "gamma": gamma,
        "beta": beta,
        "stop_factor": stop_factor,
    }
    with store.results_folder(out, "lr-find"):
        committed = _own_run(out, config.run_id())
        manifest = store.start_manifest(out, command, {"experiment": "lr-find", "lr_find_params": params})
        status = committed or _run_and_commit(out, config)
        store.consolidate_runs(out, order=[config.run_id()])
        trace = store.read_traces(out, [config.run_id()]).sort_values("step")
        analysis = analyse(trace["lr"].to_numpy(), trace["loss"].to_numpy(), beta, stop_factor)
        found = LRFindResult(out, config, status, analysis)
        if plots:
            found.figures.append(draw(analysis, out / f"{FIGURE}.{fmt}", config))
        store.finish_manifest(
            out,
            manifest,
            lr_find=analysis.to_dict(),
            suggested_lr=analysis.valley_lr,
            files=[p.name for p in found.figures],
        )
    return found


def _own_run(out: Path, run_id: str) -> str | None:
    """The status of this very run if it is committed in ``out`` (an interrupted lr-find resumes), else
    None; a folder holding another lr-find's run is refused."""
    from optbench import store

    found = store.scan(out)
    if (found.run_ids | found.damaged_run_ids) - {run_id}:
        raise OptbenchError(f"--out {out} holds another lr-find run; choose another --out")
    if run_id not in store.prepare(out).run_ids:
        return None
    return str(store.read_runs(out)["status"].iloc[0]) if (out / store.RUNS_FILE).exists() else None


def _run_and_commit(out: Path, config) -> str:
    """Run the range test and commit it; a run that cannot run at all is an error and commits nothing."""
    from optbench import store
    from optbench.engine.reference import run

    result = run(config)
    if result.summary.status in ("invalid", "failed"):
        raise OptbenchError(
            f"lr-find could not run {config.problem} with {config.optimizer}: {result.summary.reason}"
        )
    store.commit_run(out, result)
    return result.summary.status


def draw(analysis: LRFindAnalysis, path: Path, config=None, title: str | None = None) -> Path:
    """The range test's figure; titled after the config's problem and optimizer, or ``title``."""
    from optbench.figures.lrfind import lr_find as draw_lr_find

    if title is None:
        title = "learning-rate range test"
        if config is not None:
            title = f"{config.problem}, {config.optimizer}: {title}"
    return draw_lr_find(
        analysis.lrs,
        analysis.losses,
        analysis.smoothed,
        analysis.suggestions(),
        path,
        valley=analysis.valley_span,
        stop=analysis.stop if analysis.stop < len(analysis.lrs) else None,
        title=title,
    )


def analyse_folder(folder: Path) -> tuple[LRFindAnalysis, object] | None:
    """Re-analyse the lr-find run of a results folder from its Parquet (None if it is not one)."""
    from optbench import store

    manifest = store.read_manifest(folder)
    if manifest.get("experiment") != "lr-find":
        return None
    params = manifest.get("lr_find_params", {})
    runs = store.read_runs(folder)
    if runs.empty:
        return None
    trace = store.read_traces(folder, [runs["run_id"].iloc[0]]).sort_values("step")
    return analyse(
        trace["lr"].to_numpy(),
        trace["loss"].to_numpy(),
        params.get("beta", BETA),
        params.get("stop_factor", STOP_FACTOR),
    ), runs.iloc[0]
