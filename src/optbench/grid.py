"""Grid experiments: the cartesian product of a few axes of values, run resumably, summarised per group.

    GridSpec(problem="mlp-classification", optimizer="sgd,adamw", lr=(0.003, 0.03, 0.3),
             momentum=(0, 0.9), seed=range(3), steps=500)        # 2 x 3 x 2 x 3 = 36 runs

Every axis holds a tuple of values; a scalar is an axis of one value and a string is split at top-level
commas (``"sgd,adamw"``; the comma in ``"steplr(step_size=50, gamma=0.5)"`` stays with its spec). The lr
axis also takes ranges: ``linspace(0.01, 0.5, 50)`` and ``logspace(-4, 0, 9)`` (base-10 exponents).
``width``/``depth``/``activation`` fold into the MLP problem's spec string, e.g.
``mlp-classification(activation='tanh', depth=3, width=64)``.

``expand`` turns a spec into canonical RunConfigs in ``AXES`` order (seed innermost, so the seeds of a
group are adjacent); runs.parquet follows that order whatever order the runs finished in. A run's id is
the hash of its full canonical config, so re-running a grid into the same folder runs only what is missing.

Unknown names and malformed specs are errors for the whole command (nothing runs). Combinations that are
valid in general but cannot run together (Adagrad with momentum 0.9, SparseAdam on dense weights) are
cells with status ``invalid`` and a reason; the rest of the grid runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.errors import OptbenchError
from optbench.spec import CONFIG_FIELDS, RunConfig, Spec, parse_spec, split_top_level

# Expansion order: the product runs over these axes, the last one (seed) fastest.
AXES = (
    "problem",
    "width",
    "depth",
    "activation",
    "optimizer",
    "lr",
    "momentum",
    "scheduler",
    "init",
    "loss",
    "precision",
    "device",
    "steps",
    "batch_size",
    "head_lr_scale",
    "freeze",
    "seed",
)
PROBLEM_OPTIONS = ("width", "depth", "activation")  # fold into the MLP problem's spec string

# Axis value types. "opt-" = None is allowed (spelled none/default in text): None keeps the default.
_KINDS = {
    "problem": "str",
    "optimizer": "str",
    "scheduler": "str",
    "init": "str",
    "loss": "str",
    "precision": "str",
    "device": "str",
    "lr": "lr",
    "momentum": "opt-float",
    "seed": "int",
    "steps": "int",
    "batch_size": "opt-int",
    "width": "opt-int",
    "depth": "opt-int",
    "activation": "opt-str",
    "head_lr_scale": "float",
    "freeze": "int",
}
_NONE_WORDS = ("none", "default")
_RANGE_RE = re.compile(r"^(linspace|logspace)\((.*)\)$")

# The largest grid run without asking (--max-cells): a typo such as --seeds 100000000 would otherwise fill
# the memory before anything runs. A 1,000,000-cell toy grid takes about 2 minutes and 3 GB.
MAX_CELLS = 1_000_000

# A grid's runs.parquet is rewritten from the commit records at the end, and at most this often meanwhile.
CONSOLIDATE_EVERY_S = 30.0


# ------------------------------------------------------------------------------------------ values of axes


def _round(x: float) -> float:
    """12 significant digits: linspace(0.01, 0.5, 50) gives 0.02, not 0.020000000000000004."""
    return float(f"{x:.12g}")


def parse_lr_values(text: str) -> list[float]:
    """``"0.003,0.03"``, ``"linspace(0.01,0.5,50)"``, ``"logspace(-4,0,9)"`` (10^-4 .. 10^0) or a mix.

    >>> parse_lr_values("0.1, logspace(-2, 0, 3)")
    [0.1, 0.01, 0.1, 1.0]
    """
    return parse_number_values(text, "lr")


def parse_number_values(text: str, axis: str) -> list[float]:
    """Numbers and ranges for any numeric axis (lr, momentum, head_lr_scale), as ``parse_lr_values``."""
    values: list[float] = []
    for part in split_top_level(text):
        match = _RANGE_RE.match(part.replace(" ", ""))
        if match is None:
            try:
                values.append(float(part))
            except ValueError:
                raise OptbenchError(
                    f"{axis} value {part!r} is not a number or a range like linspace(0.01,0.5,50) or logspace(-4,0,9)"
                ) from None
            continue
        kind, args = match.groups()
        pieces = args.split(",")
        try:
            if len(pieces) != 3 or not pieces[2].isdigit() or int(pieces[2]) < 1:
                raise ValueError
            start, stop, n = float(pieces[0]), float(pieces[1]), int(pieces[2])
        except ValueError:
            raise OptbenchError(
                f"malformed {axis} range {part!r}: expected {kind}(start, stop, num) with num a "
                "whole number >= 1"
            ) from None
        if n > MAX_CELLS:
            raise OptbenchError(
                f"{axis} range {part!r} has {n:,} values; a range has at most {MAX_CELLS:,} (a fixed cap)"
            )
        points = [start + (stop - start) * i / (n - 1) for i in range(n)] if n > 1 else [start]
        try:
            values += [_round(10**p if kind == "logspace" else p) for p in points]
        except OverflowError:
            raise OptbenchError(f"{axis} range {part!r}: a value is too large for a float") from None
    if not values:
        raise OptbenchError(f"no {axis} value in {text!r}")
    return values


def _coerce(axis: str, raw: Any) -> tuple:
    """One axis's values as a tuple of the axis's type; strings are split at top-level commas."""
    kind = _KINDS[axis]
    items = list(raw) if isinstance(raw, (list, tuple, range)) else [raw]
    values: list[Any] = []
    for item in items:
        if isinstance(item, str):
            try:
                parts = split_top_level(item)
            except OptbenchError as err:
                raise OptbenchError(f"{axis}: {err}") from None
            if not parts:
                raise OptbenchError(f"{axis}: empty value")
            for part in parts:  # numeric axes take ranges too: --momentum 'linspace(0,0.9,10)'
                if kind == "lr" or (kind.endswith("float") and _RANGE_RE.match(part.replace(" ", ""))):
                    values += [_convert(axis, kind, v) for v in parse_number_values(part, axis)]
                else:
                    values.append(_convert(axis, kind, part))
        else:
            values.append(_convert(axis, kind, item))
    if not values:
        raise OptbenchError(f"axis {axis!r} has no values")
    return tuple(dict.fromkeys(values))  # drop repeats, keep order


def _convert(axis: str, kind: str, value: Any) -> Any:
    optional = kind.startswith("opt-")
    base = kind.removeprefix("opt-")
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if optional:
            return None
        raise OptbenchError(f"{axis} cannot be none")
    if base == "str":
        if not isinstance(value, str):
            raise OptbenchError(f"{axis} value {value!r} must be a string")
        return value.strip()
    if isinstance(value, bool):
        raise OptbenchError(f"{axis} value {value!r} must be a number")
    if base == "int":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value)):
            return int(value)
        raise OptbenchError(f"{axis} value {value!r} is not an integer")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptbenchError(f"{axis} value {value!r} is not a number") from None
    if not math.isfinite(number):
        raise OptbenchError(f"{axis} value {value!r} is not finite")
    return number


# ------------------------------------------------------------------------------------------------ GridSpec


@dataclass(frozen=True)
class GridSpec:
    """The axes of a grid, each a tuple of values (a scalar or a comma-separated string is accepted and
    normalised). ``momentum=None`` keeps each optimizer's own default; ``width/depth/activation=None`` keep
    the problem's own; ``batch_size=None`` the problem's default.

    Args:
        problem, optimizer, scheduler, init, loss: spec strings (registry names with keyword arguments).
        lr: learning rates; strings may hold ranges ``linspace(a, b, n)`` / ``logspace(a, b, n)``.
        momentum: mapped onto each optimizer's knob (``momentum``, or ``betas[0]`` for the Adam family).
        precision, device, seed, steps, batch_size, head_lr_scale, freeze: as in ``RunConfig``.
    """

    problem: tuple[str, ...] = ("quadratic",)
    optimizer: tuple[str, ...] = ("sgd",)
    lr: tuple[float, ...] = (0.01,)
    momentum: tuple[float | None, ...] = (None,)
    scheduler: tuple[str, ...] = ("none",)
    init: tuple[str, ...] = ("default",)
    loss: tuple[str, ...] = ("auto",)
    precision: tuple[str, ...] = ("fp32",)
    device: tuple[str, ...] = ("cpu",)
    seed: tuple[int, ...] = (0,)
    steps: tuple[int, ...] = (100,)
    batch_size: tuple[int | None, ...] = (None,)
    width: tuple[int | None, ...] = (None,)
    depth: tuple[int | None, ...] = (None,)
    activation: tuple[str | None, ...] = (None,)
    head_lr_scale: tuple[float, ...] = (1.0,)
    freeze: tuple[int, ...] = (0,)

    def __post_init__(self):
        for axis in AXES:
            object.__setattr__(self, axis, _coerce(axis, getattr(self, axis)))

    @property
    def size(self) -> int:
        """Number of cells in the product (before duplicates that canonicalise equal are dropped)."""
        return math.prod(len(getattr(self, axis)) for axis in AXES)

    def replace(self, **changes: Any) -> GridSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, list]:
        return {axis: list(getattr(self, axis)) for axis in AXES}


_ALLOWED_KEYS = (*AXES, "seeds")


def make_spec(options: Mapping[str, Any], base: GridSpec | None = None) -> GridSpec:
    """A GridSpec from ``{axis: values}`` (keys may use '-' for '_'); ``seeds=N`` means seeds 0..N-1.
    Keys not given keep ``base``'s axes (the defaults without a base)."""
    changes: dict[str, Any] = {}
    for key, value in options.items():
        name = key.replace("-", "_")
        if name not in _ALLOWED_KEYS:
            raise OptbenchError(f"unknown grid setting {key!r}; valid: {', '.join(_ALLOWED_KEYS)}")
        changes[name] = value
    if "seeds" in changes:
        if "seed" in changes:
            raise OptbenchError("give either seed (a list of seeds) or seeds (a count), not both")
        count = _convert("seeds", "int", changes.pop("seeds"))
        if not 1 <= count <= MAX_CELLS:
            raise OptbenchError(f"seeds must be in 1..{MAX_CELLS:,} (a fixed cap), got {count:,}")
        changes["seed"] = tuple(range(count))
    return (base or GridSpec()).replace(**changes)


