"""Validate a RunConfig at the boundary and put every spec string into canonical form.

Unknown names, malformed specs, refused imports, impossible values and runs too large for the machine are
user errors (OptbenchError: the CLI prints one line, exit 2). ``check_buildable`` builds each distinct
spec of a command once on a stand-in (``standins``) and refuses a value that no cell could accept.
Combinations that are valid in general but cannot run together (SparseAdam on dense weights, an init on a
toy function) are left to the engine, which records them as ``invalid`` cells.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence

from optbench.errors import OptbenchError
from optbench.spec import PRECISIONS, RunConfig, parse_spec


def is_lr(lr: object) -> bool:
    """The one lr rule: a number (not a bool), > 0 and finite."""
    return not isinstance(lr, bool) and isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)


def check_lr(lr: object, name: str = "lr") -> float:
    """``is_lr`` or one error line (``name`` is how the user gave it: ``--lr``, ``--min``)."""
    if not is_lr(lr):
        raise OptbenchError(f"{name} must be a positive learning rate, got {lr}")
    return float(lr)


def check_device(device: str) -> str:
    """``auto`` -> cuda if available else cpu; ``cuda``/``cuda:N`` must exist."""
    from optbench.registry.precision import resolve_device

    return resolve_device(device)


SCALER_OPTIONS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval")


def canonical_precision(text: str) -> str:
    """``fp32``, ``fp16`` (autocast + GradScaler) or ``bf16`` (autocast); ``fp16(scaler=False)`` and
    ``bf16(scaler=True)`` are accepted so that such cells can be recorded (the latter as invalid);
    GradScaler options pass through: ``fp16(init_scale=1024.0, growth_interval=100)``."""
    spec = parse_spec(text, what="precision")
    if spec.name not in PRECISIONS:
        raise OptbenchError(f"unknown precision {spec.name!r}; valid: {', '.join(PRECISIONS)}")
    unknown = set(spec.kw) - {"scaler", *SCALER_OPTIONS}
    if unknown or not isinstance(spec.kw.get("scaler", True), bool):
        raise OptbenchError(f"precision {text!r}: options are scaler=True/False, {', '.join(SCALER_OPTIONS)}")
    for key in SCALER_OPTIONS:
        if key in spec.kw and not _scaler_value_ok(key, spec.kw[key]):
            what = "a whole number >= 1" if key == "growth_interval" else "a positive finite number"
            raise OptbenchError(f"precision {text!r}: {key} must be {what}, got {spec.kw[key]!r}")
    return spec.canonical()


def _scaler_value_ok(key: str, value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if key == "growth_interval":
        return isinstance(value, int) and value >= 1
    return value > 0 and math.isfinite(value)


def _accepted_arguments(fn, skip) -> set[str] | None:
    """Keyword names ``fn`` accepts (None: it takes **kwargs, so any name may be fine)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params) - set(skip)


def _check_names(what: str, spec, accepted: set[str] | None) -> None:
    unknown = sorted(set(spec.kw) - accepted) if accepted is not None else []
    if unknown:
        raise OptbenchError(
            f"{what} {spec.name!r} has no argument {unknown[0]!r}; valid: {', '.join(sorted(accepted))}"
        )


@functools.cache
def check_problem_arguments(problem: str) -> None:
    """Option names (and a toy's values) of a problem spec: a typo is a user error, not an invalid cell."""
    from optbench.registry import activations
    from optbench.registry.problems import build_problem, is_toy, problem_entry

    parsed = parse_spec(problem, what="problem")
    if is_toy(problem):
        build_problem(problem, device="cpu")  # a toy builds in microseconds and checks its own options
        return
    factory = problem_entry(parsed.name).factory
    _check_names(
        "problem",
        parsed,
        _accepted_arguments(factory, ("device", "init", "loss", "seed", "steps", "batch_size")),
    )
    if "activation" in parsed.kw:
        activations.check_activation(parsed.kw["activation"])


@functools.cache
def check_optimizer_arguments(optimizer: str) -> None:
    from optbench.registry.optimizers import resolve_optimizer_class

    parsed = parse_spec(optimizer, what="optimizer")
    if "lr" in parsed.kw:
        raise OptbenchError(f"optimizer {optimizer!r}: give the learning rate with --lr, not in the spec")
    cls = resolve_optimizer_class(parsed.name)
    _check_names("optimizer", parsed, _accepted_arguments(cls.__init__, ("self", "params")))


