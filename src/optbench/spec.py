"""The contract every other module speaks: spec strings, the run config, the Parquet schemas.

Spec strings name a registry entry with optional keyword arguments::

    steplr(step_size=5, gamma=0.8)      normal(std=0.0625)      mypkg.opt:Lion(betas=(0.9, 0.99))

Values are Python literals parsed with ``ast.literal_eval`` (never ``eval``). The canonical form sorts
the keywords and writes values with ``repr``, so equal specs hash equally whatever their spelling.

This module imports nothing heavy (no torch, no pyarrow at import time) so ``bench --help`` stays fast.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from optbench.errors import OptbenchError

# name: registry key (letters, digits, -, _) or an import path "pkg.module:Class".
_NAME_RE = re.compile(r"^[A-Za-z_][\w.\-]*(:[A-Za-z_][\w.]*)?$")


@dataclass(frozen=True)
class Spec:
    """A parsed spec string: a registry name plus keyword arguments."""

    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def kw(self) -> dict[str, Any]:
        return dict(self.kwargs)

    @property
    def is_import_path(self) -> bool:
        return ":" in self.name

    def canonical(self) -> str:
        if not self.kwargs:
            return self.name
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs)
        return f"{self.name}({args})"

    def __str__(self) -> str:
        return self.canonical()


def parse_spec(text: str, *, what: str = "spec") -> Spec:
    """Parse ``name(key=value, ...)``; raise OptbenchError naming the bad part, quoting ``text`` as typed.

    Values must be finite: ``sgd(momentum=1e400)`` (1e400 reads as inf) is refused, not run as ``inf``.
    """
    text = text.strip()
    if not text:
        raise OptbenchError(f"empty {what}")
    if "(" in text:
        if not text.endswith(")"):
            raise OptbenchError(f"malformed {what} {text!r}: missing closing ')'")
        name, args = text[: text.index("(")].strip(), text[text.index("(") + 1 : -1]
    else:
        name, args = text, ""
    if not _NAME_RE.match(name):
        raise OptbenchError(f"malformed {what} {text!r}: bad name {name!r}")
    kwargs = _parse_arguments(args, text, what) if args.strip() else {}
    return Spec(name, tuple(sorted(kwargs.items())))


def _parse_arguments(args: str, text: str, what: str) -> dict[str, Any]:
    """``key=value, ...`` -> {key: value}, every value a finite Python literal."""
    source = f"f({args})"
    try:
        call = ast.parse(source, mode="eval").body
    except SyntaxError:
        raise OptbenchError(f"malformed {what} {text!r}: arguments must be key=value pairs") from None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.args:
        raise OptbenchError(f"malformed {what} {text!r}: arguments must be key=value pairs")
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise OptbenchError(f"malformed {what} {text!r}: '**' is not allowed")
        if keyword.arg in kwargs:
            raise OptbenchError(f"malformed {what} {text!r}: {keyword.arg!r} given twice")
        typed = ast.get_source_segment(source, keyword.value) or ast.unparse(keyword.value)
        try:
            value = ast.literal_eval(keyword.value)
        except (ValueError, SyntaxError):
            raise OptbenchError(
                f"bad value {typed!r} for {keyword.arg!r} in {what} {text!r}: "
                "values must be Python literals (numbers, strings, tuples, lists, True/False/None)"
            ) from None
        if not _finite(value):
            raise OptbenchError(
                f"bad value {typed!r} for {keyword.arg!r} in {what} {text!r}: not a finite number "
                "(a float literal beyond 1.8e308 reads as inf)"
            )
        kwargs[keyword.arg] = value
    return kwargs


def _finite(value: Any) -> bool:
    """No inf or nan anywhere in a literal (numbers, also inside tuples, lists, sets and dicts)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, complex):
        return math.isfinite(value.real) and math.isfinite(value.imag)
    if isinstance(value, (tuple, list, set, frozenset)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(k) and _finite(v) for k, v in value.items())
    return True


def split_top_level(text: str) -> list[str]:
    """Split a comma-separated CLI value, keeping commas inside (...) or [...] with their spec.

    An empty item ('0.1,,0.3', a comma at an end) is an error: it is most often a value left out.
    """
    if not text.strip():
        return []
    parts, depth, current = [], 0, []
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    if not all(parts):
        raise OptbenchError(f"empty value in {text!r} (two commas in a row, or a comma at an end)")
    return parts