def load_spec_toml(path: str | Path) -> GridSpec:
    """Read a grid from a TOML file: axes as lists, fixed settings as scalars, e.g.::

        problem = "mlp-classification"
        optimizer = ["sgd", "adamw"]
        lr = "logspace(-3, 0, 7)"          # or a list: [0.003, 0.03, 0.3]
        momentum = [0, 0.9]
        seeds = 3
        steps = 500

    A missing file, malformed TOML, an unknown key or a bad value is an OptbenchError naming the file and
    the line.
    """
    import tomllib

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise OptbenchError(f"spec file {str(path)!r} not found") from None
    except OSError as err:
        raise OptbenchError(f"cannot read spec file {str(path)!r}: {err.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise OptbenchError(f"{path}: malformed TOML: {err}") from None
    options: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}, line {_line_of(text, key)}"
        if key.replace("-", "_") not in _ALLOWED_KEYS:
            raise OptbenchError(f"{where}: unknown key {key!r}; valid: {', '.join(_ALLOWED_KEYS)}")
        if isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)
        ):
            raise OptbenchError(f"{where}: {key} must be a value or a list of values")
        try:
            make_spec({key: value})  # checks this key alone, so the error can name its line
        except OptbenchError as err:
            raise OptbenchError(f"{where}: {err}") from None
        options[key] = value
    try:
        return make_spec(options)
    except OptbenchError as err:
        raise OptbenchError(f"{path}: {err}") from None


