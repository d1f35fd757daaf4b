"""A user's problem factory as a registry entry: called the way optbench calls every problem factory.

The user writes ``factory(**spec_keywords)`` returning a ``ModelProblem`` (``registry.modelproblem``);
``UserFactory`` wraps it into optbench's factory shape, ``(device, *, init, loss, seed, steps,
batch_size, **spec_keywords) -> Problem``: it calls the user's factory with the spec's keywords (and any of
``device, seed, steps, batch_size`` it declares), then asks what it returned to build itself for the run
(``Problem.for_run``). Its signature is the user's (plus optbench's context), so a misspelled keyword is
caught before a run, as for the built-ins. Entries come from ``optbench.register_problem`` or, for an import
path ``pkg.mod:factory``, from ``imported_entry`` (through the opt-in of ``registry.imports``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from optbench.errors import OptbenchError
from optbench.registry.base import Entry
from optbench.registry.imports import allowed_packages, import_object

CUSTOM_LOSS = "custom"  # the loss column of a user's problem run with its own loss_fn
CONTEXT = ("device", "seed", "steps", "batch_size")  # what a user's factory may declare to be given
_BUILT_IN = ("device", "init", "loss", "seed", "steps", "batch_size")  # what optbench passes every factory


class UserFactory:
    """The user's ``factory`` in optbench's factory shape (module docstring)."""

    def __init__(self, factory, name: str):
        self.factory, self.name = factory, name
        self.declared = _declared(factory)
        own = [p for p in _parameters(factory) if p.name not in _BUILT_IN]
        context = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in _BUILT_IN[1:]]
        first = inspect.Parameter("device", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.kind is not p.VAR_KEYWORD]
        self.__signature__ = inspect.Signature(
            [first, *context, *keyword, *(p for p in own if p.kind is p.VAR_KEYWORD)]
        )

    def __call__(self, device, *, init, loss, seed, steps, batch_size=None, **options):
        context = {"device": device, "seed": seed, "steps": steps, "batch_size": batch_size}
        made = self.factory(**options, **{k: v for k, v in context.items() if k in self.declared})
        for_run = getattr(made, "for_run", None)
        if for_run is None:
            raise OptbenchError(
                f"problem {self.name!r}: the factory returned {type(made).__name__}, not a ModelProblem"
            )
        return for_run(
            self.name, init=init, loss=loss, device=device, seed=seed, steps=steps, batch_size=batch_size
        )

    def __reduce__(self):  # a grid's workers get the user's factory (pickled by reference) and wrap it again
        return UserFactory, (self.factory, self.name)


def _parameters(factory) -> list[inspect.Parameter]:
    try:
        return [p for p in inspect.signature(factory).parameters.values() if p.kind is not p.VAR_POSITIONAL]
    except (TypeError, ValueError):  # no signature (a builtin): the call itself says what is wrong
        return [inspect.Parameter("options", inspect.Parameter.VAR_KEYWORD)]


def _declared(factory) -> set[str]:
    """Context keywords ``factory`` declares by name (never passed through **kwargs)."""
    return {p.name for p in _parameters(factory) if p.name in CONTEXT and p.kind is not p.VAR_KEYWORD}


def user_entry(name: str, factory, summary: str | None = None) -> Entry:
    """A registry entry for a user's factory: its own loss, never a toy, run on the reference engine."""
    if not callable(factory):
        raise OptbenchError(f"problem {name!r}: the factory must be callable")
    summary = summary or _summary(factory)
    return Entry(name, summary, UserFactory(factory, name), {"default_loss": CUSTOM_LOSS, "user": True})


def _summary(factory) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else "user problem"


def imported_entry(path: str) -> Entry:
    """The entry of a problem named by import path (its package must be allowed: ``registry.imports``)."""
    return _imported_entry(path, allowed_packages())


@functools.lru_cache(maxsize=256)
def _imported_entry(path: str, allowed: frozenset[str]) -> Entry:
    factory: Any = import_object(path, "problem")
    if not callable(factory):
        raise OptbenchError(f"problem {path!r} is not callable (a factory that returns a ModelProblem)")
    return user_entry(path, factory)
