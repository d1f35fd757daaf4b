"""Optimizers: every ``torch.optim`` class under its lowercase name, a custom ``sgd-l1l2``, and any user
class by import path ``package.module:Class`` (checked to be a ``torch.optim.Optimizer`` subclass), imported
only from a package the user allowed (``optbench.registry.imports``).

``--momentum`` maps onto each optimizer's own knob: ``momentum`` where it has one (SGD, RMSprop, Muon),
``betas[0]`` for the Adam family. An optimizer without such a knob accepts only momentum 0.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping

import torch
from torch.optim import Optimizer

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.base import Registry
from optbench.registry.imports import import_object
from optbench.spec import Spec, parse_spec

optimizers = Registry("optimizer")


class SGDL1L2(Optimizer):
    """SGD with separate L1 and L2 weight decay, the variant users write themselves.

    Per parameter w with gradient g: ``g += l1·sign(w) + l2·w``, then PyTorch SGD's heavy ball:
    ``buf = g`` on the first step, ``buf = momentum·buf + g`` after, and ``w -= lr·buf``.
    With l1 = l2 = 0 it equals ``torch.optim.SGD(lr, momentum)`` step for step.

    Args:
        lr: learning rate (default 1e-3). momentum: heavy-ball factor (default 0).
        l1: L1 decay λ1 (default 0). l2: L2 decay λ2 (default 0).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, l1: float = 0.0, l2: float = 0.0):
        for name, value in (("learning rate", lr), ("momentum value", momentum), ("l1", l1), ("l2", l2)):
            if value < 0:
                raise ValueError(f"Invalid {name}: {value}")
        super().__init__(params, dict(lr=lr, momentum=momentum, l1=l1, l2=l2))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["l1"]:
                    g = g.add(torch.sign(p), alpha=group["l1"])
                if group["l2"]:
                    g = g.add(p, alpha=group["l2"])
                if group["momentum"]:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                    g = state["momentum_buffer"]
                p.add_(g, alpha=-group["lr"])
        return loss


def _summary(cls) -> str:
    doc = inspect.getdoc(cls) or cls.__name__
    return doc.strip().splitlines()[0].rstrip(".")


@functools.cache
def _init_parameters(cls) -> Mapping[str, inspect.Parameter]:
    """The constructor's parameters (``inspect.signature`` costs ~60 µs; an optimizer is built per run)."""
    return inspect.signature(cls.__init__).parameters


def momentum_knob(cls) -> str | None:
    """Which constructor argument --momentum sets: "momentum", "betas[0]" or None."""
    params = _init_parameters(cls)
    if "momentum" in params:
        return "momentum"
    if "betas" in params:
        return "betas[0]"
    return None


def _torch_optimizer_classes() -> dict[str, type]:
    return {
        name: cls
        for name, cls in vars(torch.optim).items()
        if inspect.isclass(cls) and issubclass(cls, Optimizer) and cls is not Optimizer
    }


for _name, _cls in sorted(_torch_optimizer_classes().items()):
    optimizers.add(
        _name.lower(), _cls, f"torch.optim.{_name}: {_summary(_cls)}", needs_closure=_name == "LBFGS"
    )
optimizers.add(
    "sgd-l1l2", SGDL1L2, "custom SGD with separate L1 (sign) and L2 weight decay", needs_closure=False
)


def resolve_optimizer_class(name: str) -> type:
    """Registry name or import path ``package.module:Class`` of an allowed package; the class must subclass
    Optimizer."""
    if ":" not in name:
        return optimizers.get(name).factory
    cls = import_object(name, "optimizer")
    if not (inspect.isclass(cls) and issubclass(cls, Optimizer)):
        raise OptbenchError(f"{name!r} is not a torch.optim.Optimizer subclass")
    return cls


def canonical_optimizer(text: str) -> str:
    spec = parse_spec(text, what="optimizer")
    name = spec.name if spec.is_import_path else optimizers.canonical_name(spec.name)
    resolve_optimizer_class(name)
    return Spec(name, spec.kwargs).canonical()


def needs_closure(optimizer: str) -> bool:
    spec = parse_spec(optimizer, what="optimizer")
    return not spec.is_import_path and optimizers.get(spec.name).meta["needs_closure"]


def check_applicable(cls: type, name: str, groups: list[dict]) -> None:
    """NotApplicable where the optimizer cannot take these parameters at all (SparseAdam, Muon on 1-D)."""
    params = [p for g in groups for p in g["params"]]
    if cls is torch.optim.SparseAdam:
        raise NotApplicable(
            f"optimizer {name!r} needs sparse gradients (nn.Embedding(sparse=True)); "
            "not applicable to this problem's dense parameters"
        )
    if cls.__name__ == "Muon" and any(p.dim() != 2 for p in params):
        raise NotApplicable(
            f"optimizer {name!r} only optimizes 2-D weight matrices; not applicable to this "
            "problem's 1-D parameters (toy point or biases)"
        )


def optimizer_arguments(optimizer: str, momentum: float | None) -> tuple[type, dict, str | None]:
    """(class, constructor keyword arguments without lr, which knob --momentum sets) for a spec.

    NotApplicable where --momentum is given (non-zero) to an optimizer without a momentum knob.
    """
    spec = parse_spec(optimizer, what="optimizer")
    cls = resolve_optimizer_class(spec.name)
    kwargs = spec.kw
    knob = momentum_knob(cls)
    if momentum is not None:
        if knob == "momentum":
            if "momentum" in kwargs:
                raise OptbenchError(f"momentum given twice: --momentum {momentum} and in {optimizer!r}")
            kwargs["momentum"] = momentum
        elif knob == "betas[0]":
            if "betas" in kwargs:
                raise OptbenchError(f"momentum given twice: --momentum {momentum} and betas in {optimizer!r}")
            default_betas = _init_parameters(cls)["betas"].default
            beta2 = kwargs.get("betas", default_betas)[1]
            kwargs["betas"] = (momentum, beta2)
        elif momentum != 0:
            raise NotApplicable(f"optimizer {spec.name!r} has no momentum knob (momentum={momentum})")
    return cls, kwargs, knob


def build_optimizer(
    optimizer: str, groups: list[dict], lr: float, momentum: float | None
) -> tuple[Optimizer, str | None]:
    """The real optimizer over ``groups``; returns (optimizer, which knob --momentum set)."""
    cls, kwargs, knob = optimizer_arguments(optimizer, momentum)
    check_applicable(cls, parse_spec(optimizer, what="optimizer").name, groups)
    try:
        return cls(groups, lr=lr, **kwargs), (knob if momentum is not None else None)
    except (ValueError, TypeError) as err:
        raise NotApplicable(f"optimizer {parse_spec(optimizer).canonical()!r}: {err}") from None
