"""The batched engine: many grid cells that share a problem and a step count, run as one tensor program.

A grid of tiny runs spends nearly all its time in Python and dispatch overhead (~200 µs a step for a few
FLOPs). Here the parameters of C cells are stacked along a leading config dimension and advanced together:

- toy problems: the points as one [C, d] tensor; the batched loss gives the C per-cell losses (the same
  expressions as ``problems.py``), and autograd of their sum gives each cell's own gradient exactly;
- MLP problems: every cell's model is built by ``problems.build_problem`` exactly as the reference engine
  builds it (same seed, init, minibatch order); the trainable weights of all cells live in one [C, N]
  tensor and the network runs layer by layer on [C, rows, width] activations. Each matmul is batched
  where that rounds like the reference's per-cell call, else runs per cell (``_product``); each cell's
  loss is the problem's loss module on its slice (plain cross-entropy: the same kernels, batched);
- the update is the torch optimizer's own single-tensor formula with per-cell hyperparameters as tensors
  (``batched_rules``); lr (and momentum/betas where a scheduler cycles them) of every step come from real
  torch optimizers and schedulers built on stand-in parameters and stepped ahead of the run.

Per step t the order is the reference engine's: record lr and val metrics (MLPs, every ``eval_every``
steps); forward (loss_t) -> backward -> update -> scheduler. Divergence, the trace columns and the summary
follow ``engine.run``: a cell diverges at its first step with a non-finite loss or one above
``DIVERGENCE_FACTOR`` x max(|initial loss|, 1); its trace ends there and it leaves the batch at the next
check, so its inf/nan never meets another cell (cells share no reduction: each has its own rows).

API (the grid runner's)::

    unsupported_reason(cfg) -> str | None    None: this canonical config can run batched
    batch_key(cfg) -> tuple                  configs with equal keys may share one run_batch call
    run_batch(cfgs) -> list[RunResult]       same order; summary.engine == "batched"

``run_batch`` never raises for a bad cell: a config that cannot run batched after all (it fails to build,
or a scheduler moves a setting the rule cannot follow) is run by ``engine.run`` and comes back with
``engine == "reference"``. ``wall_time_s`` of a batched cell is its batch's wall time divided evenly over
the batch's cells: each cell's share of the machine, not the latency a single run would have.

Devices: a batch runs on its cells' device (``cfg.device``, part of ``batch_key``); every tensor it makes
lives there, and the host sees the traces at the end and the divergence flags every ``CHECK_EVERY`` steps.

Exactness: on CPU in fp32 both engines give the same float32 values step for step, bit for bit on the
build the tests run on (``tests/test_batched.py``: every rule, every scheduler, toy and MLP problems). On
CUDA the same code runs, and the exactness probes (``_product``, ``_log_softmax_classes``,
``_stacks_like_cells``) try the device's own kernels, so a product or activation that rounds otherwise
there runs per cell; this is not yet verified on a GPU (``tests/test_batched_device.py`` holds the checks,
skipped without CUDA). Expect agreement to rounding there, not bit for bit: torch's optimizers take their
foreach path on CUDA by default, whose ``addcmul``/``addcdiv`` compute ``p + v·(x∘y)`` where the rules
(after the single-tensor CPU path) round ``v·x`` first (Adam, AdamW, RMSprop), and CUDA's norm reductions
may sum the rows of a stack in another order than a lone tensor (the norm columns).
"""

from __future__ import annotations

import functools
import inspect
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from optbench import engine
from optbench.engine.batched.rules import RULES, Block, Rule
from optbench.engine.reference import CHECK_EVERY, DIVERGENCE_FACTOR, RunResult
from optbench.errors import OptbenchError
from optbench.registry.optimizers import build_optimizer
from optbench.registry.problems import MLPProblem, build_problem, problems
from optbench.registry.schedulers import build_scheduler, schedulers
from optbench.spec import RunConfig, RunSummary, parse_spec

ENGINE = "batched"

# Most cells one tensor program holds; run_batch splits longer lists. MLP chunks are sized from the
# activation memory (cells x rows x width x layers floats, forward + backward), toy chunks are cheap.
MAX_TOY_CELLS = 50_000
MLP_CHUNK_FLOATS = 32_000_000


# --------------------------------------------------------------------------------------- batched toy losses


def _quadratic(x: torch.Tensor, scale: float = 2.0, **_) -> torch.Tensor:
    """(scale·x)^2 per row of x [C, 1]: the reference's ``((scale * x) ** 2).sum()`` on one cell."""
    return ((scale * x) ** 2).sum(1)


def _rosenbrock(x: torch.Tensor, a: float = 1.0, b: float = 100.0, **_) -> torch.Tensor:
    """(a - x)^2 + b(y - x^2)^2 per row of [C, 2]; ``p[0]``/``p[1]`` index columns as the reference indexes."""
    p = x.T
    return (a - p[0]) ** 2 + b * (p[1] - p[0] ** 2) ** 2


def _rastrigin(x: torch.Tensor, A: float = 10.0, **_) -> torch.Tensor:
    """A·n + Σ(x_i^2 - A cos 2πx_i) per row of [C, n]."""
    return A * x.shape[1] + (x**2 - A * torch.cos(2 * math.pi * x)).sum(1)


def _beale(x: torch.Tensor, **_) -> torch.Tensor:
    """(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2 per row of [C, 2]."""
    p = x.T
    x, y = p[0], p[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


# Same expressions, in the same order of operations, as the problems' own functions (problems.py).
TOY_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "quadratic": _quadratic,
    "rosenbrock": _rosenbrock,
    "rastrigin": _rastrigin,
    "beale": _beale,
}
MLP_PROBLEMS = ("mlp-regression", "mlp-classification")


# ------------------------------------------------------------------------------------------ what can run


def unsupported_reason(cfg: RunConfig) -> str | None:
    """None if the batched engine runs this canonical config exactly like ``engine.run``; else why not.

    Cheap (no torch objects are built): some cells that pass still go to the reference engine inside
    ``run_batch``, e.g. a config the reference would report ``invalid``.
    """
    try:
        return _unsupported_reason(cfg)
    except OptbenchError as err:  # malformed spec: the reference engine reports it
        return f"cannot be parsed ({err})"


