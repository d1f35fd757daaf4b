"""``optbench.lr_find``: the learning-rate range test on the user's own model, optimizer and data, in the
shape of torch-lr-finder's ``LRFinder(model, optimizer, criterion).range_test(loader)``.

The test is ``bench lr-find``'s (``experiments.lrfind``): every param group's lr starts at ``start_lr`` and
torch's ``ExponentialLR`` grows it to ``end_lr`` at the last step; each step records the lr it used and the
loss of its batch (before its update); the analysis, suggestions and figure are ``lrfind.analyse`` and
``lrfind.draw``. The test stops at the step where the analysis stops (a non-finite loss, or a smoothed
loss above ``stop_factor`` x its minimum): the analysis never looks past that step, so the suggestions
are those of the full run, and a diverging model is not trained on.

Nothing of the test stays behind: the model's parameters and buffers (BatchNorm's running statistics),
its gradients and train/eval mode, the optimizer's state and param groups (lr included) and the torch RNG
are restored afterwards, bit for bit, also when the test raises or the loss diverges (torch-lr-finder's
issue #11). The batches come from ``loader`` in order, epoch after epoch; the RNG is seeded with ``seed``
for the test, so its shuffling and dropout are the seed's.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from optbench.errors import OptbenchError
from optbench.experiments.lrfind import BETA, STOP_FACTOR, LRFindAnalysis, analyse, check_range, draw


@dataclass
class RangeTest:
    """What ``lr_find`` measured: each step's lr and loss, their analysis and the figure (if drawn)."""

    analysis: LRFindAnalysis
    title: str
    figures: list[Path] = field(default_factory=list)

    @property
    def lrs(self) -> np.ndarray:
        return self.analysis.lrs

    @property
    def losses(self) -> np.ndarray:
        return self.analysis.losses

    @property
    def suggested_lr(self) -> float | None:
        """The valley suggestion (fastai's default), as ``bench lr-find`` stores it."""
        return self.analysis.valley_lr

    def plot(self, path: str | Path) -> Path:
        """Draw the figure of ``bench lr-find`` (format from the suffix: png, svg or pdf)."""
        figure = draw(self.analysis, Path(path), title=self.title)
        self.figures.append(figure)
        return figure


def lr_find(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: Iterable,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    beta: float = BETA,
    stop_factor: float = STOP_FACTOR,
    seed: int | None = 0,
    figure: str | Path | None = None,
) -> RangeTest:
    """Run the range test on ``model`` with ``optimizer``, ``loss_fn(outputs, targets)`` and the
    ``(inputs, targets)`` batches of ``loader``; restore everything afterwards (module docstring).

    ``figure``: a path to draw ``bench lr-find``'s figure to. ``seed=None`` leaves the RNG unseeded (and
    still restored). Returns a ``RangeTest`` (``suggested_lr``, ``analysis``, ``lrs``, ``losses``).
    """
    gamma = _check(model, optimizer, start_lr, end_lr, steps, beta, stop_factor)
    with _restored(model, optimizer):
        lrs, losses = _run(model, optimizer, loss_fn, loader, start_lr, gamma, steps, beta, stop_factor, seed)
    result = RangeTest(
        analyse(lrs, losses, beta, stop_factor),
        f"{type(model).__name__}, {type(optimizer).__name__}: learning-rate range test",
    )
    if figure is not None:
        result.plot(figure)
    return result


def _check(model, optimizer, start_lr, end_lr, steps, beta, stop_factor) -> float:
    if not isinstance(model, torch.nn.Module):
        raise OptbenchError(f"lr_find: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise OptbenchError(
            f"lr_find: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if not 0 <= beta < 1:
        raise OptbenchError(f"beta must be in [0, 1), got {beta}")
    if not stop_factor > 1:
        raise OptbenchError(f"stop_factor must be > 1, got {stop_factor}")
    return check_range(start_lr, end_lr, steps)


# Attributes an lr scheduler sets on the optimizer it drives (torch wraps ``step`` to count its calls).
_SCHEDULER_ATTRIBUTES = ("step", "_opt_called")


@contextlib.contextmanager
def _restored(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """Snapshot the model (parameters, buffers, gradients, mode), the optimizer (state, param groups, the
    attributes a scheduler sets on it) and the torch RNG; put them back however the block ends."""
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    attributes = {k: vars(optimizer)[k] for k in _SCHEDULER_ATTRIBUTES if k in vars(optimizer)}
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        for p, grad in grads:
            p.grad = grad
        for module, training in modes:
            module.training = training
        for key in _SCHEDULER_ATTRIBUTES:
            if key in attributes:
                setattr(optimizer, key, attributes[key])
            else:
                vars(optimizer).pop(key, None)


def _run(model, optimizer, loss_fn, loader, start_lr, gamma, steps, beta, stop_factor, seed):
    """The test's steps: (lrs, losses) up to and including the step where the analysis stops."""
    if seed is not None:
        torch.manual_seed(seed)
    for group in optimizer.param_groups:
        group["lr"] = start_lr
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    device = next(model.parameters()).device
    model.train()
    lrs, losses = [], []
    batches, stop = _cycle(loader), _Stop(beta, stop_factor)
    for _ in range(steps):
        x, y = _pair(next(batches), device)
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if stop.after(losses[-1]):
            break
    return np.array(lrs), np.array(losses)


class _Stop:
    """``analyse``'s stopping rule, one step at a time: the same EMA (``lrfind.smooth``) and the same test
    (a non-finite loss, or a smoothed loss above stop_factor x the smallest before it)."""

    def __init__(self, beta: float, stop_factor: float):
        self.beta, self.stop_factor = beta, stop_factor
        self.avg, self.t, self.best = 0.0, 0, math.inf

    def after(self, loss: float) -> bool:
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        smoothed = self.avg / (1 - self.beta ** (self.t + 1))
        self.t += 1
        if not (math.isfinite(loss) and math.isfinite(smoothed)):
            return True
        if self.t > 1 and smoothed > self.stop_factor * self.best:
            return True
        self.best = min(self.best, smoothed)
        return False


def _cycle(loader: Iterable) -> Iterator:
    if isinstance(loader, Iterator):
        raise OptbenchError("lr_find: loader must be re-iterable (a DataLoader or a list), not an iterator")
    for epoch in itertools.count():
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise OptbenchError(f"lr_find: the loader yielded no batch (epoch {epoch})")


def _pair(batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        x, y = batch
    except (TypeError, ValueError):
        raise OptbenchError(
            f"lr_find: a batch must be a pair (inputs, targets), got {type(batch).__name__}"
        ) from None
    return x.to(device), y.to(device)
