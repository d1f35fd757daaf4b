"""One tiny Registry type; one instance per concept (problems, optimizers, schedulers, inits, losses).

The key is the one name used everywhere: CLI value, Parquet value, plot label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from optbench.errors import OptbenchError


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str  # one line for `bench list`
    factory: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    def __init__(self, kind: str, providers: tuple[str, ...] = ()):
        self.kind = kind  # singular noun used in messages: "optimizer", "scheduler", ...
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        # Modules that add entries to this registry when imported (registry/datasets.py adds problems):
        # imported when the registry is first read, so that they may import the module that holds it.
        self._providers = list(providers)

    def _provide(self) -> None:
        import importlib

        while self._providers:
            importlib.import_module(self._providers.pop(0))

    def add(
        self, name: str, factory: Callable[..., Any], summary: str, *, aliases=(), replace=False, **meta
    ) -> Entry:
        """Register ``name``; ``replace=True`` replaces an entry of that name (never an alias)."""
        if name in self._aliases or (name in self._entries and not replace):
            raise ValueError(f"{self.kind} {name!r} registered twice")
        entry = Entry(name, summary, factory, dict(meta))
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def register(self, name: str, summary: str, *, aliases=(), **meta):
        """Decorator form of ``add``."""

        def decorator(factory):
            self.add(name, factory, summary, aliases=aliases, **meta)
            return factory

        return decorator

    def canonical_name(self, name: str) -> str:
        """Resolve an alias (``cosine`` -> ``cosineannealinglr``); unknown names raise."""
        self._provide()
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise OptbenchError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")

    def get(self, name: str) -> Entry:
        return self._entries[self.canonical_name(name)]

    def names(self) -> list[str]:
        self._provide()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def aliases_of(self, name: str) -> list[str]:
        self._provide()
        return sorted(a for a, target in self._aliases.items() if target == name)

    def __contains__(self, name: str) -> bool:
        self._provide()
        return name in self._entries or name in self._aliases