def _unsupported_reason(cfg: RunConfig) -> str | None:
    if cfg.precision != "fp32":
        return f"precision {cfg.precision!r}: the batched engine runs fp32 only"
    if not (isinstance(cfg.lr, (int, float)) and cfg.lr > 0 and math.isfinite(cfg.lr)):
        return f"learning rate {cfg.lr}: not a positive finite number"
    reason = _optimizer_reason(cfg.optimizer)
    if reason:
        return reason
    reason = _scheduler_reason(cfg.scheduler)
    if reason:
        return reason
    name = parse_spec(cfg.problem, what="problem").name
    if name in TOY_LOSSES:
        if (
            parse_spec(cfg.init, what="init").name != "default"
            or cfg.loss not in ("none", "auto")
            or cfg.batch_size is not None
            or cfg.head_lr_scale != 1.0
            or cfg.freeze
        ):
            return f"init/loss/batch size/head lr/freeze on toy problem {name!r} (the reference reports it)"
        return None
    if name not in MLP_PROBLEMS:
        return f"problem {name!r} has no batched form (batched: {', '.join([*TOY_LOSSES, *MLP_PROBLEMS])})"
    if cfg.batch_size == 1:  # a [1, k] input is also column-major, and autograd then takes other products
        return "batch size 1: torch's Linear backward computes a single row's gradients on another path"
    # (n_train=1 also makes batches of one row: run_batch hands such cells to the reference engine itself)
    return None


# A grid repeats the same few spec strings in thousands of cells: judge each string once.
@functools.lru_cache(maxsize=1024)
def _optimizer_reason(text: str) -> str | None:
    spec = parse_spec(text, what="optimizer")
    if spec.is_import_path:
        return f"user optimizer {spec.name!r} has no batched update rule"
    rule = RULES.get(spec.name)
    if rule is None:
        return f"optimizer {spec.name!r} has no batched update rule (batched: {', '.join(sorted(RULES))})"
    unknown = set(spec.kw) - set(_init_defaults(rule.torch_class))
    if unknown:
        return f"optimizer {text!r}: unknown argument {sorted(unknown)[0]!r} (the reference reports it)"
    return rule.unsupported(spec.kw)


@functools.lru_cache(maxsize=1024)
def _scheduler_reason(text: str) -> str | None:
    spec = parse_spec(text, what="scheduler")
    if spec.is_import_path:
        return f"user scheduler {spec.name!r}: only torch's and optbench's own schedulers run batched"
    entry = schedulers.get(spec.name)
    if entry.meta.get("class_name") == "ReduceLROnPlateau":
        return f"scheduler {spec.name!r} depends on the loss"
    nested = spec.kw.get("schedulers", [])
    for sub in nested if isinstance(nested, (list, tuple)) else [nested]:
        reason = _scheduler_reason(sub) if isinstance(sub, str) else "nested scheduler is not a spec string"
        if reason:
            return reason
    return None


@functools.cache
def _init_defaults(cls: type) -> dict:
    """Constructor arguments of an optimizer class and their defaults (``inspect`` is slow per cell)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "params")}


def batch_key(cfg: RunConfig) -> tuple:
    """Configs with equal keys can share one ``run_batch`` call.

    Fixed within a batch: the problem (so the data and, for toys, the start point), steps, device,
    precision, loss, batch size, head-lr scale, frozen layers, the update rule and its code-path flags
    (nesterov, amsgrad, centered, maximize). Free per cell: seed, init, lr, momentum, scheduler and every
    numeric optimizer argument.
    """
    return (
        cfg.problem,
        cfg.steps,
        cfg.device,
        cfg.precision,
        cfg.loss,
        cfg.batch_size,
        cfg.head_lr_scale,
        cfg.freeze,
        *_update_rule_key(cfg.optimizer),
    )


@functools.lru_cache(maxsize=1024)
def _update_rule_key(optimizer: str) -> tuple[str, tuple]:
    """(optimizer name, its code-path flags with defaults filled in)."""
    spec = parse_spec(optimizer, what="optimizer")
    rule = RULES.get(spec.name)
    flags: tuple = ()
    if rule is not None:
        defaults = _init_defaults(rule.torch_class)
        flags = tuple((f, spec.kw.get(f, defaults.get(f))) for f in rule.flags)
    return spec.name, flags


# ------------------------------------------------------------------------------------------------- run


def run_batch(cfgs: list[RunConfig]) -> list[RunResult]:
    """Run configs (normally of one ``batch_key``) as batched tensor programs; results in the same order.

    Configs outside the batched subset, or that fail to build, are run by ``engine.run``.
    """
    results: list[RunResult | None] = [None] * len(cfgs)
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        if unsupported_reason(cfg) is not None:
            results[i] = engine.run(cfg)
        else:
            groups.setdefault(batch_key(cfg), []).append(i)
    for indices in groups.values():
        for chunk in _chunks(indices, _chunk_size(cfgs[indices[0]])):
            for i, result in zip(chunk, _run_chunk([cfgs[i] for i in chunk]), strict=True):
                results[i] = result
    return results  # type: ignore[return-value]


def _run_chunk(cfgs: list[RunConfig]) -> list[RunResult]:
    """One batch; should it break (a bug, memory), its cells run on the reference engine and say so."""
    try:
        return _run_group(cfgs)
    except Exception as err:  # noqa: BLE001 - the grid must go on; the warning keeps the failure visible
        note = f"RuntimeWarning: batched engine failed ({type(err).__name__}: {err}); ran on the reference engine"
        results = [engine.run(cfg) for cfg in cfgs]
        for result in results:
            result.summary.warnings = "\n".join(filter(None, [result.summary.warnings, note]))
        return results


def _chunk_size(cfg: RunConfig) -> int:
    name = parse_spec(cfg.problem, what="problem").name
    if name in TOY_LOSSES:
        return MAX_TOY_CELLS
    kw = _factory_kwargs(cfg.problem)
    rows = max(cfg.batch_size or 64, kw.get("n_val", 256))
    per_cell = rows * kw.get("width", 64) * (kw.get("depth", 2) + 1) * 4  # floats in flight per cell
    return max(1, MLP_CHUNK_FLOATS // per_cell)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _factory_kwargs(problem: str) -> dict:
    """The problem factory's keyword defaults overridden by the spec's arguments."""
    spec = parse_spec(problem, what="problem")
    params = inspect.signature(problems.get(spec.name).factory).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **spec.kw}


@dataclass
class _Plan:
    """What a cell's real optimizer and scheduler say, step by step, before the batch starts."""

    values: dict[str, np.ndarray]  # group entry -> [steps, G] float64 (lr, momentum, beta1, ...)
    flags: dict[str, bool]
    knob: str | None
    warnings: list[str] = field(default_factory=list)


class _Fallback(Exception):
    """These cells go to the reference engine."""


