"""Grid experiments: the cartesian product of a few axes of values, run resumably, summarised per group.

    GridSpec(problem="mlp-classification", optimizer="sgd,adamw", lr=(0.003, 0.03, 0.3),
             momentum=(0, 0.9), seed=range(3), steps=500)        # 2 x 3 x 2 x 3 = 36 runs

Every axis holds a tuple of values; a scalar is an axis of one value and a string is split at top-level
commas (``"sgd,adamw"``; the comma in ``"steplr(step_size=50, gamma=0.5)"`` stays with its spec). The lr
axis also takes ranges: ``linspace(0.01, 0.5, 50)`` and ``logspace(-4, 0, 9)`` (base-10 exponents).
``width``/``depth``/``activation`` fold into the MLP problem's spec string, e.g.
``mlp-classification(activation='tanh', depth=3, width=64)``.

``expand`` turns a spec into canonical RunConfigs in ``AXES`` order (seed innermost, so the seeds of a
group are adjacent); runs.parquet follows that order whatever order the runs finished in. A run's id is
the hash of its full canonical config, so re-running a grid into the same folder runs only what is missing.

Unknown names and malformed specs are errors for the whole command (nothing runs). Combinations that are
valid in general but cannot run together (Adagrad with momentum 0.9, SparseAdam on dense weights) are
cells with status ``invalid`` and a reason; the rest of the grid runs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optbench.errors import OptbenchError
from optbench.spec import split_top_level

# Expansion order: the product runs over these axes, the last one (seed) fastest.
AXES = (
    "problem",
    "width",
    "depth",
    "activation",
    "optimizer",
    "lr",
    "momentum",
    "scheduler",
    "init",
    "loss",
    "precision",
    "device",
    "steps",
    "batch_size",
    "head_lr_scale",
    "freeze",
    "sharpness_every",
    "seed",
)
PROBLEM_OPTIONS = ("width", "depth", "activation")  # fold into the MLP problem's spec string

# Axis value types. "opt-" = None is allowed (spelled none/default in text): None keeps the default.
_KINDS = {
    "problem": "str",
    "optimizer": "str",
    "scheduler": "str",
    "init": "str",
    "loss": "str",
    "precision": "str",
    "device": "str",
    "lr": "lr",
    "momentum": "opt-float",
    "seed": "int",
    "steps": "int",
    "batch_size": "opt-int",
    "width": "opt-int",
    "depth": "opt-int",
    "activation": "opt-str",
    "head_lr_scale": "float",
    "freeze": "int",
    "sharpness_every": "int",
}
_NONE_WORDS = ("none", "default")
_RANGE_RE = re.compile(r"^(linspace|logspace)\((.*)\)$")

# The largest grid run without asking (--max-cells): a typo such as --seeds 100000000 would otherwise fill
# the memory before anything runs. A 1,000,000-cell toy grid takes about 2 minutes and 3 GB.
MAX_CELLS = 1_000_000


# ------------------------------------------------------------------------------------------ values of axes


def _round(x: float) -> float:
    """12 significant digits: linspace(0.01, 0.5, 50) gives 0.02, not 0.020000000000000004."""
    return float(f"{x:.12g}")


def parse_lr_values(text: str) -> list[float]:
    """``"0.003,0.03"``, ``"linspace(0.01,0.5,50)"``, ``"logspace(-4,0,9)"`` (10^-4 .. 10^0) or a mix.

    >>> parse_lr_values("0.1, logspace(-2, 0, 3)")
    [0.1, 0.01, 0.1, 1.0]
    """
    return parse_number_values(text, "lr")


def parse_number_values(text: str, axis: str) -> list[float]:
    """Numbers and ranges for any numeric axis (lr, momentum, head_lr_scale), as ``parse_lr_values``."""
    values: list[float] = []
    for part in split_top_level(text):
        match = _RANGE_RE.match(part.replace(" ", ""))
        if match is None:
            try:
                values.append(float(part))
            except ValueError:
                raise OptbenchError(
                    f"{axis} value {part!r} is not a number or a range like linspace(0.01,0.5,50) or logspace(-4,0,9)"
                ) from None
            continue
        kind, args = match.groups()
        pieces = args.split(",")
        try:
            if len(pieces) != 3 or not pieces[2].isdigit() or int(pieces[2]) < 1:
                raise ValueError
            start, stop, n = float(pieces[0]), float(pieces[1]), int(pieces[2])
        except ValueError:
            raise OptbenchError(
                f"malformed {axis} range {part!r}: expected {kind}(start, stop, num) with num a "
                "whole number >= 1"
            ) from None
        if n > MAX_CELLS:
            raise OptbenchError(
                f"{axis} range {part!r} has {n:,} values; a range has at most {MAX_CELLS:,} (a fixed cap)"
            )
        points = [start + (stop - start) * i / (n - 1) for i in range(n)] if n > 1 else [start]
        try:
            values += [_round(10**p if kind == "logspace" else p) for p in points]
        except OverflowError:
            raise OptbenchError(f"{axis} range {part!r}: a value is too large for a float") from None
    if not values:
        raise OptbenchError(f"no {axis} value in {text!r}")
    return values


def _coerce(axis: str, raw: Any) -> tuple:
    """One axis's values as a tuple of the axis's type; strings are split at top-level commas."""
    kind = _KINDS[axis]
    items = list(raw) if isinstance(raw, (list, tuple, range)) else [raw]
    values: list[Any] = []
    for item in items:
        if isinstance(item, str):
            try:
                parts = split_top_level(item)
            except OptbenchError as err:
                raise OptbenchError(f"{axis}: {err}") from None
            if not parts:
                raise OptbenchError(f"{axis}: empty value")
            for part in parts:  # numeric axes take ranges too: --momentum 'linspace(0,0.9,10)'
                if kind == "lr" or (kind.endswith("float") and _RANGE_RE.match(part.replace(" ", ""))):
                    values += [_convert(axis, kind, v) for v in parse_number_values(part, axis)]
                else:
                    values.append(_convert(axis, kind, part))
        else:
            values.append(_convert(axis, kind, item))
    if not values:
        raise OptbenchError(f"axis {axis!r} has no values")
    return tuple(dict.fromkeys(values))  # drop repeats, keep order


def _convert(axis: str, kind: str, value: Any) -> Any:
    """One value of an axis as its kind: str, int or float (lr: a float); None where ``opt-`` allows it."""
    optional = kind.startswith("opt-")
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if optional:
            return None
        raise OptbenchError(f"{axis} cannot be none")
    base = kind.removeprefix("opt-")
    if base == "str":
        if not isinstance(value, str):
            raise OptbenchError(f"{axis} value {value!r} must be a string")
        return value.strip()
    if isinstance(value, bool):
        raise OptbenchError(f"{axis} value {value!r} must be a number")
    return _to_int(axis, value) if base == "int" else _to_float(axis, value)


def _to_int(axis: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value)):
        return int(value)
    raise OptbenchError(f"{axis} value {value!r} is not an integer")


def _to_float(axis: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptbenchError(f"{axis} value {value!r} is not a number") from None
    if not math.isfinite(number):
        raise OptbenchError(f"{axis} value {value!r} is not finite")
    return number


# ------------------------------------------------------------------------------------------------ GridSpec


@dataclass(frozen=True)
class GridSpec:
    """The axes of a grid, each a tuple of values (a scalar or a comma-separated string is accepted and
    normalised). ``momentum=None`` keeps each optimizer's own default; ``width/depth/activation=None`` keep
    the problem's own; ``batch_size=None`` the problem's default.

    Args:
        problem, optimizer, scheduler, init, loss: spec strings (registry names with keyword arguments).
        lr: learning rates; strings may hold ranges ``linspace(a, b, n)`` / ``logspace(a, b, n)``.
        momentum: mapped onto each optimizer's knob (``momentum``, or ``betas[0]`` for the Adam family).
        precision, device, seed, steps, batch_size, head_lr_scale, freeze, sharpness_every: as in
            ``RunConfig`` (sharpness_every K: measure the Hessian's top eigenvalue every K steps; 0 off).
    """

    problem: tuple[str, ...] = ("quadratic",)
    optimizer: tuple[str, ...] = ("sgd",)
    lr: tuple[float, ...] = (0.01,)
    momentum: tuple[float | None, ...] = (None,)
    scheduler: tuple[str, ...] = ("none",)
    init: tuple[str, ...] = ("default",)
    loss: tuple[str, ...] = ("auto",)
    precision: tuple[str, ...] = ("fp32",)
    device: tuple[str, ...] = ("cpu",)
    seed: tuple[int, ...] = (0,)
    steps: tuple[int, ...] = (100,)
    batch_size: tuple[int | None, ...] = (None,)
    width: tuple[int | None, ...] = (None,)
    depth: tuple[int | None, ...] = (None,)
    activation: tuple[str | None, ...] = (None,)
    head_lr_scale: tuple[float, ...] = (1.0,)
    freeze: tuple[int, ...] = (0,)
    sharpness_every: tuple[int, ...] = (0,)

    def __post_init__(self):
        for axis in AXES:
            object.__setattr__(self, axis, _coerce(axis, getattr(self, axis)))

    @property
    def size(self) -> int:
        """Number of cells in the product (before duplicates that canonicalise equal are dropped)."""
        return math.prod(len(getattr(self, axis)) for axis in AXES)

    def replace(self, **changes: Any) -> GridSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, list]:
        return {axis: list(getattr(self, axis)) for axis in AXES}


_ALLOWED_KEYS = (*AXES, "seeds")


def make_spec(options: Mapping[str, Any], base: GridSpec | None = None) -> GridSpec:
    """A GridSpec from ``{axis: values}`` (keys may use '-' for '_'); ``seeds=N`` means seeds 0..N-1.
    Keys not given keep ``base``'s axes (the defaults without a base)."""
    changes: dict[str, Any] = {}
    for key, value in options.items():
        name = key.replace("-", "_")
        if name not in _ALLOWED_KEYS:
            raise OptbenchError(f"unknown grid setting {key!r}; valid: {', '.join(_ALLOWED_KEYS)}")
        changes[name] = value
    if "seeds" in changes:
        if "seed" in changes:
            raise OptbenchError("give either seed (a list of seeds) or seeds (a count), not both")
        count = _convert("seeds", "int", changes.pop("seeds"))
        if not 1 <= count <= MAX_CELLS:
            raise OptbenchError(f"seeds must be in 1..{MAX_CELLS:,} (a fixed cap), got {count:,}")
        changes["seed"] = tuple(range(count))
    return (base or GridSpec()).replace(**changes)


def load_spec_toml(path: str | Path) -> GridSpec:
    """Read a grid from a TOML file: axes as lists, fixed settings as scalars, e.g.::

        problem = "mlp-classification"
        optimizer = ["sgd", "adamw"]
        lr = "logspace(-3, 0, 7)"          # or a list: [0.003, 0.03, 0.3]
        momentum = [0, 0.9]
        seeds = 3
        steps = 500

    A missing file, malformed TOML, an unknown key or a bad value is an OptbenchError naming the file and
    the line.
    """
    import tomllib

    path = Path(path)
    text = _read_toml_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise OptbenchError(f"{path}: malformed TOML: {err}") from None
    options: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}, line {_line_of(text, key)}"
        if key.replace("-", "_") in ("allow_imports", "allow_import"):
            raise OptbenchError(
                f"{where}: a grid file cannot allow imports (it may come from anyone); allow a package "
                "on the command line: --allow-imports PKG"
            )
        if key.replace("-", "_") not in _ALLOWED_KEYS:
            raise OptbenchError(f"{where}: unknown key {key!r}; valid: {', '.join(_ALLOWED_KEYS)}")
        if isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)
        ):
            raise OptbenchError(f"{where}: {key} must be a value or a list of values")
        try:
            make_spec({key: value})  # checks this key alone, so the error can name its line
        except OptbenchError as err:
            raise OptbenchError(f"{where}: {err}") from None
        options[key] = value
    try:
        return make_spec(options)
    except OptbenchError as err:
        raise OptbenchError(f"{path}: {err}") from None


def _read_toml_text(path: Path) -> str:
    """The file's text; TOML is UTF-8, so other bytes are one line naming the file and the first bad byte."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise OptbenchError(f"spec file {str(path)!r} not found") from None
    except OSError as err:
        raise OptbenchError(f"cannot read spec file {str(path)!r}: {err.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise OptbenchError(
            f"spec file {str(path)!r} is not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); "
            "TOML files are UTF-8"
        ) from None


def _line_of(text: str, key: str) -> int | str:
    pattern = re.compile(rf"^\s*(\[+\s*)?[\"']?{re.escape(key)}[\"']?\s*(=|\])")  # key = ... or [key]
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return "?"
