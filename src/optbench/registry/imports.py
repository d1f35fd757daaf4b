"""The one door from a spec's ``package.module:Name`` to a Python object, shut unless the user opens it.

A spec string or a grid file can come from anyone (a colleague's grid.toml, a command in a blog post),
and importing a module runs its top-level code. So optbench imports nothing named in a spec unless the
user allows that spec's top-level package on the command line or in the environment::

    bench grid --allow-imports mypkg --optimizer mypkg.optim:Lion     # the CLI
    OPTBENCH_ALLOW_IMPORTS=mypkg,otherpkg python train.py             # the Python API ...
    optbench.allow_imports("mypkg")                                   # ... or from Python

A grid file can never allow anything. The standard library and the interpreter's built-in modules are
never importable by spec (``os:_exit``, ``builtins:print``, ``this:X``), even when listed. With a package
allowed, resolving ``mypkg.sub:Name`` (1) finds the module with ``importlib.util.find_spec`` first, so a
missing module is one line and nothing has run, (2) imports it, (3) walks the attribute path and (4)
checks that the object was defined in an allowed package (``mypkg:os.system`` re-exports the standard
library and is refused). The caller then checks what it needs (an Optimizer subclass, a callable).

Nothing else in optbench calls importlib on a user's string.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterable

from optbench.errors import OptbenchError

ENV_VAR = "OPTBENCH_ALLOW_IMPORTS"
CLI_FLAG = "--allow-imports"

_PACKAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_ATTRIBUTE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_path(text: object) -> bool:
    """``"pkg.mod:Name"``-shaped (a colon); registry names never contain one."""
    return isinstance(text, str) and ":" in text


def never_importable(package: str) -> bool:
    """The standard library, the interpreter's built-in modules and ``__main__``: never by spec."""
    return package in sys.stdlib_module_names or package in sys.builtin_module_names or package == "__main__"


def parse_packages(values: Iterable[str] | str | None) -> list[str]:
    """Package names from ``"a,b"`` or ``["a", "b,c"]``; each must be a top-level name like ``mypkg``."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if not name:
                continue
            if not _PACKAGE_RE.match(name):
                raise OptbenchError(
                    f"{CLI_FLAG} {name!r}: name top-level packages (mypkg, not mypkg.sub or a path)"
                )
            if never_importable(name):
                raise OptbenchError(
                    f"{CLI_FLAG} {name!r}: the standard library and built-in modules are never "
                    "importable from a spec"
                )
            if name not in names:
                names.append(name)
    return names


def allowed_packages() -> frozenset[str]:
    """The packages the user allowed: ``OPTBENCH_ALLOW_IMPORTS`` (comma-separated), read on every call so
    that spawned workers, which inherit the environment, see what the command line allowed."""
    raw = os.environ.get(ENV_VAR, "")
    names = (part.strip() for part in raw.split(","))
    return frozenset(n for n in names if n and _PACKAGE_RE.match(n) and not never_importable(n))


def allow_imports(*packages: str) -> list[str]:
    """Allow specs to import from ``packages`` (top-level names), in this process and in the worker
    processes it starts; returns every package now allowed. ``bench --allow-imports`` calls this.

    >>> allow_imports("mypkg")  # doctest: +SKIP
    ['mypkg']
    """
    names = parse_packages(list(packages))
    current = sorted(allowed_packages())
    merged = current + [n for n in names if n not in current]
    if merged:
        os.environ[ENV_VAR] = ",".join(merged)
    return merged


def worker_env() -> dict[str, str]:
    """The environment a worker that does not inherit ours (Ray) needs to see the same allowed packages."""
    value = ",".join(sorted(allowed_packages()))
    return {ENV_VAR: value} if value else {}


def refusal(what: str, path: str) -> str:
    """The one line for an import path whose package is not allowed."""
    package = path.partition(":")[0].split(".")[0]
    if never_importable(package):
        return (
            f"{what} {path!r} names the standard library ({package}); optbench never imports it from a spec"
        )
    return (
        f"{what} {path!r} is an import path; optbench imports no code named in a spec unless you allow its "
        f"package: {CLI_FLAG} {package} (Python: {ENV_VAR}={package})"
    )


def check_allowed(path: str, what: str) -> tuple[str, str]:
    """(module, attribute path) of an allowed import path; OptbenchError without importing anything."""
    module_name, _, attribute = path.partition(":")
    module_name, attribute = module_name.strip(), attribute.strip()
    if not _MODULE_RE.match(module_name) or not _ATTRIBUTE_RE.match(attribute):
        raise OptbenchError(f"malformed {what} {path!r}: an import path is package.module:Name")
    if any(part.startswith("__") for part in attribute.split(".")):
        raise OptbenchError(f"{what} {path!r}: dunder attributes are not importable from a spec")
    if module_name.split(".")[0] not in allowed_packages():
        raise OptbenchError(refusal(what, path))
    return module_name, attribute


def import_object(path: str, what: str) -> object:
    """The object at ``package.module:Name`` (see the module docstring for the four steps)."""
    module_name, attribute = check_allowed(path, what)
    try:
        found = importlib.util.find_spec(module_name)  # imports the parents of a submodule, not the module
    except (ImportError, ValueError) as err:
        raise OptbenchError(f"cannot import {what} {path!r}: {err}") from None
    if found is None:
        raise OptbenchError(f"cannot import {what} {path!r}: no module named {module_name!r}")
    try:
        obj = importlib.import_module(module_name)
        for name in attribute.split("."):
            obj = getattr(obj, name)
    except (ImportError, AttributeError) as err:
        raise OptbenchError(f"cannot import {what} {path!r}: {err}") from None
    defined_in = getattr(obj, "__module__", None)
    if not isinstance(defined_in, str):
        raise OptbenchError(f"{what} {path!r} is not a class or function (it is a {type(obj).__name__})")
    if defined_in.split(".")[0] not in allowed_packages():
        raise OptbenchError(
            f"{what} {path!r} is defined in {defined_in}, not in an allowed package "
            f"({', '.join(sorted(allowed_packages()))}); name it where it is defined"
        )
    return obj


def import_callable(path: object, what: str):
    """A function (or other callable) named by an import path, e.g. a LambdaLR's ``lr_lambda``."""
    if not is_import_path(path):
        raise OptbenchError(
            f"{what} {path!r} must be an import path package.module:function (allowed with {CLI_FLAG})"
        )
    obj = import_object(path, what)
    if not callable(obj):
        raise OptbenchError(f"{what} {path!r} is not callable")
    return obj
