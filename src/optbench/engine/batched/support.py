"""What the batched engine can run, and which cells may share a batch: cheap checks, no torch objects.

A grid repeats the same few spec strings in thousands of cells, so everything but the lr is judged once
per distinct combination of the fields that matter (``_judge``, cached).
"""

from __future__ import annotations

import functools
import operator

import numpy as np

from optbench.engine.batched.plans import factorize, init_defaults
from optbench.engine.batched.rules import RULES
from optbench.errors import OptbenchError
from optbench.registry.problems import is_toy, problems
from optbench.registry.schedulers import schedulers
from optbench.registry.validate import is_lr
from optbench.spec import RunConfig, parse_spec

MLP_PROBLEMS = tuple(e.name for e in problems.entries() if e.meta.get("batched") == "mlp")  # MLPProblems
_FIELD_NAMES = (
    "problem",
    "optimizer",
    "scheduler",
    "precision",
    "init",
    "loss",
    "batch_size",
    "head_lr_scale",
    "freeze",
    "steps",
    "device",
    "sharpness_every",
)
_FIELDS = operator.attrgetter(*_FIELD_NAMES)
# Cells of one batch share these (and the optimizer's code-path flags, ``_update_rule_key``).
_KEY_FIELDS = (
    "problem",
    "steps",
    "device",
    "precision",
    "loss",
    "batch_size",
    "head_lr_scale",
    "freeze",
    "sharpness_every",
)


def unsupported_reason(cfg: RunConfig) -> str | None:
    """None if the batched engine runs this canonical config exactly like ``engine.run``; else why not."""
    return judge(cfg)[0]


def batch_key(cfg: RunConfig) -> tuple:
    """Configs with equal keys can share one ``run_batch`` call (see ``engine.batched``)."""
    return _judge(_FIELDS(cfg))[1]


def judge(cfg: RunConfig) -> tuple[str | None, tuple]:
    """(why this cell cannot run batched or None, its batch key)."""
    if cfg.precision != "fp32":
        return _precision_reason(cfg.precision), ()
    if not is_lr(cfg.lr):
        return _lr_reason(cfg.lr), ()
    return _judge(_FIELDS(cfg))


def triage(cfgs: list[RunConfig]) -> tuple[list[str | None], list[np.ndarray]]:
    """``judge`` for many cells at once: per cell why it cannot run batched (None: it can), and the cells
    that can, grouped by batch key (cell indices in order). Each distinct combination of fields is judged
    once; the per-cell work is a few C-level passes (a grid is thousands of cells and a few specs)."""
    field_of, fields = factorize(list(map(_FIELDS, cfgs)))
    verdicts = [_judge(f) for f in fields]
    lrs = list(map(operator.attrgetter("lr"), cfgs))
    if set(map(type, lrs)) <= {float, int}:
        values = np.fromiter(lrs, dtype=np.float64, count=len(lrs))
        lr_ok = (values > 0) & np.isfinite(values)
    else:
        lr_ok = np.array([is_lr(lr) for lr in lrs], dtype=bool)
    fp32 = np.array([f[3] == "fp32" for f in fields], dtype=bool)[field_of]
    judged_ok = np.array([reason is None for reason, _ in verdicts], dtype=bool)[field_of]
    reasons: list[str | None] = [None] * len(cfgs)
    for i in np.flatnonzero(~(fp32 & lr_ok & judged_ok)).tolist():
        reasons[i] = judge(cfgs[i])[0]
    group_ids: dict[tuple, int] = {}
    group_of_field = np.array(
        [group_ids.setdefault(key, len(group_ids)) for _, key in verdicts], dtype=np.int64
    )
    group_of = np.where(fp32 & lr_ok & judged_ok, group_of_field[field_of], -1)
    order = np.argsort(group_of, kind="stable")
    bounds = np.searchsorted(group_of[order], np.arange(len(group_ids) + 1))
    groups = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    return reasons, groups


def _lr_reason(lr) -> str:
    return f"learning rate {lr}: not a positive finite number"


def _precision_reason(precision: str) -> str:
    return f"precision {precision!r}: the batched engine runs fp32 only"


@functools.lru_cache(maxsize=4096)
def _judge(fields: tuple) -> tuple[str | None, tuple]:
    cell = dict(zip(_FIELD_NAMES, fields, strict=True))
    key = tuple(cell[name] for name in _KEY_FIELDS)
    try:
        return _reason(cell), (*key, *_update_rule_key(cell["optimizer"]))
    except OptbenchError as err:  # malformed spec: the reference engine reports it
        return f"cannot be parsed ({err})", key


def _reason(cell: dict) -> str | None:
    reason = _optimizer_reason(cell["optimizer"]) or _scheduler_reason(cell["scheduler"])
    if reason:
        return reason
    problem = cell["problem"]
    name = parse_spec(problem, what="problem").name
    if is_toy(problem):
        if (
            parse_spec(cell["init"], what="init").name != "default"
            or cell["loss"] not in ("none", "auto")
            or cell["batch_size"] is not None
            or cell["head_lr_scale"] != 1.0
            or cell["freeze"]
        ):
            return f"init/loss/batch size/head lr/freeze on toy problem {name!r} (the reference reports it)"
        return None
    if name not in MLP_PROBLEMS:
        return f"problem {name!r} has no batched form (batched: the toy functions, {', '.join(MLP_PROBLEMS)})"
    if cell["sharpness_every"]:
        return "sharpness tracking on an MLP: the reference engine measures it (per-cell Hessian-vector products)"
    if cell["batch_size"] == 1:  # a [1, k] input is also column-major, and autograd then takes other products
        return "batch size 1: torch's Linear backward computes a single row's gradients on another path"
    # (n_train=1 also makes batches of one row: run_batch hands such cells to the reference engine itself)
    return None


@functools.lru_cache(maxsize=1024)
def _optimizer_reason(text: str) -> str | None:
    spec = parse_spec(text, what="optimizer")
    if spec.is_import_path:
        return f"user optimizer {spec.name!r} has no batched update rule"
    rule = RULES.get(spec.name)
    if rule is None:
        return f"optimizer {spec.name!r} has no batched update rule (batched: {', '.join(sorted(RULES))})"
    unknown = set(spec.kw) - set(init_defaults(rule.torch_class))
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


@functools.lru_cache(maxsize=1024)
def _update_rule_key(optimizer: str) -> tuple[str, tuple]:
    """(optimizer name, its code-path flags with defaults filled in)."""
    spec = parse_spec(optimizer, what="optimizer")
    rule = RULES.get(spec.name)
    flags: tuple = ()
    if rule is not None:
        defaults = init_defaults(rule.torch_class)
        flags = tuple((f, spec.kw.get(f, defaults.get(f))) for f in rule.flags)
    return spec.name, flags
