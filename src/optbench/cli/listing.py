"""`bench list KIND`: the registries, one line per entry."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from optbench.cli.common import fail

KINDS = ("problems", "optimizers", "schedulers", "inits", "losses", "activations")


_ROLE = re.compile(r":[a-z]+:`([^`]*)`")  # :math:`\text{val}`, :class:`~torch.Tensor`
_TEX = re.compile(r"\\(?:text|mathrm|mathbf)\{([^}]*)\}")


def plain(text: str) -> str:
    """A docstring line without its reST markup, for a terminal: ``:math:`\\text{val}``` -> ``val``,
    ``:class:`~torch.Tensor``` -> ``Tensor``, ```Tensor``` -> ``Tensor``."""

    def role(match) -> str:
        inner = _TEX.sub(r"\1", match.group(1))
        return inner.lstrip("~").rsplit(".", 1)[-1] if inner.startswith("~") else inner

    return _ROLE.sub(role, text).replace("``", "").replace("`", "")


def list_entries(
    kind: Annotated[str, typer.Argument(help="What to list: " + ", ".join(KINDS) + ".")],
) -> None:
    """List the registered entries of one kind: its CLI name and a one-line description."""
    if kind not in KINDS:
        fail(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "activations":
        from optbench.registry.activations import ACTIVATIONS

        for name, (cls_name, nonlinearity) in ACTIVATIONS.items():
            typer.echo(
                f"{name:<28} nn.{cls_name or 'Identity'} (init gain: calculate_gain({nonlinearity!r}))"
            )
        return
    from optbench import registry

    registry = registry.by_kind(kind)
    for entry in registry.entries():
        aliases = registry.aliases_of(entry.name)
        alias_text = f" (alias: {', '.join(aliases)})" if aliases else ""
        typer.echo(f"{entry.name:<28} {plain(entry.summary)}{alias_text}{_needs(entry)}")


def _needs(entry) -> str:
    """A data set problem without scikit-learn: what to install to run it."""
    if entry.meta.get("extra") != "datasets":
        return ""
    from optbench.registry.datasets import has_sklearn

    return "" if has_sklearn() else " [needs pip install 'optbench[datasets]']"


COMMANDS = {"list": list_entries}
