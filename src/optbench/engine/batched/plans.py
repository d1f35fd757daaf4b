"""Per-step hyperparameters of a batch's cells, read from the real torch optimizers and schedulers.

A grid repeats a few optimizer specs, schedulers, lrs and momenta over thousands of cells, so the work here
is done once per distinct value, never per cell:

- one real optimizer per (optimizer spec, momentum) (a *member*): ``optimizers.build_optimizer`` on
  stand-in parameters, so invalid settings are refused exactly as the reference refuses them; its param
  groups give every numeric setting, the code-path flags and the momentum knob;
- one *plan* per (optimizer spec, scheduler, lr, momentum): the values [T or 1, G] of every entry the
  rule reads. Without a scheduler they are the member's settings with the cell's group lrs (no torch
  object, all plans at once with numpy). With one, the plans that share an optimizer spec, scheduler and
  lr get one real scheduler (``schedulers.build_scheduler``) over one optimizer holding all their param
  groups (torch schedulers treat groups independently), stepped T times ahead of the run;
- ``Plans.cells`` then gathers each cell's column of every table, [T or 1, G, C].
"""

from __future__ import annotations

import functools
import inspect
import operator
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from optbench.engine.batched.rules import Rule
from optbench.registry.optimizers import build_optimizer
from optbench.registry.schedulers import build_scheduler
from optbench.spec import RunConfig, parse_spec


@dataclass
class Member:
    """One real optimizer (per optimizer spec and momentum): its group settings, knob and warnings."""

    groups: list[dict]  # the optimizer's param groups without their params
    knob: str | None
    warnings: list[str]

    def flags(self, rule: Rule) -> tuple[bool, ...]:
        return tuple(bool(self.groups[0][name]) for name in rule.flags)


