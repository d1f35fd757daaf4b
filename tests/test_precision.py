"""optbench.registry.precision: device strings, and that each precision really runs in its dtype."""

from __future__ import annotations

import pytest
import torch

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry import precision as prec
from optbench.registry.precision import (
    AUTOCAST_DTYPES,
    autocast_context,
    check_precision,
    make_scaler,
    resolve_device,
)
from optbench.spec import PRECISIONS

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# ------------------------------------------------------------------------------------------ devices


@pytest.mark.parametrize("text", ["cpu", "CPU", " cpu "])
def test_resolve_cpu(text):
    assert resolve_device(text) == "cpu"


def test_resolve_auto_follows_cuda_availability():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "cuda:", "mps0", ""])
def test_resolve_rejects_unknown_device(text):
    with pytest.raises(OptbenchError, match="unknown device .*valid: auto, cpu, cuda, cuda:N"):
        resolve_device(text)


@no_cuda
@pytest.mark.parametrize("text", ["cuda", "cuda:0", "cuda:3"])
def test_resolve_cuda_without_cuda_is_one_clear_line(text):
    with pytest.raises(OptbenchError) as info:
        resolve_device(text)
    message = str(info.value)
    assert "needs CUDA" in message and repr(text) in message
    assert "\n" not in message


# ------------------------------------------------------------------------------------------ precisions


def test_unknown_precision_is_bad_input_not_notapplicable():
    with pytest.raises(OptbenchError, match="unknown precision 'fp8'; valid: fp32, fp16, bf16") as info:
        check_precision("fp8", "cpu")
    assert not isinstance(info.value, NotApplicable)


def _raw_autocast_dtype(precision: str, device: str) -> torch.dtype:
    """What plain torch.autocast gives, without optbench's check in between."""
    a = torch.ones(8, 8, device=device)
    with torch.autocast(device.split(":")[0], dtype=getattr(torch, AUTOCAST_DTYPES[precision])):
        return (a @ a).dtype


@pytest.mark.parametrize("precision", PRECISIONS)
def test_cpu_autocast_context_runs_the_precision_it_names(precision):
    """Under the context, a matmul and an nn.Linear come back in the precision's dtype -- or the precision
    is refused, and then only because plain autocast would really not produce that dtype."""
    expected = getattr(torch, AUTOCAST_DTYPES[precision] or "float32")
    x, layer = torch.randn(4, 16), torch.nn.Linear(16, 16)
    try:
        context = autocast_context(precision, "cpu")
    except NotApplicable:
        assert _raw_autocast_dtype(precision, "cpu") != expected
        return
    with context:
        assert (x @ x.T).dtype == expected
        assert layer(x).dtype == expected
    assert layer.weight.dtype == torch.float32  # fp32 master weights in every precision


@pytest.mark.skipif(torch.__version__ < "2.13", reason="finding recorded for torch 2.13 CPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_torch_2_13_cpu_autocast_supports_fp16_and_bf16(precision):
    check_precision(precision, "cpu")  # the finding documented in optbench.precision


def test_silently_disabled_autocast_is_refused(monkeypatch):
    """CPU autocast with an unsupported dtype (float64) warns and runs fp32; check_precision must catch it."""
    monkeypatch.setitem(prec.AUTOCAST_DTYPES, "fp16", "float64")
    prec._probe_autocast.cache_clear()
    try:
        with pytest.raises(NotApplicable, match="came back float32, not float64"):
            check_precision("fp16", "cpu")
        with pytest.raises(NotApplicable):
            autocast_context("fp16", "cpu")
    finally:
        prec._probe_autocast.cache_clear()


def test_fp32_context_is_a_no_op():
    with autocast_context("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize(("precision", "has_scaler"), [("fp32", False), ("fp16", True), ("bf16", False)])
def test_only_fp16_gets_a_grad_scaler(precision, has_scaler):
    try:
        scaler = make_scaler(precision, "cpu")
    except NotApplicable:
        pytest.skip(f"{precision} autocast not supported on this CPU torch")
    assert (scaler is not None) == has_scaler
    if has_scaler:
        assert isinstance(scaler, torch.amp.GradScaler)
        assert scaler.is_enabled()


def test_fp16_training_step_on_cpu_updates_fp32_master_weights():
    try:
        scaler = make_scaler("fp16", "cpu")
    except NotApplicable:
        pytest.skip("fp16 autocast not supported on this CPU torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 16)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with autocast_context("fp16", "cpu"):
        out = model(torch.randn(8, 16))
        loss = torch.nn.functional.mse_loss(out, torch.zeros(8, 16))
    assert out.dtype == torch.float16 and loss.dtype == torch.float32
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert model.weight.dtype == torch.float32 and model.weight.grad.dtype == torch.float32
    assert not torch.equal(model.weight, before)
    assert scaler.get_scale() == 65536.0  # no overflow: the scale stays at its initial 2**16


# ------------------------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@cuda
def test_resolve_cuda_devices():
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"
    count = torch.cuda.device_count()
    with pytest.raises(OptbenchError, match=f"cuda:{count}' is out of range"):
        resolve_device(f"cuda:{count}")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("precision", PRECISIONS)
def test_cuda_autocast_context_runs_the_precision_it_names(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        with pytest.raises(NotApplicable):
            check_precision(precision, "cuda")
        return
    x = torch.randn(8, 8, device="cuda")
    with autocast_context(precision, "cuda"):
        assert (x @ x).dtype == getattr(torch, AUTOCAST_DTYPES[precision] or "float32")
    scaler = make_scaler(precision, "cuda")
    assert (scaler is not None and scaler.is_enabled()) == (precision == "fp16")