@functools.cache
def check_scheduler_arguments(scheduler: str) -> None:
    from optbench.registry.schedulers import schedulers, warmup_cosine

    parsed = parse_spec(scheduler, what="scheduler")
    if parsed.is_import_path:
        return
    entry = schedulers.get(parsed.name)
    if entry.meta["kind"] == "none":
        if parsed.kw:
            raise OptbenchError("scheduler 'none' takes no arguments")
        return
    fn = entry.factory if entry.factory is warmup_cosine else entry.factory.__init__
    _check_names("scheduler", parsed, _accepted_arguments(fn, ("self", "optimizer", "steps")))


def canonical_config(config: RunConfig) -> RunConfig:
    """The same config with canonical spec strings, the loss resolved, the device checked and the run's
    size checked against memory (``limits``). Import paths resolve only in allowed packages."""
    from optbench.registry.imports import allowed_packages
    from optbench.registry.limits import check_run_size

    check_lr(config.lr)
    if config.momentum is not None and not (0 <= config.momentum < 1 or config.momentum == 1):
        raise OptbenchError(f"momentum must be in [0, 1], got {config.momentum}")
    if config.steps < 1:
        raise OptbenchError(f"--steps must be >= 1, got {config.steps}")
    if not -(2**63) <= config.seed < 2**63:  # the runs table stores it as int64
        raise OptbenchError(f"seed must fit in 64 bits (-2**63..2**63-1), got {config.seed}")
    if config.batch_size is not None and config.batch_size < 1:
        raise OptbenchError(f"--batch-size must be >= 1, got {config.batch_size}")
    if not config.head_lr_scale > 0:
        raise OptbenchError(f"--head-lr-scale must be positive, got {config.head_lr_scale}")
    if config.freeze < 0:
        raise OptbenchError(f"--freeze must be >= 0, got {config.freeze}")
    problem, optimizer, scheduler, init, loss, device, precision = _canonical_strings(
        config.problem,
        config.optimizer,
        config.scheduler,
        config.init,
        config.loss,
        config.device,
        config.precision,
        allowed_packages(),
    )
    check_run_size(problem, config.batch_size, config.steps, device)
    if config.momentum is not None:
        knob = _momentum_argument(optimizer)
        if knob is not None:
            raise OptbenchError(
                f"momentum given twice: --momentum {config.momentum} and {knob} in {config.optimizer!r}"
            )
    return config.replace(
        problem=problem,
        optimizer=optimizer,
        scheduler=scheduler,
        init=init,
        loss=loss,
        device=device,
        precision=precision,
        lr=float(config.lr),
        momentum=None if config.momentum is None else float(config.momentum),
        sharpness_every=check_sharpness_every(config.sharpness_every),
    )


def check_sharpness_every(value: object) -> int:
    """A whole number >= 0 (0: sharpness is not measured); None (a folder written before the field) is 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptbenchError(f"--sharpness-every must be a whole number >= 0 (0: off), got {value!r}")
    return value


# (field, canonical spec) -> the text the user typed for it, last seen: what error messages quote.
_TYPED: dict[tuple[str, str], str] = {}


def _remember_typed(field: str, canonical: str, text: str) -> str:
    if text.strip() != canonical:  # a canonical string canonicalised again keeps what the user typed
        if len(_TYPED) > 4096:
            _TYPED.clear()
        _TYPED[(field, canonical)] = text
    return canonical


# A grid repeats the same few spec strings in thousands of cells: parse and check each string once (per set
# of allowed packages: what an import path resolves to depends on it).
@functools.lru_cache(maxsize=4096)
def _canonical_strings(
    problem: str,
    optimizer: str,
    scheduler: str,
    init: str,
    loss: str,
    device: str,
    precision: str,
    allowed: frozenset[str],
) -> tuple[str, ...]:
    from optbench.registry.inits import canonical_init
    from optbench.registry.losses import canonical_loss
    from optbench.registry.optimizers import canonical_optimizer
    from optbench.registry.problems import canonical_problem, default_loss
    from optbench.registry.schedulers import canonical_scheduler

    problem = _remember_typed("problem", canonical_problem(problem), problem)
    if loss in ("auto", default_loss(problem)):  # a user problem's own loss is "custom", no registry name
        loss = default_loss(problem)
    elif loss != "none":
        loss = _remember_typed("loss", canonical_loss(loss), loss)
    check_problem_arguments(problem)
    check_optimizer_arguments(optimizer)  # the user's own text, so that errors quote what they typed
    check_scheduler_arguments(scheduler)
    return (
        problem,
        _remember_typed("optimizer", canonical_optimizer(optimizer), optimizer),
        _remember_typed("scheduler", canonical_scheduler(scheduler), scheduler),
        _remember_typed("init", canonical_init(init), init),
        loss,
        check_device(device),
        canonical_precision(precision),
    )


@functools.lru_cache(maxsize=1024)
def _momentum_argument(optimizer: str) -> str | None:
    """The optimizer spec's own momentum argument (``momentum`` or ``betas``), if it sets one."""
    kwargs = parse_spec(optimizer, what="optimizer").kw
    return next((knob for knob in ("momentum", "betas") if knob in kwargs), None)