def _line_of(text: str, key: str) -> int | str:
    pattern = re.compile(rf"^\s*(\[+\s*)?[\"']?{re.escape(key)}[\"']?\s*(=|\])")  # key = ... or [key]
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return "?"


# --------------------------------------------------------------------------------------------------- expand


def expand(spec: GridSpec, max_cells: int | None = None) -> list[RunConfig]:
    """The grid's canonical RunConfigs in expansion order, duplicates (equal after canonicalisation, e.g.
    ``steplr`` and its alias ``step``) dropped. Raises OptbenchError for unknown names and bad values, and
    for a grid of more than ``max_cells`` cells (default ``MAX_CELLS``), before building any of them."""
    from optbench.validate import canonical_config

    max_cells = MAX_CELLS if max_cells is None else max_cells
    if max_cells < 1:
        raise OptbenchError(f"--max-cells must be >= 1, got {max_cells}")
    cells = math.prod(len(getattr(spec, axis)) for axis in AXES)
    if cells > max_cells:
        raise OptbenchError(
            f"the grid has {cells:,} cells, more than {max_cells:,}; raise --max-cells to run it"
        )

    problems = [
        _fold_problem(*combo)
        for combo in itertools.product(spec.problem, spec.width, spec.depth, spec.activation)
    ]
    rest = [getattr(spec, axis) for axis in AXES[4:]]
    configs: list[RunConfig] = []
    seen: set[str] = set()
    for problem in dict.fromkeys(problems):
        for values in itertools.product(*rest):
            cell = dict(zip(AXES[4:], values, strict=True))
            config = canonical_config(RunConfig(problem=problem, **cell))
            run_id = config.run_id()
            if run_id not in seen:
                seen.add(run_id)
                configs.append(config)
    return configs


