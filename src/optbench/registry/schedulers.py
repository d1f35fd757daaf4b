"""LR schedulers: ``none``, every ``torch.optim.lr_scheduler`` class under its lowercase name, custom
``step-halving`` and ``warmup-cosine``, and any user class by import path ``package.module:Class``.

Arguments the user does not give are derived from the run length ``steps`` and base ``lr`` (see
``derived_defaults``), e.g. ``cosineannealinglr`` gets ``T_max = steps``, ``onecyclelr`` gets
``max_lr = lr, total_steps = steps``. Scheduler arguments that are callables or schedulers can be given
as strings: ``lambdalr(lr_lambda='mypkg.sched:warmup')``,
``sequentiallr(schedulers=['linearlr(total_iters=10)', 'cosineannealinglr(T_max=90)'], milestones=[10])``.
Import paths (a scheduler class, ``lr_lambda``, ``scale_fn``) resolve only in a package the user allowed
(``optbench.registry.imports``), never in the standard library: ``lr_lambda='os:_exit'`` is refused.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch.optim import lr_scheduler as torch_schedulers

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.base import Registry
from optbench.registry.imports import import_callable, import_object
from optbench.spec import Spec, parse_spec

schedulers = Registry("scheduler")

# torch scheduler arguments that take functions: given in a spec as import paths, e.g. 'mypkg.sched:warmup'
# (lr_lambda may also be a list of them, one per param group).
CALLABLE_ARGUMENTS = ("lr_lambda", "scale_fn")

ALIASES = {
    "StepLR": ["step"],
    "CosineAnnealingLR": ["cosine"],
    "OneCycleLR": ["onecycle"],
    "ReduceLROnPlateau": ["plateau"],
    "ExponentialLR": ["exponential"],
    "CyclicLR": ["cyclic"],
}


class StepHalving:
    """Hand-written scheduler: halve every group's lr every ``every`` steps by writing ``param_groups``.

    This is the pattern users write themselves; it gives the same staircase as
    ``StepLR(step_size=every, gamma=factor)``: lr_t = lr·0.5^floor(t / every). Default every = 10.
    """

    def __init__(self, optimizer, every: int = 10, factor: float = 0.5):
        if every < 1:
            raise ValueError(f"Invalid every: {every}")
        self.optimizer, self.every, self.factor, self.steps_done = optimizer, every, factor, 0

    def step(self) -> None:
        self.steps_done += 1
        if self.steps_done % self.every == 0:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.factor

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


def warmup_cosine(
    optimizer, steps: int, warmup: int | None = None, start_factor: float = 0.1, eta_min: float = 0.0
):
    """Linear warm-up from ``start_factor``·lr over ``warmup`` steps (default steps // 10), then cosine
    annealing to ``eta_min`` over the rest: ``SequentialLR([LinearLR, CosineAnnealingLR])``."""
    warmup = max(1, steps // 10) if warmup is None else warmup
    return torch_schedulers.SequentialLR(
        optimizer,
        [
            torch_schedulers.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup),
            torch_schedulers.CosineAnnealingLR(optimizer, T_max=max(1, steps - warmup), eta_min=eta_min),
        ],
        milestones=[warmup],
    )


def _decay_to_one_percent(steps: int) -> float:
    return 0.01 ** (1 / max(1, steps))


def derived_defaults(class_name: str, steps: int, lr: float) -> dict[str, Any]:
    """Arguments derived from the run length for each torch scheduler (only where the user gave none)."""
    quarter = max(1, steps // 4)
    return {
        "StepLR": {"step_size": quarter},  # gamma: torch's 0.1
        "MultiStepLR": {"milestones": [max(1, steps // 2), max(1, 3 * steps // 4)]},
        "ConstantLR": {"total_iters": quarter},
        "LinearLR": {"total_iters": steps},
        "PolynomialLR": {"total_iters": steps},
        "ExponentialLR": {"gamma": _decay_to_one_percent(steps)},  # lr falls to 1% at the end
        "CosineAnnealingLR": {"T_max": steps},
        "CosineAnnealingWarmRestarts": {"T_0": quarter},
        "CyclicLR": {"base_lr": lr / 10, "max_lr": lr, "step_size_up": quarter},
        "OneCycleLR": {"max_lr": lr, "total_steps": steps},
        "LambdaLR": {"lr_lambda": lambda t: max(0.0, 1 - t / max(1, steps))},  # linear decay to 0
        "MultiplicativeLR": {"lr_lambda": lambda t: _decay_to_one_percent(steps)},
        "SequentialLR": {
            "schedulers": [
                f"linearlr(start_factor=0.1, total_iters={max(1, steps // 10)})",
                f"cosineannealinglr(T_max={max(1, steps - max(1, steps // 10))})",
            ],
            "milestones": [max(1, steps // 10)],
        },
        "ChainedScheduler": {
            "schedulers": [f"constantlr(factor=0.5, total_iters={max(1, steps // 10)})", "exponentiallr"]
        },
    }.get(class_name, {})


_DERIVED_NOTES = {
    "StepLR": "step_size=steps//4",
    "MultiStepLR": "milestones=[steps/2, 3steps/4]",
    "ConstantLR": "total_iters=steps//4",
    "LinearLR": "total_iters=steps",
    "PolynomialLR": "total_iters=steps",
    "ExponentialLR": "gamma=0.01^(1/steps)",
    "CosineAnnealingLR": "T_max=steps",
    "CosineAnnealingWarmRestarts": "T_0=steps//4",
    "CyclicLR": "base_lr=lr/10, max_lr=lr, step_size_up=steps//4",
    "OneCycleLR": "max_lr=lr, total_steps=steps",
    "LambdaLR": "lr_lambda=1-t/steps",
    "MultiplicativeLR": "lr_lambda=0.01^(1/steps)",
    "SequentialLR": "linear warm-up steps//10, then cosine",
    "ChainedScheduler": "ConstantLR(0.5, steps//10) + ExponentialLR",
}


def _torch_scheduler_classes() -> dict[str, type]:
    classes = {}
    for name, cls in vars(torch_schedulers).items():
        if not inspect.isclass(cls) or name.startswith("_") or name == "LRScheduler":
            continue
        if issubclass(cls, torch_schedulers.LRScheduler) or name == "ReduceLROnPlateau":
            classes[name] = cls
    return classes


def _summary(cls) -> str:
    doc = (inspect.getdoc(cls) or cls.__name__).strip().splitlines()[0].rstrip(".")
    return doc.replace("`", "")


schedulers.add("none", None, "constant lr (no scheduler)", kind="none")
for _name, _cls in sorted(_torch_scheduler_classes().items()):
    note = f" [defaults: {_DERIVED_NOTES[_name]}]" if _name in _DERIVED_NOTES else ""
    schedulers.add(
        _name.lower(),
        _cls,
        f"torch {_name}: {_summary(_cls)}{note}",
        aliases=ALIASES.get(_name, ()),
        kind="torch",
        class_name=_name,
    )
schedulers.add(
    "step-halving",
    StepHalving,
    "custom: halves lr every N steps by editing param_groups (every=10)",
    kind="custom",
)
schedulers.add(
    "warmup-cosine",
    warmup_cosine,
    "custom: SequentialLR of LinearLR warm-up (steps//10) and cosine",
    kind="custom",
)


# ------------------------------------------------------------------------------------------------- building


class Scheduler:
    """Uniform handle over torch, custom and user schedulers: ``step(loss)`` after ``optimizer.step()``.

    ReduceLROnPlateau is fed the step's training loss (a host sync, only for that scheduler).
    """

    def __init__(self, impl, needs_metric: bool):
        self.impl, self.needs_metric = impl, needs_metric

    def step(self, loss) -> None:
        if self.impl is None:
            return
        if self.needs_metric:
            self.impl.step(float(loss))
        else:
            self.impl.step()


def _callable_value(name: str, value):
    """A spec's function-valued argument: an import path, or a list of them, resolved to functions."""
    if isinstance(value, (list, tuple)):
        return [import_callable(v, name) for v in value]
    return import_callable(value, name)


def _user_scheduler_class(path: str):
    cls = import_object(path, "scheduler")
    if not callable(getattr(cls, "step", None)):
        raise OptbenchError(f"{path!r} is not a scheduler (it has no step method)")
    return cls


def canonical_scheduler(text: str) -> str:
    """The canonical spec; import paths in it (the class, function values, nested specs) are resolved
    here, so a refused or missing one stops the command before anything runs."""
    spec = parse_spec(text, what="scheduler")
    if spec.is_import_path:
        _user_scheduler_class(spec.name)
        return spec.canonical()
    name = schedulers.canonical_name(spec.name)
    for key, value in spec.kwargs:
        if key in CALLABLE_ARGUMENTS and schedulers.get(name).meta["kind"] == "torch":
            _callable_value(key, value)
        if key == "schedulers" and isinstance(value, (list, tuple)):
            for nested in value:
                if isinstance(nested, str):
                    canonical_scheduler(nested)
    return Spec(name, spec.kwargs).canonical()


def _torch_kwargs(cls, spec: Spec, optimizer, steps: int, lr: float) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    unknown = set(spec.kw) - set(params) - {"self", "optimizer"}
    if unknown:
        valid = ", ".join(p for p in params if p not in ("self", "optimizer", "verbose", "last_epoch"))
        raise OptbenchError(f"scheduler {spec.name!r} has no argument {sorted(unknown)[0]!r}; valid: {valid}")
    kwargs = {k: v for k, v in derived_defaults(cls.__name__, steps, lr).items() if k in params}
    kwargs.update(spec.kw)
    for key in CALLABLE_ARGUMENTS:
        if key in spec.kw:
            kwargs[key] = _callable_value(key, spec.kw[key])
    if "schedulers" in kwargs:  # nested spec strings -> real scheduler objects on the same optimizer
        kwargs["schedulers"] = [
            build_scheduler(s, optimizer, steps, lr).impl if isinstance(s, str) else s
            for s in kwargs["schedulers"]
        ]
    return kwargs


def build_scheduler(scheduler: str, optimizer, steps: int, lr: float) -> Scheduler:
    """The real scheduler object for ``optimizer``, wrapped in a uniform ``Scheduler`` handle."""
    spec = parse_spec(scheduler, what="scheduler")
    if spec.is_import_path:
        impl = _user_scheduler_class(spec.name)(optimizer, **spec.kw)
        return Scheduler(impl, isinstance(impl, torch_schedulers.ReduceLROnPlateau))
    entry = schedulers.get(spec.name)
    kind = entry.meta["kind"]
    try:
        if kind == "none":
            if spec.kw:
                raise OptbenchError("scheduler 'none' takes no arguments")
            return Scheduler(None, False)
        if kind == "custom":
            factory = entry.factory
            if factory is warmup_cosine:
                return Scheduler(factory(optimizer, steps, **spec.kw), False)
            return Scheduler(factory(optimizer, **spec.kw), False)
        cls = entry.factory
        impl = cls(optimizer=optimizer, **_torch_kwargs(cls, spec, optimizer, steps, lr))
        return Scheduler(impl, cls is torch_schedulers.ReduceLROnPlateau)
    except (ValueError, TypeError) as err:
        if isinstance(err, OptbenchError):
            raise
        raise NotApplicable(f"scheduler {spec.canonical()!r}: {err}") from None