# ------------------------------------------------------------------------------------------ stand-in builds

Typed = Mapping[tuple[str, str], str]  # (field, canonical spec) -> the text the user typed


def check_buildable(configs: Sequence[RunConfig], typed: Typed | None = None) -> None:
    """Build every distinct problem/init/loss, optimizer and scheduler of ``configs`` once on a stand-in
    (``optbench.registry.standins``) and raise OptbenchError, quoting the user's text, for a value that is
    refused in every context the configs give it. Values refused only in some cells stay cell statuses.

    Cost: one small build per distinct value when all is well (cached across calls).
    """
    from optbench.registry import standins

    typed = typed or {}
    distinct = list(dict.fromkeys((c.problem, c.init, c.loss, c.batch_size) for c in configs))
    _refuse(distinct, ("problem", "init", "loss"), standins.problem_verdict, typed)
    contexts = list(dict.fromkeys((c.optimizer, c.lr, c.momentum, c.device) for c in configs))
    _refuse(contexts, ("optimizer",), standins.optimizer_verdict, typed)
    sgd = dict.fromkeys((c.scheduler, None, c.lr, None, c.steps, c.device) for c in configs)
    own = dict.fromkeys((c.scheduler, c.optimizer, c.lr, c.momentum, c.steps, c.device) for c in configs)
    _refuse([*sgd, *own], ("scheduler",), standins.scheduler_verdict, typed)


_TRIED = {
    "problem": "with every init, loss and batch size given",
    "init": "with every problem given",
    "loss": "with every problem given",
    "optimizer": "on a stand-in parameter with every lr and momentum given",
    "scheduler": "on a stand-in optimizer with every lr and step count given",
}


def _refuse(
    contexts: list[tuple], fields: tuple[str, ...], verdict: Callable[..., object], typed: Typed
) -> None:
    """``contexts``: distinct argument tuples of ``verdict`` whose first ``len(fields)`` items are the values
    under test; ``verdict`` returns one verdict for them all or a dict of one per field. A value is accepted
    by one accepting context; it is refused if every context that tests it refused it. Contexts whose
    values are all accepted already are not built."""
    from optbench.registry.standins import SKIP

    accepted: set[tuple[str, str]] = set()
    refused: dict[tuple[str, str], str] = {}
    for context in contexts:
        values = dict(zip(fields, context, strict=False))
        if all((field, value) in accepted for field, value in values.items()):
            continue
        verdicts = verdict(*context)
        if not isinstance(verdicts, dict):
            verdicts = dict.fromkeys(fields, verdicts)
        for field, why in verdicts.items():
            if why is None:
                accepted.add((field, values[field]))
            elif why is not SKIP:
                refused.setdefault((field, values[field]), why)
    for (field, value), why in refused.items():
        if (field, value) not in accepted:
            text = typed.get((field, value)) or _TYPED.get((field, value), value)
            raise OptbenchError(
                f"{field} {text!r} cannot be built: {why} (tried {_TRIED[field]}; nothing was run)"
            )