def _fold_problem(problem: str, width: int | None, depth: int | None, activation: str | None) -> str:
    from optbench.problems import canonical_problem, is_toy

    given = {
        k: v for k, v in (("width", width), ("depth", depth), ("activation", activation)) if v is not None
    }
    problem = canonical_problem(problem)
    if not given:
        return problem
    spec = parse_spec(problem, what="problem")
    if is_toy(problem):
        options = " ".join(f"--{k} {v}" for k, v in given.items())
        raise OptbenchError(
            f"{options}: applies to MLP problems; {spec.name!r} is a toy function without layers"
        )
    for key, value in given.items():
        if key in spec.kw and spec.kw[key] != value:
            raise OptbenchError(f"{key} given twice: --{key} {value} and in problem {problem!r}")
    return Spec(spec.name, tuple(sorted({**spec.kw, **given}.items()))).canonical()


def _as_configs(
    spec: GridSpec | Mapping | str | Path | Sequence[RunConfig], max_cells: int | None = None
) -> tuple[list[RunConfig], dict]:
    """(configs, a description for the manifest) from any accepted form of a grid."""
    if isinstance(spec, (str, Path)):
        spec = load_spec_toml(spec)
    elif isinstance(spec, Mapping):
        spec = make_spec(spec)
    if isinstance(spec, GridSpec):
        return expand(spec, max_cells), spec.to_dict()
    from optbench.validate import canonical_config

    configs = list(dict.fromkeys(canonical_config(c) for c in spec))
    if not configs:
        raise OptbenchError("the grid has no runs")
    return configs, {"configs": len(configs)}


# ---------------------------------------------------------------------------------------------------- run


@dataclass
class GridProgress:
    """What a progress callback sees: after the start (``last`` None) and after every finished run."""

    total: int  # runs in the grid
    done: int  # finished, including those already done before this call (resume)
    resumed: int  # already done before this call, not run again
    counts: dict[str, int] = field(default_factory=dict)  # status -> runs (ok, diverged, invalid, failed)
    last: dict | None = None  # the summary row of the run that just finished

    @property
    def diverged(self) -> int:
        return self.counts.get("diverged", 0)