def _run_group(cfgs: list[RunConfig]) -> list[RunResult]:
    started = time.perf_counter()
    cfg0 = cfgs[0]
    rule = RULES[parse_spec(cfg0.optimizer, what="optimizer").name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            batch = _ToyBatch(cfgs) if parse_spec(cfg0.problem).name in TOY_LOSSES else _MLPBatch(cfgs)
        except _Fallback:
            return [engine.run(cfg) for cfg in cfgs]
        build_warnings = _messages(caught)

    keep: list[int] = []
    plans: list[_Plan] = []
    all_plans = _plans([(i, cfg) for i, cfg in enumerate(cfgs) if i not in batch.failed], rule, batch)
    for i, plan in all_plans.items():
        if plan is not None and (not plans or plan.flags == plans[0].flags):
            keep.append(i)
            plans.append(plan)

    results: list[RunResult | None] = [None] * len(cfgs)
    if keep:
        values = {k: np.stack([p.values[k] for p in plans], axis=2) for k in plans[0].values}  # [T, G, C]
        # Branches torch takes per group (momentum on/off, ...) must hold for the whole run, as torch's
        # optimizer state does; cells are then sorted so that each run of cells takes one branch.
        switches = rule.switches(values)
        steady = np.ones(len(keep), dtype=bool)
        for table in switches.values():
            steady &= (table == table[:1]).all(axis=(0, 1))
        steady &= _fits_float32(rule.tables(values))
        code = np.zeros(len(keep), dtype=np.int64)  # the cell's branches, one bit per (switch, group)
        bits = [table[0, g] for _, table in sorted(switches.items()) for g in range(table.shape[1])]
        for bit, on in enumerate(bits):
            code |= on.astype(np.int64) << bit
        order = [j for j in np.argsort(code, kind="stable") if steady[j]]
        keep, plans, code = [keep[j] for j in order], [plans[j] for j in order], code[order]
        values = {k: v[:, :, order] for k, v in values.items()}
        switch_values = {name: table[0][:, order] for name, table in switches.items()}  # [G, C]
    if keep:
        batch.select_cells(keep)
        tables = {
            name: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(batch.flat.device)
            for name, v in rule.tables(values).items()
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            traces = _loop(batch, rule, tables, code, switch_values, plans[0].flags)
            loop_warnings = _messages(caught)
        share = (time.perf_counter() - started) / len(keep)
        for j, i in enumerate(keep):
            messages = list(
                dict.fromkeys([*batch.cell_warnings(i), *build_warnings, *plans[j].warnings, *loop_warnings])
            )
            summary, trace = _summarize(traces, j, plans[j], cfgs[i].steps)
            summary.warnings = "\n".join(messages) or None
            summary.wall_time_s = share
            results[i] = RunResult(cfgs[i], summary, trace)
    return [r if r is not None else engine.run(cfg) for r, cfg in zip(results, cfgs, strict=True)]


def _fits_float32(tables: dict[str, np.ndarray]) -> np.ndarray:
    """Per cell: does every per-step value [T, G, C] convert to float32? Torch refuses a Python scalar
    beyond float32's range ("value cannot be converted to type float without overflow", e.g. Adam's step
    size at lr=1e38) and the reference run fails there; such cells are left to the reference engine."""
    fits = True
    for table in tables.values():
        beyond = np.isfinite(table) & (np.abs(table) > np.finfo(np.float32).max)
        fits = fits & ~beyond.any(axis=(0, 1))
    return fits


def _messages(caught) -> list[str]:
    return list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))


def _entry(group: dict, name: str):
    if name in ("beta1", "beta2"):
        return group["betas"][0 if name == "beta1" else 1]
    return group[name]


@dataclass
class _Member:
    """A cell's real optimizer (one per optimizer spec and momentum): its settings, knob and warnings."""

    groups: list[dict]  # the optimizer's param groups without their params
    knob: str | None
    warnings: list[str]