@dataclass
class Plans:
    """Distinct plans and which one each cell follows.

    ``values``: entry -> [T or 1, G, P] float64 (1: constant over the run); ``plan_of_cell`` [C]: the plan
    index of each cell, -1 for a cell the reference engine must run (its optimizer or scheduler cannot be
    built, or leaves the rule's proven subset).
    """

    plan_of_cell: np.ndarray
    values: dict[str, np.ndarray]
    knob: list[str | None]  # per plan
    warnings: list[tuple[str, ...]]  # per plan
    flags: dict[str, bool] = field(default_factory=dict)  # the batch's (every kept cell has these)

    def cells(self, table: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """A [T or 1, G, P] table's columns for these cells: [T or 1, G, len(cells)]."""
        return table[:, :, self.plan_of_cell[cells]]


def make_plans(
    cfgs: Sequence[RunConfig], rule: Rule, group_lrs: Callable[[float], list[float]], steps: int
) -> Plans:
    """Every cell's per-step hyperparameters; ``group_lrs(lr)``: the lr of each param group the problem
    makes for a cell of that lr (the head group's is lr x head_lr_scale)."""
    plan_of_cell, field_of_plan, values = _plan_index(cfgs)
    optimizers, schedulers_, lrs, momenta = values
    opt_of, sched_of, lr_of, mom_of = field_of_plan
    lr_table = np.array(
        [group_lrs(lr) for lr in lrs], dtype=np.float64
    )  # [lrs, G], as the problem makes them
    member_of, first_plan = _first_of(opt_of * len(momenta) + mom_of)
    members = [  # a member is built with the lr of its first cell, as engine.run builds it
        _member(optimizers[opt_of[p]], lrs[lr_of[p]], momenta[mom_of[p]], rule, lr_table[lr_of[p]].tolist())
        for p in first_plan.tolist()
    ]
    ok = np.array([m is not None for m in members], dtype=bool)[member_of]
    unscheduled = np.array([_is_none(s) for s in schedulers_], dtype=bool)[sched_of]
    builder = _PlanTables(rule, steps, len(member_of), lr_table.shape[1])
    builder.constant(members, member_of, lr_table[lr_of], ok & unscheduled)
    for bucket in _buckets(field_of_plan, np.flatnonzero(ok & ~unscheduled)):
        p0 = bucket[0]
        key = (optimizers[opt_of[p0]], schedulers_[sched_of[p0]], lrs[lr_of[p0]], momenta[mom_of[p0]])
        groups = [_groups(members[member_of[p]], lr_table[lr_of[p]].tolist()) for p in bucket]
        for p, result in zip(bucket, _schedules(key, groups, rule, steps), strict=True):
            if result is None:
                ok[p] = False
            else:
                builder.scheduled(p, *result)
    knob = np.array([m.knob if m is not None else None for m in members], dtype=object)[member_of]
    member_warnings = np.empty(len(members), dtype=object)
    member_warnings[:] = [tuple(m.warnings) if m is not None else () for m in members]
    plan_warnings = member_warnings[member_of].tolist()
    for p, messages in builder.messages.items():
        plan_warnings[p] = tuple(dict.fromkeys([*plan_warnings[p], *messages]))
    plans = Plans(np.where(ok[plan_of_cell], plan_of_cell, -1), builder.values, knob.tolist(), plan_warnings)
    _keep_one_flag_set(plans, members, member_of, rule)
    return plans


_PLAN_FIELDS = ("optimizer", "scheduler", "lr", "momentum")


def _plan_index(cfgs: Sequence[RunConfig]) -> tuple[np.ndarray, list[np.ndarray], list[list]]:
    """Plans = distinct (optimizer, scheduler, lr, momentum), in the order of their first cell.

    Returns (plan of each cell [C], each field's value index per plan [P] x 4, each field's distinct values).
    """
    field_of_cell, values = [], []
    for name in _PLAN_FIELDS:  # each field factorized on its own: C-level passes over the cells
        of, distinct = factorize(list(map(operator.attrgetter(name), cfgs)))
        field_of_cell.append(of)
        values.append(distinct)
    code = np.zeros(len(cfgs), dtype=np.int64)
    for of, distinct in zip(field_of_cell, values, strict=True):
        code = code * len(distinct) + of
    plan_of_cell, first_cell = _first_of(code)
    return plan_of_cell, [of[first_cell] for of in field_of_cell], values


def _first_of(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each code among the distinct codes, numbered by first appearance; the first position of
    each distinct code)."""
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse.reshape(-1)], first[order]


def factorize(values: list) -> tuple[np.ndarray, list]:
    """(index of each value among the distinct ones, the distinct values in order of first appearance).

    Plain numbers go through numpy (a grid's lrs are mostly all distinct, and hashing 10,000 floats in
    Python costs more than sorting them); anything else (strings, None, tuples) through a dict.
    """
    if values and values.count(values[0]) == len(values):  # one value (a C-level pass of == on each)
        return np.zeros(len(values), dtype=np.int64), [values[0]]
    if values and set(map(type, values)) <= {float, int}:
        of, first = _first_of(np.fromiter(values, dtype=np.float64, count=len(values)))
        return of, [values[i] for i in first.tolist()]
    distinct = list(dict.fromkeys(values))
    position = {value: k for k, value in enumerate(distinct)}
    return np.fromiter(map(position.__getitem__, values), dtype=np.int64, count=len(values)), distinct


def _keep_one_flag_set(plans: Plans, members: list[Member | None], member_of_plan: np.ndarray, rule) -> None:
    """Flags (nesterov, maximize, ...) are one code path for the whole batch: cells whose optimizer has
    other flags than the first kept cell's go to the reference engine."""
    kept = np.flatnonzero(plans.plan_of_cell >= 0)
    if not kept.size:
        return
    flags_of_member = [m.flags(rule) if m is not None else None for m in members]
    first = flags_of_member[member_of_plan[plans.plan_of_cell[kept[0]]]]
    other = np.array([f != first for f in flags_of_member], dtype=bool)[member_of_plan]
    plans.plan_of_cell[(plans.plan_of_cell >= 0) & other[np.maximum(plans.plan_of_cell, 0)]] = -1
    plans.flags = dict(zip(rule.flags, first, strict=True))


class _PlanTables:
    """The [T or 1, G, P] value tables being filled, plan by plan or all constant plans at once."""

    def __init__(self, rule: Rule, steps: int, plans: int, groups: int):
        numeric = [name for name in rule.reads if name not in rule.flags]
        self.fixed = [name for name in numeric if name not in rule.varying]
        self.varying = [name for name in numeric if name in rule.varying]
        self.steps, self.plans, self.groups = steps, plans, groups
        self.values = {name: np.full((1, groups, plans), np.nan) for name in numeric}
        self.messages: dict[int, list[str]] = {}

    def constant(self, members, member_of: np.ndarray, plan_lrs: np.ndarray, which: np.ndarray) -> None:
        """Plans without a scheduler: the member's settings, the lr of the cell's groups, every step.
        ``plan_lrs`` [P, G]: each plan's group lrs."""
        picked = np.flatnonzero(which)
        if not picked.size:
            return
        for name in self.values:
            if name == "lr":
                rows = plan_lrs[picked]
            else:
                table = np.array(
                    [
                        [_entry(g, name) for g in m.groups] if m is not None else [np.nan] * self.groups
                        for m in members
                    ],
                    dtype=np.float64,
                )  # [members, G]
                rows = table[member_of[picked]]
            self.values[name][0][:, picked] = rows.T

    def scheduled(self, p: int, values: dict[str, np.ndarray], messages: list[str]) -> None:
        """One plan's values from a stepped scheduler: varying entries [T, G], fixed ones [G]."""
        for name, table in values.items():
            if table.shape[0] > 1 and self.values[name].shape[0] == 1:
                self.values[name] = np.repeat(self.values[name], self.steps, axis=0)  # now per step
            self.values[name][:, :, p] = table
        self.messages[p] = messages


@functools.lru_cache(maxsize=256)
def _is_none(scheduler: str) -> bool:
    spec = parse_spec(scheduler, what="scheduler")
    return spec.name == "none" and not spec.kw  # engine: no scheduler object, constant settings


def _buckets(field_of_plan: list[np.ndarray], scheduled: np.ndarray) -> list[list[int]]:
    """The plans with a scheduler, by (optimizer spec, scheduler, lr): each bucket shares one scheduler."""
    opt_of, sched_of, lr_of, _ = field_of_plan
    buckets: dict[tuple, list[int]] = {}
    for p in scheduled.tolist():
        buckets.setdefault((opt_of[p], sched_of[p], lr_of[p]), []).append(p)
    return list(buckets.values())


def _schedules(key: tuple, groups: list[list[dict]], rule: Rule, steps: int) -> list:
    """Per plan of a bucket (its groups' settings): (values, warnings) from one shared scheduler, else one
    scheduler per plan (e.g. per-group list arguments refuse the shared optimizer); None where it cannot
    be built. ``key``: the bucket's first plan (optimizer spec, scheduler, lr, momentum)."""
    shared = _schedule(*key, steps, rule, groups)
    if shared is not None or len(groups) == 1:
        return shared or [None]
    return [(_schedule(*key, steps, rule, [g]) or [None])[0] for g in groups]


def _groups(member: Member, group_lrs: list[float]) -> list[dict]:
    """The member's param group settings with the plan's group lrs."""
    return [{**g, "lr": lr} for g, lr in zip(member.groups, group_lrs, strict=True)]


def _schedule(optimizer: str, scheduler: str, lr: float, momentum, steps: int, rule: Rule, members):
    """Step one real scheduler over all members' groups; per member ({entry: [T, G] or [1, G]}, warnings),
    or None if it cannot be built, needs the loss, or moves an entry the rule treats as fixed."""
    fixed = [name for name in rule.reads if name not in rule.flags and name not in rule.varying]
    varying = [name for name in rule.reads if name not in rule.flags and name in rule.varying]
    groups = [g for member in members for g in member]
    rows = np.empty((steps, len(varying), len(groups)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            real, _ = build_optimizer(optimizer, _stand_ins(groups), lr, momentum)
            handle = build_scheduler(scheduler, real, steps, lr)
            if handle.needs_metric:
                return None
            if getattr(handle.impl, "cycle_momentum", False):  # the same note as engine._run
                warnings.warn(
                    f"scheduler {scheduler!r} cycles the optimizer's momentum (cycle_momentum=True), "
                    "overriding --momentum; pass cycle_momentum=False to keep the optimizer's own",
                    UserWarning,
                    stacklevel=1,
                )
            first = [[_entry(g, name) for g in real.param_groups] for name in fixed]
            real.step()  # no gradients: changes nothing, marks the optimizer stepped (as the reference)
            for t in range(steps):
                rows[t] = [[_entry(g, name) for g in real.param_groups] for name in varying]
                handle.step(None)
            if [[_entry(g, name) for g in real.param_groups] for name in fixed] != first:
                return None  # a scheduler moved a setting the rule treats as fixed
        except Exception:  # noqa: BLE001 - whatever breaks here, the reference engine records it
            return None
    messages = _messages(caught)
    fixed_values = np.array(first, dtype=np.float64).reshape(len(fixed), len(groups))
    out, start = [], 0
    for member in members:
        end = start + len(member)
        values = {name: rows[:, j, start:end] for j, name in enumerate(varying)}
        values.update({name: fixed_values[j, start:end][None, :] for j, name in enumerate(fixed)})
        out.append((values, messages))
        start = end
    return out


def _member(optimizer: str, lr: float, momentum, rule: Rule, group_lrs: list[float]) -> Member | None:
    """Build the cell's optimizer as engine.run does; None if it fails or leaves the proven subset."""
    groups = _stand_ins([{"lr": g} for g in group_lrs])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            real, knob = build_optimizer(optimizer, groups, lr, momentum)
        except Exception:  # noqa: BLE001 - the reference engine records why
            return None
    if type(real) is not rule.torch_class or any(rule.unsupported(g) for g in real.param_groups):
        return None
    if len(real.param_groups) != len(group_lrs):
        return None
    settings = [{k: v for k, v in g.items() if k != "params"} for g in real.param_groups]
    numeric = [name for name in rule.reads if name not in rule.flags]
    if not all(isinstance(_entry(g, name), (int, float)) for g in settings for name in numeric):
        return None  # e.g. a tensor lr: the reference engine runs it as given
    return Member(settings, knob, _messages(caught))


def _stand_ins(groups: list[dict]) -> list[dict]:
    """The groups with one stand-in parameter each, on the CPU whatever the batch's device: the optimizer
    and scheduler that step them ahead of the run only yield Python floats (torch's schedulers read no
    params)."""
    return [{**g, "params": [torch.zeros(1, requires_grad=True, device="cpu")]} for g in groups]


def _entry(group: dict, name: str):
    if name in ("beta1", "beta2"):
        return group["betas"][0 if name == "beta1" else 1]
    return group[name]


def _messages(caught) -> list[str]:
    return list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))


@functools.cache
def init_defaults(cls: type) -> dict:
    """Constructor arguments of an optimizer class and their defaults (``inspect`` is slow per cell)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "params")}