def run_grid(
    spec: GridSpec | Mapping | str | Path | Sequence[RunConfig],
    *,
    out: str | Path | None = None,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    gpus_per_run: float = 0.25,
    force: bool = False,
    engine: str = "auto",
    progress: Callable[[GridProgress], None] | None = None,
    command: str = "grid",
    max_cells: int | None = None,
):
    """Run every cell of a grid not yet committed in ``out``; return the runs table (a DataFrame, one row
    per cell, in expansion order).

    Args:
        spec: a GridSpec, a dict of axes (``make_spec``), a TOML file (``load_spec_toml``) or RunConfigs.
        out: results folder (default: a new ``results/grid-<time>``). Runs already committed there are
            skipped; ``force=True`` runs everything again (each commit replaces the old one).
        workers: local processes (default: the usable cores); 1 runs in this process.
        executor: ``local`` or ``ray``; ``address``: a Ray cluster (default: start a local Ray).
        gpus_per_run: GPU fraction each CUDA run requests from Ray (0.25: four runs share a GPU).
        engine: ``auto`` (CPU cells the batched engine supports run batched, in groups of at least
            ``MIN_BATCH``; the rest on the reference engine), ``batched`` (every supported cell batched, CUDA
            included) or ``reference`` (every cell through ``engine.run``). The ``engine`` column records which ran.
        progress: called with a ``GridProgress`` at the start and after every run.
        max_cells: refuse a GridSpec of more cells than this (default ``MAX_CELLS``) before building any.
    """
    from optbench import folderlock, store
    from optbench.executors import make_executor

    configs, description = _as_configs(spec, max_cells)
    if out is not None:
        store.require_folder(out)  # before drop_uncommitted or purge_runs look inside it
    if engine not in ENGINES:
        raise OptbenchError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    runner = make_executor(executor, workers=workers, address=address, gpus_per_run=gpus_per_run)
    out = Path(out) if out is not None else store.default_out("grid")
    order = [c.run_id() for c in configs]
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)  # the lock file lives in it
    with folderlock.exclusive(out):  # one grid per folder, and not before an earlier one's workers exit
        try:
            todo, done_ids, counts = _pending(out, configs, order, created, force)
            tasks = plan_tasks(todo, engine, runner.workers or 1)
            manifest = store.start_manifest(
                out,
                command,
                {
                    "experiment": "grid",
                    "grid": description,
                    "runs": len(configs),
                    "already_done": len(done_ids),
                    "executor": executor,
                    "workers": runner.workers,
                    "address": address,
                    "force": force,
                    "engine": engine,
                },
            )

            state = GridProgress(total=len(configs), done=len(done_ids), resumed=len(done_ids), counts=counts)
            last_consolidated = time.monotonic()

            def on_result(row: dict) -> None:
                nonlocal last_consolidated
                state.done += 1
                state.counts[row["status"]] = state.counts.get(row["status"], 0) + 1
                state.last = row
                if progress is not None:
                    progress(state)
                if (
                    time.monotonic() - last_consolidated > CONSOLIDATE_EVERY_S
                ):  # keep runs.parquet roughly current
                    store.consolidate_runs(out, order)
                    last_consolidated = time.monotonic()

            if progress is not None:
                progress(state)
            runner.run(tasks, out, on_result)
        except BaseException:
            if created and not store.completed_run_ids(out):
                shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping: leave no half-made folder
            elif (out / store.COMMITS_DIR).exists():
                store.consolidate_runs(out, order)  # keep what was committed readable; a re-run resumes
            raise
        table = store.consolidate_runs(out, order)
        runs = table.to_pandas()
        runs = runs[runs["run_id"].isin(set(order))].reset_index(drop=True)
        # Counted from the runs table, so a resumed grid's earlier runs are included.
        store.finish_manifest(
            out,
            manifest,
            status_counts=runs["status"].value_counts().to_dict(),
            engine_counts=runs["engine"].value_counts().to_dict(),
        )
        runs.attrs["out"] = str(out)
        return runs


def _pending(out: Path, configs: list[RunConfig], order: list[str], created: bool, force: bool):
    """(cells to run, run ids already done, their status counts) in a folder this process holds."""
    from optbench import store

    counts: dict[str, int] = {}
    done_ids: set[str] = set()
    if not created:
        store.drop_uncommitted(out)  # what a killed run left between its two writes
    if not force and not created:
        done_ids = store.completed_run_ids(out) & set(order)
        if done_ids:
            previous = store.consolidate_runs(out, order).to_pandas()
            counts = previous[previous["run_id"].isin(done_ids)]["status"].value_counts().to_dict()
    todo = [c for c, run_id in zip(configs, order, strict=True) if run_id not in done_ids]
    if force and not created:
        store.purge_runs(out, {c.run_id() for c in todo})  # no stale rows beside the new ones
    return todo, done_ids, counts