def _member(cfg: RunConfig, rule: Rule, groups: list[dict]) -> _Member | None:
    """Build the cell's optimizer as engine.run does; None if it fails or leaves the proven subset."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            optimizer, knob = build_optimizer(cfg.optimizer, groups, cfg.lr, cfg.momentum)
        except Exception:  # noqa: BLE001 - the reference engine records why
            return None
    if type(optimizer) is not rule.torch_class or any(rule.unsupported(g) for g in optimizer.param_groups):
        return None
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return _Member(settings, knob, _messages(caught))


def _plans(cells: list[tuple[int, RunConfig]], rule: Rule, batch: _Batch) -> dict[int, _Plan | None]:
    """Every cell's per-step hyperparameters, from the real torch optimizer and scheduler.

    One real optimizer per (optimizer spec, momentum) checks the cell's settings exactly as engine.run would
    build them. Schedulers: the cells that share an optimizer spec, scheduler and lr get one real scheduler
    over one optimizer holding every cell's param groups (torch schedulers treat groups independently; the
    stand-in groups carry each cell's own settings), stepped ``steps`` times ahead of the run.
    """
    numeric = [name for name in rule.reads if name not in rule.flags]
    members: dict[tuple, _Member | None] = {}
    buckets: dict[tuple, list[tuple[int, RunConfig, _Member, list[dict]]]] = {}
    plans: dict[int, _Plan | None] = {}
    for i, cfg in cells:
        template = batch.stand_in_groups(cfg)  # the cell's groups and their lrs, as the problem makes them
        key = (cfg.optimizer, cfg.momentum)
        if key not in members:
            members[key] = _member(cfg, rule, template)
        member = members[key]
        plans[i] = None
        if member is not None and len(member.groups) == len(template):
            buckets.setdefault((cfg.optimizer, cfg.scheduler, cfg.lr), []).append((i, cfg, member, template))
    for bucket in buckets.values():
        distinct: dict[tuple, list[dict]] = {}  # cells with equal settings share their stand-in groups
        for _, cfg, member, template in bucket:
            distinct.setdefault(
                (cfg.momentum,),
                [
                    {**g, "lr": t["lr"], "params": t["params"]}
                    for g, t in zip(member.groups, template, strict=True)
                ],
            )
        schedule = _schedule(bucket[0][1], rule, list(distinct.values()), numeric)
        if schedule is None and len(distinct) > 1:  # e.g. per-group list arguments: one scheduler per cell
            schedule = [
                s
                for groups in distinct.values()
                for s in (_schedule(bucket[0][1], rule, [groups], numeric) or [None])
            ]
        if schedule is None:
            continue
        by_key = dict(zip(distinct, schedule, strict=True))
        for i, cfg, member, _ in bucket:
            values_warnings = by_key[(cfg.momentum,)]
            if values_warnings is None:
                continue
            values, scheduler_warnings = values_warnings
            flags = {name: bool(member.groups[0][name]) for name in rule.flags}
            plans[i] = _Plan(values, flags, member.knob, [*member.warnings, *scheduler_warnings])
    return plans


def _schedule(cfg: RunConfig, rule: Rule, members: list[list[dict]], numeric: list[str]):
    """Step one real scheduler over all members' groups; per member ({entry: [steps, G]}, warnings), or None."""
    steps = cfg.steps
    groups = [g for member in members for g in member]
    fixed = [name for name in numeric if name not in rule.varying]
    varying = [name for name in numeric if name in rule.varying]
    rows = np.empty((steps, len(varying), len(groups)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            spec = parse_spec(cfg.scheduler, what="scheduler")
            if spec.name == "none" and not spec.kw:  # engine: no scheduler object, constant settings
                param_groups = groups
                rows[:] = [[_entry(g, name) for g in groups] for name in varying]
            else:
                optimizer, _ = build_optimizer(cfg.optimizer, _stand_ins(groups), cfg.lr, cfg.momentum)
                scheduler = build_scheduler(cfg.scheduler, optimizer, steps, cfg.lr)
                if scheduler.needs_metric:
                    return None
                if getattr(scheduler.impl, "cycle_momentum", False):  # the same note as engine._run
                    warnings.warn(
                        f"scheduler {cfg.scheduler!r} cycles the optimizer's momentum "
                        "(cycle_momentum=True), overriding --momentum; pass cycle_momentum=False to "
                        "keep the optimizer's own",
                        UserWarning,
                        stacklevel=1,
                    )
                param_groups = optimizer.param_groups
                first = [[_entry(g, name) for g in param_groups] for name in fixed]
                optimizer.step()  # no gradients: changes nothing, marks the optimizer stepped (as the reference)
                for t in range(steps):
                    rows[t] = [[_entry(g, name) for g in param_groups] for name in varying]
                    scheduler.step(None)
                if [[_entry(g, name) for g in param_groups] for name in fixed] != first:
                    return None  # a scheduler moved a setting the rule treats as fixed
            fixed_values = np.array(
                [[_entry(g, name) for g in param_groups] for name in fixed], dtype=np.float64
            )
        except Exception:  # noqa: BLE001 - whatever breaks here, the reference engine records it
            return None
    messages = _messages(caught)
    out, start = [], 0
    for member in members:
        end = start + len(member)
        values = {name: rows[:, j, start:end] for j, name in enumerate(varying)}
        for j, name in enumerate(fixed):
            values[name] = np.broadcast_to(fixed_values[j, start:end], (steps, end - start))
        out.append((values, messages))
        start = end
    return out


# ----------------------------------------------------------------------------------------------- problems


class _Batch:
    """The trainable parameters of C cells as one flat tensor [C, N] (row c: cell c's parameters)."""

    flat: torch.Tensor
    columns: list[tuple[int, int, int]]  # (param group, first column, end column), groups in column order
    coords = False  # toy problems: flat is the point [C, d]
    eval_every: int | None = None
    failed: set[int]

    def stand_in_groups(self, cfg: RunConfig) -> list[dict]:
        """The cell's param groups (as engine.run makes them) with one tiny stand-in tensor each."""
        raise NotImplementedError

    def select_cells(self, keep: list[int]) -> None:
        """Stack the cells with these indices into the config list, in this order (before the loop)."""
        raise NotImplementedError

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these rows of the batch (dropping diverged cells)."""
        raise NotImplementedError

    def cell_warnings(self, i: int) -> list[str]:
        return []

    def loss_and_grad(self, t: int, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's losses [C] and gradient [C, N] (written into ``out`` if given)."""
        raise NotImplementedError

    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


def _stand_ins(groups: list[dict]) -> list[dict]:
    """The groups with one stand-in parameter each, on the CPU whatever the batch's device: the optimizer
    and scheduler that step them ahead of the run only yield Python floats (torch's schedulers read no
    params)."""
    return [{**g, "params": [torch.zeros(1, requires_grad=True, device="cpu")]} for g in groups]


def _build(cfg: RunConfig):
    return build_problem(
        cfg.problem,
        init=cfg.init,
        loss=cfg.loss,
        device=cfg.device,
        seed=cfg.seed,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
    )


class _ToyBatch(_Batch):
    coords = True

    def __init__(self, cfgs: list[RunConfig]):
        cfg = cfgs[0]
        try:  # the start point comes from the problem spec, the same for every cell (no RNG involved)
            self.problem = _build(cfg)
            self.problem.param_groups(cfg.lr, cfg.head_lr_scale, cfg.freeze)
        except Exception as err:  # noqa: BLE001 - the reference engine records it
            raise _Fallback from err
        loss, kwargs = TOY_LOSSES[parse_spec(cfg.problem).name], _factory_kwargs(cfg.problem)
        self.fn = lambda x: loss(x, **kwargs)
        self.x0 = self.problem.x.detach()
        self.columns = [(0, 0, self.x0.numel())]
        self.failed = set()

    def stand_in_groups(self, cfg):
        return _stand_ins(self.problem.param_groups(cfg.lr, cfg.head_lr_scale, cfg.freeze))

    def select_cells(self, keep):
        self.flat = self.x0.expand(len(keep), -1).clone()

    def select_rows(self, rows):
        self.flat = self.flat.index_select(0, rows)

    def loss_and_grad(self, t, out=None):
        x = self.flat.detach().requires_grad_(True)
        losses = self.fn(x)
        (grad,) = torch.autograd.grad(losses.sum(), x)  # cells are independent: d(sum)/dx_c = dloss_c/dx_c
        return losses.detach(), grad


class _MLPBatch(_Batch):
    """The cells' MLPs, run layer by layer on stacked weights [C, out, in] (views into ``flat``).

    Linear layers run through ``_BatchedLinear`` (each product batched where that is bit-exact, else per
    cell); activations are the problem's own modules, on [C, rows, width] where that rounds like each cell's
    slice (``_stacks_like_cells``), else per cell; the loss is the problem's loss module per cell, or for
    plain cross-entropy the same kernels batched. Everything lives on the problems' device.
    """

    def __init__(self, cfgs: list[RunConfig]):
        self.problems: dict[int, MLPProblem] = {}
        self.warnings: dict[int, list[str]] = {}
        self.failed = set()
        for i, cfg in enumerate(
            cfgs
        ):  # each cell's model, init and batch order exactly as engine.run builds them
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    torch.manual_seed(cfg.seed)
                    problem = _build(cfg)
                    problem.param_groups(cfg.lr, cfg.head_lr_scale, cfg.freeze)
                except Exception:  # noqa: BLE001 - the reference engine records it
                    self.failed.add(i)
                    continue
            self.problems[i] = problem
            self.warnings[i] = _messages(caught)
        if not self.problems:
            raise _Fallback
        first = next(iter(self.problems.values()))
        if not all(isinstance(m, (torch.nn.Linear, *_ELEMENTWISE)) for m in first.model):
            raise _Fallback
        if first.batch_index.shape[1] == 1:  # e.g. n_train=1: a single row, as unsupported_reason explains
            raise _Fallback
        self.layers = list(first.model)
        self.loss_module, self.eval_every = first.loss_module, first.eval_every
        self.plain_cross_entropy = _is_plain_cross_entropy(self.loss_module)
        self.x_train, self.y_train = first.x_train, first.y_train
        self.x_val, self.y_val, self.val_labels = first.x_val, first.y_val, first.val_labels
        named = list(first.model.named_parameters())
        self.trainable = [
            (name, p.shape) for name, p in named if p.requires_grad
        ]  # engine: problem.trainable
        self.frozen_names = [name for name, p in named if not p.requires_grad]
        self.offsets = np.cumsum([0] + [shape.numel() for _, shape in self.trainable]).tolist()
        self._buffers: dict[tuple, torch.Tensor] = {}

    def cell_warnings(self, i):
        return self.warnings.get(i, [])

    def stand_in_groups(self, cfg):
        problem = next(iter(self.problems.values()))
        groups = problem.param_groups(cfg.lr, cfg.head_lr_scale, cfg.freeze)
        group_of = {id(p): g for g, group in enumerate(groups) for p in group["params"]}
        columns = []
        for k, p in enumerate(problem.trainable):  # each group must be one run of columns
            g = group_of[id(p)]
            if columns and columns[-1][0] == g:
                columns[-1] = (g, columns[-1][1], self.offsets[k + 1])
            else:
                columns.append((g, self.offsets[k], self.offsets[k + 1]))
        if len({g for g, _, _ in columns}) != len(columns):
            raise _Fallback
        self.columns = columns
        return _stand_ins(groups)

    def select_cells(self, keep):
        models = [dict(self.problems[i].model.named_parameters()) for i in keep]
        self.flat = torch.cat(
            [torch.stack([m[name].detach().reshape(-1) for m in models]) for name, _ in self.trainable], 1
        )
        self.frozen = {name: torch.stack([m[name].detach() for m in models]) for name in self.frozen_names}
        self.batch_index = torch.stack(
            [self.problems[i].batch_index for i in keep], 1
        ).contiguous()  # [T, C, B]
        self.problems = {}  # the stacked copies are all that is needed from here on

    def select_rows(self, rows):
        self.flat = self.flat.index_select(0, rows)
        self.frozen = {name: w.index_select(0, rows) for name, w in self.frozen.items()}
        self.batch_index = self.batch_index.index_select(1, rows)

    def tensors(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The trainable tensors of every cell, [C, *shape], as views into ``flat``."""
        cells = flat.shape[0]
        return [
            flat[:, a:b].view(cells, *shape)
            for (_, shape), a, b in zip(self.trainable, self.offsets[:-1], self.offsets[1:], strict=True)
        ]

    def _forward(
        self, weights: dict[str, torch.Tensor], x: torch.Tensor, training: bool = True
    ) -> torch.Tensor:
        """All cells' outputs [C, rows, out]; x is [C, rows, in], or [rows, in] shared by every cell.

        Each Linear writes into a buffer kept from the previous call of the same shape (train and eval
        have their own): fresh multi-MB blocks every step would cost page faults on every first touch.
        """
        h = x
        for i, layer in enumerate(self.layers):
            if isinstance(layer, torch.nn.Linear):
                w, b = weights[f"{i}.weight"], weights[f"{i}.bias"]
                h = h.expand(w.shape[0], *h.shape) if h.dim() == 2 else h
                key = (training, i, h.shape[0], h.shape[1])
                if key not in self._buffers:
                    self._buffers[key] = torch.empty(h.shape[0], h.shape[1], w.shape[1], device=w.device)
                out = self._buffers[key].detach_()  # last step's graph is gone; drop its history
                h = _BatchedLinear.apply(h, w, b, out) if training else _product("linear", h, w, b, out=out)
            elif type(layer) is torch.nn.ReLU:
                h = torch.relu_(h)  # same values and backward (from the result) as ReLU
            elif _stacks_like_cells(layer, h):
                h = layer(h)
            else:  # each cell's [rows, width] slice, where the reference's tail elements are
                h = torch.stack([layer(cell) for cell in h.unbind(0)])
        return h

    def _losses(self, out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: (per-cell losses to differentiate, their values as the reference computes them)."""
        if not self.plain_cross_entropy:
            losses = torch.stack(
                [self.loss_module(o, y) for o, y in zip(out.unbind(0), target.unbind(0), strict=True)]
            )
            return losses, losses.detach()
        # F.cross_entropy = nll_loss(log_softmax(x)). log_softmax is row-wise, and the gradient of a mean
        # nll is -1/rows at each target whatever the order of the sum; only the value is reduced per cell.
        log_p = _log_softmax_classes(out)  # [C, classes, rows]
        nll = torch.nn.functional.nll_loss(log_p, target, reduction="none")  # [C, rows]
        return nll.mean(1), self._values(log_p.detach(), target.unbind(0))

    def _values(self, scores: torch.Tensor, targets) -> torch.Tensor:
        """Each cell's loss value from its own call, as the reference makes it (plain cross-entropy: the
        nll of the log-probabilities [C, classes, rows]; else the loss module on the outputs)."""
        with torch.no_grad():
            if self.plain_cross_entropy:  # one transposing copy, then [rows, classes] per cell
                rows = scores.transpose(1, 2).contiguous()
                return torch.stack(
                    [
                        torch.nn.functional.nll_loss(lp, y)
                        for lp, y in zip(rows.unbind(0), targets, strict=True)
                    ]
                )
            return torch.stack(
                [self.loss_module(o, y) for o, y in zip(scores.unbind(0), targets, strict=True)]
            )

    def loss_and_grad(self, t, out=None):
        index = self.batch_index[t]  # [C, B]
        x, y = self.x_train[index], self.y_train[index]
        leaves = [w.detach().requires_grad_(True) for w in self.tensors(self.flat)]
        weights = {**self.frozen, **dict(zip((name for name, _ in self.trainable), leaves, strict=True))}
        differentiable, values = self._losses(self._forward(weights, x), y)
        grads = torch.autograd.grad(differentiable.sum(), leaves)
        return values, torch.cat([g.reshape(g.shape[0], -1) for g in grads], 1, out=out)

    def evaluate(self):
        with torch.no_grad():
            weights = {
                **self.frozen,
                **dict(zip((n for n, _ in self.trainable), self.tensors(self.flat), strict=True)),
            }
            out = self._forward(weights, self.x_val, training=False)
            scores = _log_softmax_classes(out) if self.plain_cross_entropy else out
            val_loss = self._values(scores, [self.y_val] * out.shape[0])
            val_acc = None
            if self.val_labels is not None:
                val_acc = (out.argmax(2) == self.val_labels).float().mean(1)
        return val_loss, val_acc


_ELEMENTWISE = tuple(
    getattr(torch.nn, name)
    for name in ("Identity", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "SELU", "GELU", "SiLU", "ELU")
)
# Activations whose kernels give an element the same bits wherever it sits in the tensor: the piecewise
# linear ones on any device (a comparison and at most one multiply), and tanh where a probe on the device
# finds it so (``_stacks_like_cells``; on CPU its vectorised routine handles the tail elements too). ATen's
# CPU kernels compute the last n % (vector width) elements of sigmoid, SiLU, ELU, SELU and GELU with the
# scalar formula, which differs from the vectorised one in the last bit for a few % of inputs, so stacking
# cells would move a cell's tail; those run on each cell's own [rows, width] slice, as in the reference.
_PIECEWISE_LINEAR = (torch.nn.Identity, torch.nn.ReLU, torch.nn.LeakyReLU)
_POSITION_INDEPENDENT = (*_PIECEWISE_LINEAR, torch.nn.Tanh)


def _is_plain_cross_entropy(module) -> bool:
    return (
        type(module) is torch.nn.CrossEntropyLoss
        and module.weight is None
        and module.reduction == "mean"
        and module.label_smoothing == 0.0
        and module.ignore_index < 0
    )


# The four products of a Linear layer, batched over C cells, each with the per-cell call the reference
# engine makes (F.linear -> addmm forward; AddmmBackward0: grad·W, gradᵀ·x, and the bias grad summed over
# rows). Both forms compute the same math; whether they round alike depends on the BLAS kernel that the
# shapes select (MKL takes other paths for a 1-column output, ATen a naive loop for tiny products), so
# each shape is tried once on random data and the batched form is used only where it is bit-identical.
_SITES: dict[str, tuple[Callable, Callable]] = {
    "linear": (
        lambda x, w, b, out=None: torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2), out=out),
        lambda x, w, b: torch.nn.functional.linear(x, w, b),
    ),
    "grad_input": (lambda g, w: torch.bmm(g, w), lambda g, w: g.mm(w)),
    "grad_weight": (lambda g, x: torch.bmm(g.transpose(1, 2), x), lambda g, x: g.t().mm(x)),
    "grad_bias": (lambda g: g.sum(1), lambda g: g.sum(0, keepdim=True).view(g.shape[1])),
}
# Probe verdicts by (site, device, CPU threads, shapes): a kernel that matches on one device (or thread
# count, which changes how ATen splits the work) proves nothing about another.
_EXACT: dict[tuple, bool] = {}


# Exactness probes try PROBE_CELLS cells' worth of random data: for some shapes (a single row, 2-3 inputs,
# a few classes) the batched kernel rounds like the per-cell one only on part of the data, so one small
# draw can pass by chance. A draw that already compares PROBE_ELEMENTS results is evidence enough (the
# per-cell reference side costs ~0.1 s a round at 64 cells of 64 x 64).
PROBE_CELLS = 512
PROBE_ELEMENTS = 1 << 17
ALIGN_BYTES = 64  # torch's allocators start every tensor on a 64-byte (CUDA: 512-byte) boundary


def _probe_rounds(cells: int, elements_per_draw: int) -> int:
    return max(1, min(-(-PROBE_CELLS // max(1, cells)), -(-PROBE_ELEMENTS // max(1, elements_per_draw))))


def _probe_generator(device: torch.device) -> torch.Generator:
    """A fresh generator on the device under test: a verdict must not depend on what ran before, and the
    random data must be made where the kernels it judges run."""
    return torch.Generator(device=device).manual_seed(0)


def _probe_like(a: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random data with a's shape, strides and device (stride 0 stays a broadcast)."""
    if a.stride(0) == 0:
        return torch.randn(a.shape[1:], generator=generator, device=a.device).expand(a.shape)
    return torch.empty_strided(a.shape, a.stride(), device=a.device).normal_(generator=generator)


def _product(site: str, *args: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    batched, per_cell = _SITES[site]
    device = args[0].device
    key = (site, str(device), torch.get_num_threads(), *((tuple(a.shape), a.stride()) for a in args))
    exact = _EXACT.get(key)
    if exact is None:
        generator = _probe_generator(device)
        rounds, tried = 1, 0
        while tried < rounds:
            probe = [_probe_like(a, generator) for a in args]
            expected = torch.stack([per_cell(*_cell(probe, c)) for c in range(args[0].shape[0])])
            exact = torch.equal(batched(*probe), expected)
            if not exact:
                break
            rounds, tried = _probe_rounds(args[0].shape[0], expected.numel()), tried + 1
        _EXACT[key] = exact
    if exact:
        return batched(*args) if out is None else batched(*args, out=out)
    return torch.stack([per_cell(*_cell(args, c)) for c in range(args[0].shape[0])], out=out)


def _cell(args: tuple[torch.Tensor, ...] | list[torch.Tensor], c: int) -> list[torch.Tensor]:
    """Cell c's operands as the reference holds them: its parameters and activations are tensors of their
    own, whose data start on an allocator boundary. A view into the stack may start anywhere, and BLAS may
    take another kernel for it (MKL on AVX2 rounds small products otherwise for an operand that is not
    16-byte aligned), so a view that starts off the boundary is copied."""
    views = [a[c] for a in args]
    return [v if v.data_ptr() % ALIGN_BYTES == 0 else v.clone() for v in views]


def _log_softmax_classes(out: torch.Tensor) -> torch.Tensor:
    """log_softmax over the classes of [C, rows, classes] logits, returned as [C, classes, rows].

    The reference takes it over the last dim of [rows, classes]; ATen's kernel for a last dim of a few
    classes is slow (~60 ns a row), the one for an inner dim is ~15x faster. Used where both give the same
    bits, forward and backward, for this shape, tried on random data as ``_product`` (at 50 or 100 rows
    of 3 classes the two kernels differ in only a fraction of the rows).
    """

    def trial(gen: torch.Generator) -> bool:
        with torch.enable_grad():  # the first call may come from the evaluation, under no_grad
            x = torch.randn(out.shape, generator=gen, device=out.device) * 4
            grad = torch.randn(out.shape, generator=gen, device=out.device)
            want = torch.stack([torch.log_softmax(row, 1) for row in x])
            want_grad = torch.stack(
                [
                    torch._log_softmax_backward_data(g, y, 1, torch.float32)
                    for g, y in zip(grad, want, strict=True)
                ]
            )
            leaf = x.requires_grad_(True)
            got = torch.log_softmax(leaf.transpose(1, 2).contiguous(), 1).transpose(1, 2)
            (got_grad,) = torch.autograd.grad(got, leaf, grad)
        return torch.equal(got, want) and torch.equal(got_grad, want_grad)

    if _verdict("log_softmax", out, trial):
        return torch.log_softmax(out.transpose(1, 2).contiguous(), 1)
    return torch.log_softmax(out, 2).transpose(1, 2)


def _stacks_like_cells(layer: torch.nn.Module, h: torch.Tensor) -> bool:
    """Does the activation on the stack [C, rows, width] give every cell the bits it gets on its own slice,
    forward and backward (``_POSITION_INDEPENDENT``)? Piecewise-linear ones always do; tanh where random
    data of h's shape, on h's device, says so (a verdict per shape, as ``_product``); the rest never do.
    """
    if type(layer) in _PIECEWISE_LINEAR:
        return True
    if type(layer) not in _POSITION_INDEPENDENT:
        return False

    def trial(gen: torch.Generator) -> bool:
        with torch.enable_grad():  # the evaluation runs under no_grad
            x = (torch.randn(h.shape, generator=gen, device=h.device) * 4).requires_grad_(True)
            grad = torch.randn(h.shape, generator=gen, device=h.device)
            cells = [cell.detach().requires_grad_(True) for cell in x.unbind(0)]
            want = [layer(cell) for cell in cells]
            want_grad = torch.autograd.grad(want, cells, list(grad.unbind(0)))
            got = layer(x)
            (got_grad,) = torch.autograd.grad(got, x, grad)
        return torch.equal(got, torch.stack(want)) and torch.equal(got_grad, torch.stack(want_grad))

    return _verdict(type(layer).__name__, h, trial)


def _verdict(name: str, like: torch.Tensor, trial: Callable[[torch.Generator], bool]) -> bool:
    """Cached per (name, device, threads, shape of ``like``): does ``trial`` hold on every one of the
    probe's random draws (``_probe_rounds``), from a fresh generator on ``like``'s device?"""
    key = (name, str(like.device), torch.get_num_threads(), tuple(like.shape))
    exact = _EXACT.get(key)
    if exact is None:
        gen = _probe_generator(like.device)
        exact = all(trial(gen) for _ in range(_probe_rounds(like.shape[0], like.numel())))  # stops at a miss
        _EXACT[key] = exact
    return exact


class _BatchedLinear(torch.autograd.Function):
    """y[c] = x[c] @ W[c]ᵀ + b[c] for every cell, into ``out``, with the reference's products (``_product``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, out):
        ctx.save_for_backward(x, weight)
        ctx.mark_dirty(out)  # the result is written into ``out``, a buffer reused from step to step
        return _product("linear", x, weight, bias, out=out)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _product("grad_input", grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = _product("grad_weight", grad, x) if ctx.needs_input_grad[1] else None
        grad_b = _product("grad_bias", grad) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


# ---------------------------------------------------------------------------------------------- the loop


@dataclass
class _Traces:
    """Per-step values of every cell of a batch, on the host after the loop."""

    loss: np.ndarray  # [C, T] float64
    grad_norm: np.ndarray
    update_norm: np.ndarray
    param_norm: np.ndarray
    x: np.ndarray | None  # [C, T, d] the point before each step (toy problems)
    val_loss: np.ndarray
    val_acc: np.ndarray
    diverged: np.ndarray  # [C] first bad step, -1 for none


def _blocks_layout(code: np.ndarray, switch_values: dict[str, np.ndarray], columns) -> list[tuple]:
    """(first cell, end cell, group, first column, end column, switches) for each uniform block."""
    layout = []
    starts = [0, *(np.flatnonzero(np.diff(code)) + 1).tolist(), len(code)]
    for c0, c1 in zip(starts, starts[1:], strict=False):
        for g, p0, p1 in columns:
            on = {name: bool(v[g, c0]) for name, v in switch_values.items()}
            layout.append((c0, c1, g, p0, p1, on))
    return layout


def _loop(  # noqa: C901 - to split (#13)
    batch: _Batch,
    rule: Rule,
    tables: dict[str, torch.Tensor],
    code: np.ndarray,
    switch_values: dict[str, np.ndarray],
    flags: dict[str, bool],
) -> _Traces:
    steps, _, total = next(iter(tables.values())).shape
    flat = batch.flat
    device = flat.device  # every buffer below lives there; the host reads losses at the checks only
    state = {name: torch.zeros_like(flat) for name in rule.state_names(flags)}
    layout = _blocks_layout(code, switch_values, batch.columns)

    def blocks(t: int, grad: torch.Tensor | None) -> list:
        def hp_for(g, c0, c1):
            return lambda name: tables[name][t, g, c0:c1].unsqueeze(1)

        return [
            Block(
                flat[c0:c1, p0:p1],
                grad[c0:c1, p0:p1] if grad is not None else None,
                {n: s[c0:c1, p0:p1] for n, s in state.items()},
                hp_for(g, c0, c1),
                on,
                t == 0,
            )
            for c0, c1, g, p0, p1, on in layout
        ]

    for block in blocks(0, None):
        rule.init_state(block)

    nan = float("nan")
    loss = torch.full((steps, total), nan, device=device)
    # Toy problems keep the points and gradients (norms at the end, as the engine); MLPs the norms.
    # Problems without a held-out split (toys) get one shared all-nan val buffer.
    d = flat.shape[1]
    x = torch.full((steps + 1, total, d), nan, device=device) if batch.coords else None
    toy_grads = torch.full((steps, total, d), nan, device=device) if batch.coords else None
    grad_norm, update_norm, param_norm = (
        (None, None, None)
        if batch.coords
        else (torch.full((steps, total), nan, device=device) for _ in range(3))
    )
    val_loss = torch.full((steps, total), nan, device=device)
    val_acc = torch.full((steps, total), nan, device=device) if batch.eval_every else val_loss
    # before, gradient, update (for the norms)
    work = None if batch.coords else torch.empty(3, *flat.shape, device=device)
    diverged = np.full(total, -1)  # on the host: written at the checks, read by _summarize
    active = torch.arange(total, device=device)  # batch row -> cell
    alive = torch.ones(total, dtype=torch.bool, device=device)  # rows not diverged yet
    compacted = False
    threshold = torch.empty(0, device=device)
    window_start = 0

    def put(buffer: torch.Tensor, t: int, values: torch.Tensor) -> None:
        if compacted:
            buffer[t].index_copy_(0, active, values)
        else:
            buffer[t] = values

    for t in range(steps):
        if batch.eval_every and (t % batch.eval_every == 0 or t == steps - 1):
            v_loss, v_acc = batch.evaluate()
            put(val_loss, t, v_loss)
            if v_acc is not None:
                put(val_acc, t, v_acc)
        if batch.coords:
            if t == 0:
                put(x, t, flat)  # later points are written after each update
        else:
            work[0].copy_(flat)
        losses, grad = batch.loss_and_grad(t, None if work is None else work[1])
        put(loss, t, losses)
        with torch.no_grad():
            for block in blocks(t, grad):
                rule.step(block, flags)
        if batch.coords:
            put(toy_grads, t, grad)
            put(x, t + 1, flat)
        else:  # engine._global_norm of the gradient, the update and the parameters before it, per cell
            torch.sub(flat, work[0], out=work[2])
            norms = _global_norms(
                [work[:, :, a:b] for a, b in zip(batch.offsets, batch.offsets[1:], strict=False)]
            )
            put(param_norm, t, norms[0])
            put(grad_norm, t, norms[1])
            put(update_norm, t, norms[2])

        if t == 0:  # engine: threshold = DIVERGENCE_FACTOR * max(|initial loss|, 1), -inf if not finite
            initial = losses.double().cpu().numpy()  # one sync, as the engine's float(loss)
            limit = DIVERGENCE_FACTOR * np.maximum(np.abs(initial), 1.0)
            threshold = torch.from_numpy(np.where(np.isfinite(initial), limit, -np.inf)).float().to(device)
        if (t + 1) % CHECK_EVERY == 0 or t == steps - 1:
            window = loss[window_start : t + 1].index_select(
                1, active
            )  # [w, C] float32, as the engine compares
            bad = ~torch.isfinite(window) | (window > threshold)
            newly = bad.any(0) & alive
            if bool(newly.any()):
                rows = newly.nonzero().flatten()
                first_bad = window_start + bad.float().argmax(0)[rows]
                diverged[active[rows].cpu().numpy()] = first_bad.cpu().numpy()
                alive &= ~newly
                if not bool(alive.any()):
                    break
            # Drop diverged cells from the batch: always for MLPs (their inf/nan costs real compute), for
            # toys once a quarter of the rows is dead (a toy row is cheap, compaction copies every table).
            dead = alive.numel() - int(alive.sum())
            if dead and (not batch.coords or 4 * dead >= alive.numel()):
                keep = alive.nonzero().flatten()
                active, compacted, threshold, alive = active[keep], True, threshold[keep], alive[keep]
                batch.select_rows(keep)
                flat = batch.flat
                state = {name: s.index_select(0, keep) for name, s in state.items()}
                tables = {name: v.index_select(2, keep) for name, v in tables.items()}
                kept = keep.cpu().numpy()
                code = code[kept]
                switch_values = {name: v[:, kept] for name, v in switch_values.items()}
                layout = _blocks_layout(code, switch_values, batch.columns)
                work = None if work is None else work.index_select(1, keep)
            window_start = t + 1

    if batch.coords:  # engine: norms of the kept gradients and points, taken once at the end
        grad_norm = torch.linalg.vector_norm(toy_grads, dim=2)
        param_norm = torch.linalg.vector_norm(x[:-1], dim=2)
        update_norm = torch.linalg.vector_norm(x[1:] - x[:-1], dim=2)
    return _Traces(
        _host(loss),
        _host(grad_norm),
        _host(update_norm),
        _host(param_norm),
        _host(x[:-1]) if x is not None else None,
        _host(val_loss),
        _host(val_acc),
        diverged,
    )


def _host(values: torch.Tensor) -> np.ndarray:
    """[T, C, ...] float32 on the device -> [C, T, ...] float64 on the host (each cell's rows contiguous)."""
    return values.transpose(0, 1).contiguous().cpu().numpy().astype(np.float64)


def _global_norms(parts: list[torch.Tensor]) -> torch.Tensor:
    """engine._global_norm for each row of [..., C, n] parts: one tensor's norm, or the norm of the norms."""
    norms = [torch.linalg.vector_norm(part, dim=-1) for part in parts]
    if len(norms) == 1:
        return norms[0]
    return torch.linalg.vector_norm(torch.stack(norms, -1), dim=-1)


def _summarize(traces: _Traces, c: int, plan: _Plan, steps: int) -> tuple[RunSummary, dict[str, np.ndarray]]:
    """Cell c's trace and summary, column for column as engine.run writes them."""
    bad = int(traces.diverged[c])
    diverged_step = bad if bad >= 0 else None
    end = bad + 1 if bad >= 0 else steps
    nan = np.full(end, np.nan)
    trace = {  # views of the batch's host arrays: each cell's row is its own contiguous block
        "step": np.arange(end, dtype=np.int64),
        "lr": np.ascontiguousarray(plan.values["lr"][:end, 0], dtype=np.float64),
        "loss": traces.loss[c, :end],
        "grad_norm": traces.grad_norm[c, :end],
        "update_norm": traces.update_norm[c, :end],
        "param_norm": traces.param_norm[c, :end],
    }
    if traces.x is not None:
        trace["x0"] = np.ascontiguousarray(traces.x[c, :end, 0])
        trace["x1"] = np.ascontiguousarray(traces.x[c, :end, 1]) if traces.x.shape[2] > 1 else nan
    else:
        trace["x0"], trace["x1"] = nan, nan.copy()
    trace["val_loss"] = traces.val_loss[c, :end]
    trace["val_acc"] = traces.val_acc[c, :end]
    trace["loss_scale"] = np.full(end, np.nan)
    trace["skipped_step"] = np.zeros(end, dtype=bool)
    losses = trace["loss"]
    finite = losses[np.isfinite(losses)]
    summary = RunSummary(
        status="diverged" if diverged_step is not None else "ok",
        final_loss=float(losses[-1]) if end else None,
        best_loss=float(finite.min()) if finite.size else None,
        diverged_step=diverged_step,
        steps_completed=diverged_step if diverged_step is not None else steps,
        momentum_knob=plan.knob,
        final_val_loss=_last_value(trace["val_loss"]),
        final_val_acc=_last_value(trace["val_acc"]),
        engine=ENGINE,
    )
    return summary, trace


def _last_value(values: np.ndarray) -> float | None:
    """The last non-nan value (engine's ``_last_finite``)."""
    kept = values[~np.isnan(values)]
    return float(kept[-1]) if kept.size else None
