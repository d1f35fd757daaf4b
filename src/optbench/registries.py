"""All registries in one place (imports torch: load lazily from the CLI)."""

from __future__ import annotations

from optbench.errors import OptbenchError
from optbench.registry import Registry


def by_kind(kind: str) -> Registry:
    if kind == "problems":
        from optbench.problems import problems

        return problems
    if kind == "optimizers":
        from optbench.optimizers import optimizers

        return optimizers
    if kind == "schedulers":
        from optbench.schedulers import schedulers

        return schedulers
    if kind == "inits":
        from optbench.inits import inits

        return inits
    if kind == "losses":
        from optbench.losses import losses

        return losses
    raise OptbenchError(f"unknown registry {kind!r}")
