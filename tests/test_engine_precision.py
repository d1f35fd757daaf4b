"""Precision as a run axis: fp16 autocast + GradScaler, bf16 autocast, skipped steps, invalid combinations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench.engine.reference import run
from optbench.errors import OptbenchError
from optbench.registry.validate import canonical_config
from optbench.spec import RunConfig

MLP = dict(problem="mlp-regression", optimizer="sgd", lr=0.05, steps=30)


def _run(**kw):
    return run(canonical_config(RunConfig(**{**MLP, **kw})))


def test_bf16_really_runs_in_bf16_and_stays_close_to_fp32():
    fp32, bf16 = _run(precision="fp32"), _run(precision="bf16")
    assert fp32.summary.status == bf16.summary.status == "ok"
    # bf16 matmuls (8 mantissa bits) change the loss at step 0 already: autocast was active ...
    assert fp32.trace["loss"][0] != bf16.trace["loss"][0]
    # ... but only at bf16 precision (~2^-8 relative), so the runs track each other.
    np.testing.assert_allclose(bf16.trace["loss"][:5], fp32.trace["loss"][:5], rtol=3e-2)
    assert np.isnan(bf16.trace["loss_scale"]).all() and not bf16.trace["skipped_step"].any()


def test_fp16_records_the_loss_scale_of_each_step():
    result = _run(precision="fp16")
    assert result.summary.status == "ok"
    assert (result.trace["loss_scale"] == 65536.0).all()  # GradScaler's default, no overflow here
    assert not result.trace["skipped_step"].any()


def test_skipped_steps_are_detected_and_are_not_divergence():
    # A scale of 1e12 overflows fp16 gradients: GradScaler skips the step and halves the scale until
    # the scaled gradients fit.
    result = _run(precision="fp16(init_scale=1e12)", scheduler="steplr")
    scale, skipped = result.trace["loss_scale"], result.trace["skipped_step"]
    assert result.summary.status == "ok"
    first_kept = int(np.argmin(skipped))
    assert first_kept > 0 and skipped[:first_kept].all() and not skipped[first_kept:].any()
    np.testing.assert_allclose(scale[1 : first_kept + 1], scale[:first_kept] / 2)
    # parameters do not move on a skipped step
    assert result.trace["param_norm"][0] == result.trace["param_norm"][first_kept]
    # the scheduler warning a skipped first step triggers is captured, not fatal
    assert "lr_scheduler.step()" in (result.summary.warnings or "")


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (dict(problem="quadratic", optimizer="sgd", precision="fp16"), "toy function"),
        (dict(optimizer="lbfgs", precision="fp16"), "LBFGS"),
        (dict(precision="bf16(scaler=True)"), "GradScaler with bf16"),
        (dict(precision="fp32(scaler=True)"), "GradScaler with fp32"),
    ],
)
def test_invalid_precision_combinations_are_recorded_with_a_reason(kw, reason):
    result = _run(**kw)
    assert result.summary.status == "invalid"
    assert reason in result.summary.reason


def test_unknown_precision_is_a_user_error():
    with pytest.raises(OptbenchError, match="unknown precision 'fp8'"):
        canonical_config(RunConfig(precision="fp8"))
    with pytest.raises(OptbenchError, match="options are"):
        canonical_config(RunConfig(precision="fp16(loss_scale=2)"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_precisions_run_on_cuda(precision):
    result = _run(precision=precision, device="cuda")
    assert result.summary.status == "ok"
    assert np.isfinite(result.trace["loss"]).all()
