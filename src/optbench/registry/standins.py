"""Stand-in builds: each distinct optimizer, scheduler, problem, init and loss of a command is built once,
small, before anything runs, so that a value no cell could accept (``adamw(weight_decay="lots")``,
``--width 0``, ``steplr(step_size="x")``) stops the command with one line instead of filling a folder
with ``invalid`` or ``failed`` cells.

Each verdict is for one value in one *context* (the other settings a cell gives it) and is ``None``
(accepted), a reason (refused), or ``SKIP``: the context does not test the value, because optbench itself
marks the combination not applicable (``--momentum 0.9`` on Adagrad, SparseAdam on dense weights, an init
on a toy function). ``validate.check_buildable`` refuses a value only when it was refused in every context
that tests it; a value that fails only in some cells stays a cell status (``sgd(nesterov=True)`` with
momentum 0 and 0.9: the momentum-0 cells are ``invalid``).

The stand-ins, each one step of the real thing:

* optimizer: the real class on one 2x2 float32 parameter on the cell's device (``fused``/``capturable``
  depend on it), at the cell's lr and momentum; ``step()`` once after a backward of ``sum(p²)``.
* scheduler: the real scheduler on SGD(momentum=0.9) over that parameter (the most accepting optimizer:
  ``cycle_momentum`` needs a momentum), then the cells' own optimizers if SGD refused it; built for the
  cell's steps and lr and stepped once (``steplr(step_size="x")`` only fails in ``step()``).
* problem, init, loss: the real problem on CPU with the cell's init, loss and batch size, one minibatch
  loss and its backward; an MLP is built at width <= 8, depth <= 2 and at most 256 + 64 data points (its
  sizes are checked as numbers and against memory in ``limits``; building it whole would cost what a cell
  costs).

Verdicts are cached per value and context: a grid repeats a few specs in thousands of cells.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

from optbench.errors import NotApplicable, OptbenchError
from optbench.spec import Spec, parse_spec

SKIP = "skip"  # the context does not test the value
STANDIN_MLP = {"width": 8, "depth": 2, "n_train": 256, "n_val": 64}  # caps of the problem stand-in's sizes


def reason(err: BaseException) -> str:
    """One line: an OptbenchError's own message, else ``Type: message`` (its first line)."""
    if isinstance(err, OptbenchError):
        return str(err)
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _parameter(device: str):
    import torch

    return torch.full((2, 2), 0.5, device=device, requires_grad=True)


def _step(optimizer, param, closure_needed: bool) -> None:
    """One step as the engine takes it: zero_grad, forward, backward, step (LBFGS: with the closure)."""

    def closure():
        param.grad = None
        loss = (param * param).sum()
        loss.backward()
        return loss

    if closure_needed:
        optimizer.step(closure)
    else:
        closure()
        optimizer.step()


def _optimizer_on(optimizer: str, param, lr: float, momentum: float | None):
    """The real optimizer over the stand-in parameter; NotApplicable where optbench marks it so."""
    from optbench.registry.optimizers import check_applicable, optimizer_arguments

    cls, kwargs, _ = optimizer_arguments(optimizer, momentum)
    check_applicable(cls, optimizer, [{"params": [param]}])
    return cls([param], lr=lr, **kwargs)


@functools.lru_cache(maxsize=4096)
def optimizer_verdict(optimizer: str, lr: float, momentum: float | None, device: str) -> str | None:
    from optbench.registry.optimizers import needs_closure

    param = _parameter(device)
    try:
        with _quiet():
            built = _optimizer_on(optimizer, param, lr, momentum)
            _step(built, param, needs_closure(optimizer))
    except NotApplicable:
        return SKIP
    except OptbenchError:
        raise  # a user error for every cell (refused import, momentum given twice): not a verdict
    except Exception as err:  # noqa: BLE001 - whatever the class raises is the reason a cell would give
        return reason(err)
    return None


@functools.lru_cache(maxsize=4096)
def scheduler_verdict(
    scheduler: str, optimizer: str | None, lr: float, momentum: float | None, steps: int, device: str
) -> str | None:
    """``optimizer`` None: the SGD(momentum=0.9) stand-in."""
    import torch

    from optbench.registry.optimizers import needs_closure
    from optbench.registry.schedulers import build_scheduler

    if scheduler == "none":
        return None
    param = _parameter(device)
    try:
        with _quiet():
            if optimizer is None:
                built = torch.optim.SGD([param], lr=lr, momentum=0.9)
            else:
                built = _optimizer_on(optimizer, param, lr, momentum)
    except Exception:  # noqa: BLE001 - the optimizer's own verdict reports it; this context tests nothing
        return SKIP
    try:
        with _quiet():
            handle = build_scheduler(scheduler, built, steps, lr)
            _step(built, param, optimizer is not None and needs_closure(optimizer))
            handle.step(torch.tensor(1.0))
    except Exception as err:  # noqa: BLE001 - a scheduler refusing its arguments, at build or at step()
        return reason(err)
    return None


def _small(problem: str) -> str:
    """The problem spec with its MLP sizes capped at ``STANDIN_MLP`` (positive whole numbers only: any
    other value is left as given, for the build to refuse)."""
    from optbench.registry.limits import mlp_sizes

    if mlp_sizes(problem) is None:
        return problem
    spec = parse_spec(problem, what="problem")
    kw = spec.kw
    for key, cap in STANDIN_MLP.items():
        value = kw.get(key, cap)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            kw[key] = min(value, cap)
    return Spec(spec.name, tuple(sorted(kw.items()))).canonical()


def problem_verdict(problem: str, init: str, loss: str, batch_size: int | None) -> dict[str, str | None]:
    """Verdicts for the problem (built with PyTorch's init and its own loss), for the init and for the loss
    (each built with it): ``{"problem": ..., "init": ..., "loss": ...}``, so the blame falls on the value
    that was refused."""
    alone = _built(problem, "default", "auto", batch_size)
    if alone is not None:
        return {"problem": alone, "init": SKIP, "loss": SKIP}
    return {
        "problem": None,
        "init": None if init == "default" else _built(problem, init, "auto", batch_size),
        "loss": None if loss in ("auto", "none") else _built(problem, "default", loss, batch_size),
    }


@functools.lru_cache(maxsize=4096)
def _built(problem: str, init: str, loss: str, batch_size: int | None) -> str | None:
    """The problem built small on CPU with this init and loss; one minibatch's loss and its backward."""
    import torch

    from optbench.registry.problems import build_problem

    try:
        with _quiet():
            torch.manual_seed(0)
            built = build_problem(_small(problem), init=init, loss=loss, steps=1, batch_size=batch_size)
            built.loss(0).backward()
    except NotApplicable:
        return SKIP
    except Exception as err:  # noqa: BLE001 - an OptbenchError here names a value no cell accepts
        return reason(err)
    return None