# --------------------------------------------------------------------------------------------- run config

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run. Spec-string fields hold the canonical form.

    ``loss="auto"`` means the problem's own loss (resolved by ``resolve_config`` before hashing, so the
    Parquet shows the real name). ``momentum=None`` keeps the optimizer's own default.
    """

    problem: str = "quadratic"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float | None = None
    scheduler: str = "none"
    init: str = "default"
    loss: str = "auto"
    precision: str = "fp32"
    device: str = "cpu"
    seed: int = 0
    steps: int = 100
    batch_size: int | None = None  # MLP problems: None = the problem's default
    head_lr_scale: float = 1.0  # MLP problems: last layer lr multiplier (own param group)
    freeze: int = 0  # MLP problems: first k Linear layers get requires_grad=False
    sharpness_every: int = 0  # measure the Hessian's top eigenvalue every K steps (0: off)

    def to_dict(self) -> dict[str, Any]:
        # Every field is a scalar, so asdict's recursive deep copy (~60 us, per run and per row) buys nothing.
        return {name: getattr(self, name) for name in CONFIG_FIELDS}

    def run_id(self) -> str:
        """Stable 16-hex-digit hash of the full config (same config -> same id on every machine).

        Fields added after results were first written (``OPTIONAL_FIELDS``) enter the hash only when set, so
        every run_id written before they existed stays valid (a folder resumes, verifies, compares)."""
        cached = self.__dict__.get("_run_id")  # per instance: lr=1 and lr=1.0 compare equal but hash apart
        if cached is None:
            fields = self.to_dict()
            for name in OPTIONAL_FIELDS:
                if not fields[name]:  # 0, or None (read back from a folder written before the field)
                    del fields[name]
            payload = json.dumps(fields, sort_keys=True, separators=(",", ":"))
            cached = hashlib.sha256(payload.encode()).hexdigest()[:16]
            object.__setattr__(self, "_run_id", cached)  # frozen dataclass: not a field, not compared
        return cached

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
OPTIONAL_FIELDS = ("sharpness_every",)  # hashed into run_id only when non-zero (see RunConfig.run_id)

STATUSES = ("ok", "diverged", "invalid", "failed")


@dataclass
class RunSummary:
    """One row of runs.parquet beyond the config columns: every field but ``extras`` is a column."""

    status: str
    final_loss: float | None = None
    best_loss: float | None = None
    diverged_step: int | None = None
    steps_completed: int = 0
    wall_time_s: float = 0.0
    reason: str | None = None  # why a run is invalid / failed
    momentum_knob: str | None = None  # which optimizer argument --momentum set ("momentum", "betas[0]")
    final_val_loss: float | None = None
    final_val_acc: float | None = None
    warnings: str | None = None  # warnings torch raised during the run, one per line
    engine: str = "reference"
    exactness: str = "exact"  # the contract its numbers keep: "exact" (torch.optim's bits) or "fast"
    # Sharpness tracking (sharpness_every > 0): the largest relative residual of the run's Lanczos estimates
    # (one converged when its residual is <= engine.sharpness.DEFAULT_TOLERANCE = 1e-4) and how many did
    # not converge within their iteration budget; None when nothing was measured.
    sharpness_residual: float | None = None
    sharpness_unconverged: int | None = None
    # In memory only, never stored: what the batched engine did (its step program, notes on fallbacks).
    extras: dict[str, Any] = field(default_factory=dict, metadata={"column": False})


SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(RunSummary) if f.metadata.get("column", True))


# ------------------------------------------------------------------------------------------ Parquet schemas

# The Arrow type of each field type written in the dataclasses above: the one table the schemas come from.
_ARROW_TYPES = {"str": "string", "float": "float64", "int": "int64", "bool": "bool_"}


def _arrow_type(annotation: str):
    import pyarrow as pa

    return getattr(pa, _ARROW_TYPES[annotation.replace(" | None", "")])()


def _columns(cls, names) -> list[tuple[str, Any]]:
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    return [(name, _arrow_type(types[name])) for name in names]


def runs_schema():
    """Explicit schema of runs.parquet: run_id, the RunConfig fields, then the RunSummary fields."""
    import pyarrow as pa

    return pa.schema(
        [("run_id", pa.string()), *_columns(RunConfig, CONFIG_FIELDS), *_columns(RunSummary, SUMMARY_FIELDS)]
    )


def summary_row(run_id: str, config: RunConfig, summary: RunSummary) -> dict[str, Any]:
    """One row of runs.parquet, in the schema's column order."""
    return {"run_id": run_id, **config.to_dict(), **{name: getattr(summary, name) for name in SUMMARY_FIELDS}}


# Per-step trace columns and their types. x0/x1 are the parameters of the 1-D/2-D toy problems (null for
# MLPs); val_loss/val_acc are filled on evaluation steps of MLP problems only; loss_scale/skipped_step are
# the GradScaler's (null / False without one); sharpness/precond_sharpness are the top eigenvalue of the
# loss's Hessian (and of P^-1 H for Adam/AdamW), measured every sharpness_every steps, null on other steps.
TRACE_TYPES = {
    "run_id": "str",
    "step": "int",
    "loss": "float",
    "lr": "float",
    "grad_norm": "float",
    "update_norm": "float",
    "param_norm": "float",
    "x0": "float",
    "x1": "float",
    "val_loss": "float",
    "val_acc": "float",
    "loss_scale": "float",
    "skipped_step": "bool",
    "sharpness": "float",
    "precond_sharpness": "float",
}
TRACE_COLUMNS = tuple(TRACE_TYPES)


def traces_schema():
    import pyarrow as pa

    return pa.schema([(name, _arrow_type(kind)) for name, kind in TRACE_TYPES.items()])
