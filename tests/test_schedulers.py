"""LR schedulers: the engine's recorded lr equals torch stepped bare; each scheduler against its documented
closed form for explicit arguments; the hand-written ones against their torch equivalents."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench.engine.reference import run
from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.imports import ENV_VAR
from optbench.registry.schedulers import build_scheduler, canonical_scheduler, schedulers
from optbench.spec import RunConfig

USER_LAMBDAS = """
import math

def exp(t):
    return math.exp(t)

def sqrt(t):
    return math.sqrt(t)
"""


@pytest.fixture(autouse=True)
def user_lambdas(tmp_path_factory, monkeypatch):
    """A user's module of lr_lambdas on sys.path, its package and torch allowed (``--allow-imports``)."""
    folder = tmp_path_factory.getbasetemp() / "user_lambdas"
    folder.mkdir(exist_ok=True)
    (folder / "optbench_test_lambdas.py").write_text(USER_LAMBDAS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(ENV_VAR, "optbench_test_lambdas,torch")


def _lr_trace(scheduler: str, steps: int, lr: float = 0.01) -> np.ndarray:
    """The lr column of an engine run of plain SGD on the quadratic (lr small enough never to diverge)."""
    result = run(RunConfig(problem="quadratic", optimizer="sgd", lr=lr, steps=steps, scheduler=scheduler))
    assert result.summary.status == "ok", result.summary.reason
    assert len(result.trace["lr"]) == steps
    return result.trace["lr"]


def _bare_lrs(scheduler: str, steps: int, lr: float) -> list[float]:
    """The same scheduler object stepped by a bare PyTorch loop: optimizer.step(), then scheduler.step()."""
    x = torch.tensor([2.0], requires_grad=True)
    optimizer = torch.optim.SGD([x], lr=lr)
    impl = build_scheduler(scheduler, optimizer, steps, lr).impl
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        if hasattr(impl, "get_last_lr"):  # the scheduler's own view agrees with the optimizer's
            assert impl.get_last_lr()[0] == optimizer.param_groups[0]["lr"]
        optimizer.zero_grad()
        loss = ((2 * x) ** 2).sum()
        loss.backward()
        optimizer.step()
        if isinstance(impl, torch.optim.lr_scheduler.ReduceLROnPlateau):
            impl.step(float(loss.detach()))
        elif impl is not None:
            impl.step()
    return lrs


@pytest.mark.parametrize("name", schedulers.names())
def test_recorded_lr_equals_torch_stepped_bare(name):
    steps, lr = 40, 0.01
    result = run(RunConfig(problem="quadratic", optimizer="sgd", lr=lr, steps=steps, scheduler=name))
    assert result.summary.status == "ok", result.summary.reason
    assert result.trace["lr"].tolist() == _bare_lrs(name, steps, lr)
    assert "optimizer.step()" not in (result.summary.warnings or "")  # never the wrong call order


# ------------------------------------------------------------------------------------------ closed forms

LR = 0.01
CLOSED_FORMS = {
    # REFERENCE_VECTORS.md: StepLR(step_size=5, gamma=0.8) from 0.01 over 100 epochs
    "steplr(step_size=5, gamma=0.8)": (100, lambda t: LR * 0.8 ** (t // 5)),
    "multisteplr(milestones=[3, 7], gamma=0.1)": (12, lambda t: LR * 0.1 ** ((t >= 3) + (t >= 7))),
    "exponentiallr(gamma=0.9)": (20, lambda t: LR * 0.9**t),
    "cosineannealinglr(T_max=10, eta_min=0.001)": (
        11,
        lambda t: 0.001 + (LR - 0.001) * (1 + math.cos(math.pi * t / 10)) / 2,
    ),
    "linearlr(start_factor=0.25, end_factor=1.0, total_iters=4)": (
        8,
        lambda t: LR * (0.25 + 0.75 * min(t, 4) / 4),
    ),
    "constantlr(factor=0.5, total_iters=3)": (6, lambda t: LR * (0.5 if t < 3 else 1.0)),
    "polynomiallr(total_iters=10, power=2.0)": (12, lambda t: LR * (1 - min(t, 10) / 10) ** 2),
    "cycliclr(base_lr=0.01, max_lr=0.1, step_size_up=4)": (  # triangular
        20,
        lambda t: 0.01 + 0.09 * max(0.0, 1 - abs(t / 4 - 2 * math.floor(1 + t / 8) + 1)),
    ),
    "cosineannealingwarmrestarts(T_0=5)": (15, lambda t: LR * (1 + math.cos(math.pi * (t % 5) / 5)) / 2),
    "lambdalr(lr_lambda='optbench_test_lambdas:exp')": (6, lambda t: LR * math.exp(t)),
    "multiplicativelr(lr_lambda='optbench_test_lambdas:sqrt')": (
        6,
        lambda t: LR * math.prod(math.sqrt(k) for k in range(1, t + 1)),
    ),
    "sequentiallr(schedulers=['constantlr(factor=0.5, total_iters=100)', 'exponentiallr(gamma=0.9)'], milestones=[3])": (
        8,
        lambda t: LR * (0.5 if t < 3 else 0.9 ** (t - 3)),
    ),
    "chainedscheduler(schedulers=['constantlr(factor=0.5, total_iters=2)', 'exponentiallr(gamma=0.9)'])": (
        6,
        lambda t: LR * 0.9**t * (0.5 if t < 2 else 1.0),
    ),
    # the hand-written one: halve every 10 steps
    "step-halving": (35, lambda t: LR * 0.5 ** (t // 10)),
    "step-halving(every=3, factor=0.1)": (10, lambda t: LR * 0.1 ** (t // 3)),
    # defaults derived from the run length (bench list schedulers documents them)
    "steplr": (40, lambda t: LR * 0.1 ** (t // 10)),  # step_size = steps // 4, torch's gamma 0.1
    "cosineannealinglr": (30, lambda t: LR * (1 + math.cos(math.pi * t / 30)) / 2),  # T_max = steps
    "exponentiallr": (30, lambda t: LR * 0.01 ** (t / 30)),  # falls to 1% at `steps`
}


@pytest.mark.parametrize("spec", list(CLOSED_FORMS))
def test_scheduler_matches_its_closed_form(spec):
    steps, closed_form = CLOSED_FORMS[spec]
    expected = [closed_form(t) for t in range(steps)]
    np.testing.assert_allclose(_lr_trace(spec, steps, LR), expected, rtol=1e-9, atol=1e-12)


def test_cosine_warm_restarts_with_growing_periods():
    """T_0 = 3, T_mult = 2: periods of 3, 6, 12 steps starting at t = 0, 3, 9."""
    eta_min = 0.001

    def closed_form(t):
        start, period = 0, 3
        while t >= start + period:
            start, period = start + period, period * 2
        return eta_min + (LR - eta_min) * (1 + math.cos(math.pi * (t - start) / period)) / 2

    trace = _lr_trace(f"cosineannealingwarmrestarts(T_0=3, T_mult=2, eta_min={eta_min})", 21)
    np.testing.assert_allclose(trace, [closed_form(t) for t in range(21)], rtol=1e-9)
    assert [t for t in range(21) if math.isclose(trace[t], LR)] == [0, 3, 9]


def test_onecycle_key_points():
    max_lr, total, pct, div, final_div = 0.1, 20, 0.3, 25.0, 1e4
    trace = _lr_trace(
        f"onecyclelr(max_lr={max_lr}, total_steps={total}, pct_start={pct}, div_factor={div}, "
        f"final_div_factor={final_div})",
        total,
        lr=max_lr,
    )
    assert trace[0] == pytest.approx(max_lr / div)  # starts at max_lr / div_factor
    peak = round(pct * total) - 1  # torch: the warm-up phase ends at step pct_start·total - 1
    assert trace.argmax() == peak and trace[peak] == pytest.approx(max_lr)
    assert (np.diff(trace[: peak + 1]) > 0).all() and (np.diff(trace[peak:]) < 0).all()
    assert trace[-1] == pytest.approx(max_lr / (div * final_div))  # ends at initial_lr / final_div_factor


def test_onecycle_defaults_peak_at_the_base_lr():
    trace = _lr_trace("onecyclelr", 40, lr=0.05)
    assert trace.max() == pytest.approx(0.05)
    assert trace[0] == pytest.approx(0.05 / 25)


def test_step_halving_equals_steplr_step_10_gamma_half():
    """REFERENCE_VECTORS.md: writing param_groups[i]['lr'] by hand gives StepLR(step_size=10,
    gamma=0.5)'s staircase; same lrs, so the same losses too."""
    ours = run(RunConfig(problem="quadratic", lr=0.02, steps=35, scheduler="step-halving"))
    torchs = run(
        RunConfig(problem="quadratic", lr=0.02, steps=35, scheduler="steplr(step_size=10, gamma=0.5)")
    )
    np.testing.assert_array_equal(ours.trace["lr"], torchs.trace["lr"])
    np.testing.assert_array_equal(ours.trace["loss"], torchs.trace["loss"])
    assert sorted(set(ours.trace["lr"].tolist()), reverse=True) == [0.02, 0.01, 0.005, 0.0025]


def _warmup_cosine(t: int, steps: int, warmup: int, start_factor: float, eta_min: float) -> float:
    if t < warmup:
        return LR * (start_factor + (1 - start_factor) * t / warmup)
    return eta_min + (LR - eta_min) * (1 + math.cos(math.pi * (t - warmup) / (steps - warmup))) / 2


@pytest.mark.parametrize(
    ("spec", "warmup", "start_factor", "eta_min"),
    [
        ("warmup-cosine", 4, 0.1, 0.0),  # defaults: warmup = steps // 10, start 0.1·lr
        ("warmup-cosine(warmup=5, start_factor=0.2, eta_min=0.001)", 5, 0.2, 0.001),
    ],
)
def test_warmup_cosine_closed_form(spec, warmup, start_factor, eta_min):
    steps = 40
    expected = [_warmup_cosine(t, steps, warmup, start_factor, eta_min) for t in range(steps)]
    np.testing.assert_allclose(_lr_trace(spec, steps), expected, rtol=1e-9, atol=1e-12)


def test_reduce_on_plateau_is_fed_the_training_loss():
    """At lr = 0.25 the quadratic's loss stays exactly 16 (x flips between 2 and -2): no improvement after
    step 0, so with patience 2 the lr halves after step 3; at 0.125 the next step lands on x = 0."""
    result = run(
        RunConfig(
            problem="quadratic", lr=0.25, steps=6, scheduler="reducelronplateau(patience=2, factor=0.5)"
        )
    )
    assert result.trace["lr"].tolist() == [0.25, 0.25, 0.25, 0.25, 0.125, 0.125]
    assert result.trace["loss"].tolist() == [16.0, 16.0, 16.0, 16.0, 16.0, 0.0]


# ----------------------------------------------------------------------------------------- names, errors


def test_aliases_and_import_paths_give_the_same_schedule():
    staircase = _lr_trace("steplr(step_size=3)", 10)
    np.testing.assert_array_equal(_lr_trace("step(step_size=3)", 10), staircase)
    np.testing.assert_array_equal(_lr_trace("torch.optim.lr_scheduler:StepLR(step_size=3)", 10), staircase)
    assert canonical_scheduler("cosine") == "cosineannealinglr"
    assert canonical_scheduler("plateau( patience=3 )") == "reducelronplateau(patience=3)"


def _optimizer():
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def test_unknown_scheduler_argument_names_it_and_the_valid_ones():
    with pytest.raises(OptbenchError) as err:
        build_scheduler("steplr(bogus=1)", _optimizer(), 10, 0.1)
    assert "bogus" in str(err.value) and "step_size" in str(err.value) and "gamma" in str(err.value)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("none(x=1)", OptbenchError),
        ("step-halving(every=0)", NotApplicable),
        ("onecyclelr(pct_start=2.0)", NotApplicable),
    ],
)
def test_bad_scheduler_arguments(spec, error):
    with pytest.raises(error):
        build_scheduler(spec, _optimizer(), 10, 0.1)


def test_unknown_scheduler_name_lists_valid_ones():
    with pytest.raises(OptbenchError, match="valid: .*steplr.*warmup-cosine"):
        canonical_scheduler("steplrr")


@pytest.mark.parametrize("path", ["no_such_module_xyz:Sched", "torch.optim.lr_scheduler:NoSuchLR"])
def test_unimportable_scheduler_path_is_rejected_like_an_optimizer_path(path, monkeypatch):
    """canonical_optimizer imports and checks an import path up front; a scheduler path must be checked
    too, or a typo becomes a column of `invalid` runs instead of one error line."""
    monkeypatch.setenv(ENV_VAR, "no_such_module_xyz,torch")
    with pytest.raises(OptbenchError, match="cannot import"):
        canonical_scheduler(path)
