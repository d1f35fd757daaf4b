"""Precision and device semantics shared by every command that trains something.

The three precisions, everywhere in optbench (``optbench.spec.PRECISIONS``):

    fp32   no autocast; fp32 weights, activations and gradients.
    fp16   ``torch.autocast(device_type, dtype=torch.float16)`` over fp32 master weights, with
           ``torch.amp.GradScaler(device_type)`` scaling the loss (fp16 gradients underflow below 6e-8).
    bf16   ``torch.autocast(device_type, dtype=torch.bfloat16)``, no scaler (bf16 has fp32's exponent range).

What torch can really do is *tested*, not assumed: ``check_precision`` runs an 8x8 matmul under the
autocast context and compares the output dtype with the one asked for. This matters because
``torch.autocast`` with a dtype the device does not support only warns ("Disabling autocast") and then
runs fp32 -- a result that must never be labelled fp16.

Findings on the CPU build used to write this (torch 2.13.0+cpu, Intel Xeon with AVX-512 BF16/FP16 and AMX):

* CPU autocast supports both float16 and bfloat16: under ``torch.autocast("cpu", dtype=torch.float16)``
  ``a @ b`` and ``nn.Linear`` return float16, under bfloat16 they return bfloat16, with no warning.
  ``torch.amp.GradScaler("cpu")`` is enabled and works (scale 65536.0 after a first step). So fp16 is a
  real option on CPU; it is not in the CPU default set of ``bench amp`` only because CPUs without
  AVX-512-FP16/AMX-FP16 run it through slow conversion paths.
* Any other dtype (e.g. float64) makes CPU autocast warn "CPU Autocast only supports dtypes of
  torch.bfloat16, torch.float16 currently" and silently disable itself: the matmul comes back float32.
* ``torch.amp.GradScaler("cuda")`` on a machine without CUDA warns and disables itself, which is one more
  reason device strings go through ``resolve_device`` first.
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings

from optbench.errors import NotApplicable, OptbenchError
from optbench.spec import PRECISIONS

# precision -> the torch dtype name autocast must produce (None: no autocast)
AUTOCAST_DTYPES: dict[str, str | None] = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(text: str) -> str:
    """Turn ``auto|cpu|cuda|cuda:N`` into a device string torch accepts, or raise one clear line.

    ``auto`` is ``cuda`` when ``torch.cuda.is_available()`` and ``cpu`` otherwise. ``cuda`` / ``cuda:N``
    on a machine without CUDA, or with N >= the device count, raise ``OptbenchError``.

    >>> resolve_device("cpu")
    'cpu'
    """
    import torch

    value = text.strip().lower()
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return "cpu"
    match = _CUDA_RE.match(value)
    if match is None:
        raise OptbenchError(f"unknown device {text!r}; valid: auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise OptbenchError(
            f"device {text!r} needs CUDA, but this torch ({torch.__version__}) sees no CUDA device; "
            "use --device cpu or --device auto"
        )
    if match.group(1) is not None:
        index, count = int(match.group(1)), torch.cuda.device_count()
        if index >= count:
            raise OptbenchError(
                f"device {text!r} is out of range: this machine has {count} CUDA device(s), "
                f"cuda:0..cuda:{count - 1}"
            )
    return value


def device_type(device: str) -> str:
    """``"cuda:1"`` -> ``"cuda"``: what ``torch.autocast`` and ``GradScaler`` take."""
    return device.split(":", 1)[0]


def bf16_native(device: str) -> bool:
    """True where bf16 matmuls run on real hardware support (CUDA: Ampere or newer; CPU: always True,
    torch falls back to its own kernels where the CPU lacks AVX-512-BF16/AMX)."""
    import torch

    if device_type(device) != "cuda":
        return True
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def check_precision(precision: str, device: str) -> None:
    """Raise unless ``precision`` really runs on ``device`` with the installed torch.

    ``OptbenchError`` for a name that is not a precision; ``NotApplicable`` for a valid precision the
    device cannot do (autocast unavailable for the device type, bf16 on a CUDA GPU without bf16 even
    emulated, or autocast that would silently fall back to fp32 -- detected by running it).
    """
    if precision not in PRECISIONS:
        raise OptbenchError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    expected = AUTOCAST_DTYPES[precision]
    got, message = _probe_autocast(precision, device)
    if got != expected:
        import torch

        why = f" ({message})" if message else ""
        raise NotApplicable(
            f"{precision} autocast does not work on {device} with torch {torch.__version__}: "
            f"a matmul under it came back {got}, not {expected}{why}"
        )


@functools.cache
def _probe_autocast(precision: str, device: str) -> tuple[str, str]:
    """Run an 8x8 matmul under ``torch.autocast`` and return (output dtype name, first warning text)."""
    import torch

    kind = device_type(device)
    if not torch.amp.is_autocast_available(kind):
        return "float32", f"torch.autocast has no {kind!r} backend"
    if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "float32", "torch.cuda.is_bf16_supported() is False"
    dtype = getattr(torch, AUTOCAST_DTYPES[precision])
    a = torch.ones(8, 8, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast(kind, dtype=dtype):
                out = a @ a
        except RuntimeError as err:  # some backends raise instead of warning
            return "float32", str(err).splitlines()[0]
    message = str(caught[0].message).splitlines()[0] if caught else ""
    return str(out.dtype).removeprefix("torch."), message


def autocast_context(precision: str, device: str):
    """The forward-pass context for ``precision``: ``nullcontext()`` for fp32, else ``torch.autocast``.

    Checks first (``check_precision``), so it never hands back an autocast that would run fp32.
    """
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type(device), dtype=getattr(torch, AUTOCAST_DTYPES[precision]))


def make_scaler(precision: str, device: str):
    """``torch.amp.GradScaler(device_type)`` for fp16, ``None`` for fp32 and bf16 (no scaling needed)."""
    check_precision(precision, device)
    if precision != "fp16":
        return None
    import torch

    return torch.amp.GradScaler(device_type(device))
