"""What can be run: one tiny ``Registry`` type and one instance per concept (problems, optimizers,
schedulers, inits, losses), plus activations, precisions and the validation of a run's config against
them. The registry modules import torch: the CLI loads them lazily, through ``by_kind``.
"""

from __future__ import annotations

from optbench.errors import OptbenchError
from optbench.registry.base import Entry, Registry

__all__ = ["Entry", "Registry", "by_kind"]


def by_kind(kind: str) -> Registry:
    """The registry of ``kind`` (``problems``, ``optimizers``, ``schedulers``, ``inits``, ``losses``)."""
    if kind == "problems":
        from optbench.registry.problems import problems

        return problems
    if kind == "optimizers":
        from optbench.registry.optimizers import optimizers

        return optimizers
    if kind == "schedulers":
        from optbench.registry.schedulers import schedulers

        return schedulers
    if kind == "inits":
        from optbench.registry.inits import inits

        return inits
    if kind == "losses":
        from optbench.registry.losses import losses

        return losses
    raise OptbenchError(f"unknown registry {kind!r}")
