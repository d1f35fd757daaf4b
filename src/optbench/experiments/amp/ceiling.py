"""The ceiling: how much faster this device's matmuls are in each precision, measured in the same run.

A large square matmul ``a @ b`` (n = 8192 on CUDA, 1024 on CPU) is timed with
``torch.utils.benchmark.Timer.blocked_autorange`` in fp32 with TF32 off ("highest"), fp32 with TF32 on
(CUDA), fp16 and bf16 (tensors in that dtype, no autocast). Its rate ``2 n**3 / median`` is the most a
training step of that precision can approach, so ::

    ceiling_speedup(fp16) = rate(fp16) / rate(fp32)      e.g. 635 / 51 = 12.4x on an H200
    ceiling_speedup_tf32(fp16) = rate(fp16) / rate(tf32)   635 / 340 = 1.87x

A step's speed-up divided by its ceiling is the share of the possible speed-up the step reached.

``cpu_native`` says whether torch has native CPU kernels for a 16-bit dtype (oneDNN's own verdict: fp16
needs AVX512-FP16 or AMX-FP16, bf16 AVX512-BF16/AMX-BF16 or at least AVX-512); without them torch converts
to fp32 and back and fp16 runs at a fraction of fp32's speed.
"""

from __future__ import annotations

import functools

CUDA_N = 8192
CPU_N = 1024
CEILING_RUN_TIME_S = 0.2  # per matmul precision
KEYS = ("fp32", "tf32", "fp16", "bf16")
LABELS = {"fp32": "fp32 (TF32 off)", "tf32": "fp32 with TF32", "fp16": "fp16", "bf16": "bf16"}


def matmul_size(device: str) -> int:
    from optbench.registry.precision import device_type

    return CUDA_N if device_type(device) == "cuda" else CPU_N


def measure_ceiling(device: str, keys, n: int) -> tuple[dict[str, float], list[str]]:
    """Matmul rate (FLOP/s) per key in ``keys`` (fp32, tf32, fp16, bf16), and notes on what failed."""
    rates, notes = {}, []
    for key in keys:
        try:
            rates[key] = _matmul_rate(device, key, n)
        except Exception as err:  # noqa: BLE001 - an out-of-memory or missing kernel is a note, not a crash
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            notes.append(f"ceiling: the {n}^3 {LABELS[key]} matmul could not be timed ({first})")
    return rates, notes


def _matmul_rate(device: str, key: str, n: int) -> float:
    import torch
    from torch.utils import benchmark

    from optbench.experiments.amp.step import tf32_matmuls

    dtype = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[key]
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    with tf32_matmuls(key == "tf32", device):
        timer = benchmark.Timer(
            stmt="a @ b",
            globals={"a": a, "b": b},
            num_threads=torch.get_num_threads(),
            label="bench amp ceiling",
            description=key,
        )
        median = timer.blocked_autorange(min_run_time=CEILING_RUN_TIME_S).median
    del a, b
    return 2 * n**3 / median


@functools.cache
def cpu_native(precision: str) -> tuple[bool, str]:
    """(native, why) for fp16/bf16 matmuls on this CPU, from torch's oneDNN checks and the CPU flags."""
    import torch

    flags = _cpu_flags()
    wanted = {"fp16": ("avx512_fp16", "amx_fp16"), "bf16": ("avx512_bf16", "amx_bf16")}.get(precision)
    if wanted is None:
        return True, ""
    present = [f for f in wanted if flags.get(f)]
    check = getattr(torch.ops.mkldnn, f"_is_mkldnn_{precision}_supported", None)
    try:
        native = bool(check()) if check is not None else bool(present)
    except RuntimeError:
        native = bool(present)
    names = " or ".join(f.upper().replace("_", "-") for f in wanted)
    if native:
        what = ", ".join(f.upper().replace("_", "-") for f in present) or "AVX-512 emulation"
        return True, f"torch has native {precision} CPU kernels here ({what})"
    return False, (
        f"this CPU has no native {precision} matmul kernels (no {names}; torch.ops.mkldnn reports no "
        f"{precision} support), so torch converts {precision} to fp32 and back"
    )


def _cpu_flags() -> dict:
    import torch

    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is not None:
        try:
            return dict(get())
        except (RuntimeError, AttributeError):
            pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return {flag: True for flag in line.split(":", 1)[1].split()}
    except OSError:
        pass
    return {}