# ---------------------------------------------------------------------------------------------- planning

ENGINES = ("auto", "batched", "reference")
MIN_BATCH = 2  # auto: a group this small gains nothing from batching
# auto batches only where the batched engine's equality with the reference is tested (tests/test_batched.py
# on CPU); on CUDA it runs when asked for (--engine batched) until its CUDA tests have passed on a GPU.
AUTO_BATCHED_DEVICES = ("cpu",)


def plan_tasks(configs: list[RunConfig], engine: str, workers: int) -> list:
    """Cut the cells into executor tasks: batches of cells the batched engine can run together (split in
    up to ``workers`` contiguous chunks so every worker gets a share), then one task per remaining cell."""
    from optbench.executors import Task

    if engine == "reference" or not configs:
        return [Task((c,)) for c in configs]
    from optbench import batched

    groups: dict[tuple, list[RunConfig]] = {}
    singles: list[RunConfig] = []
    for config in configs:
        if engine == "auto" and config.device not in AUTO_BATCHED_DEVICES:
            singles.append(config)
        elif batched.unsupported_reason(config) is None:
            groups.setdefault(batched.batch_key(config), []).append(config)
        else:
            singles.append(config)
    tasks = []
    for group in groups.values():
        if engine == "auto" and len(group) < MIN_BATCH:
            singles.extend(group)
            continue
        tasks += Task(tuple(group), batched=True).split(workers)
    return tasks + [Task((c,)) for c in singles]


# ------------------------------------------------------------------------------------------------ summary

GROUP_COLUMNS = tuple(c for c in CONFIG_FIELDS if c != "seed")


def _problem_without_architecture(problem: str) -> str:
    """The problem spec minus the folded --width/--depth/--activation: what defines the data."""
    spec = parse_spec(problem, what="problem")
    return Spec(spec.name, tuple((k, v) for k, v in spec.kwargs if k not in PROBLEM_OPTIONS)).canonical()


def summarize(runs):
    """One row per group (the config minus the seed), in first-appearance order.

    Columns: the group's config columns, ``seeds`` (runs in the group), ``ok``, ``diverged``, ``invalid``,
    ``failed``, ``final_loss_mean`` / ``final_loss_std`` (over the group's ``ok`` runs; std with ddof=1,
    NaN for a single run), ``reason`` (the first invalid/failed reason) and ``best``: True for the best
    cell of each optimizer per problem and loss, the group with the lowest mean final loss among groups
    where every run is ok. Losses of different problems or loss functions are not comparable; an MLP's
    width, depth and activation are settings like the lr (same data, same loss), so they compete.
    """
    frame = runs.copy()
    for status in ("ok", "diverged", "invalid", "failed"):
        frame[f"_{status}"] = (frame["status"] == status).astype("int64")
    frame["_ok_loss"] = frame["final_loss"].where(frame["status"] == "ok").astype("float64")
    keys = [c for c in GROUP_COLUMNS if c in frame.columns]
    grouped = frame.groupby(keys, dropna=False, sort=False)
    summary = grouped.agg(
        seeds=("run_id", "size"),
        ok=("_ok", "sum"),
        diverged=("_diverged", "sum"),
        invalid=("_invalid", "sum"),
        failed=("_failed", "sum"),
        final_loss_mean=("_ok_loss", "mean"),
        final_loss_std=("_ok_loss", "std"),
        reason=("reason", "first"),
    ).reset_index()
    clean = (summary["ok"] == summary["seeds"]) & summary["final_loss_mean"].notna()
    summary["best"] = False
    candidates = summary[clean]
    if len(candidates):
        comparable = [candidates["problem"].map(_problem_without_architecture), "optimizer"]
        if "loss" in candidates.columns:
            comparable.append("loss")
        best = candidates.groupby(comparable, sort=False)["final_loss_mean"].idxmin()
        summary.loc[best.to_numpy(), "best"] = True
    return summary
