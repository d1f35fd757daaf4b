"""The user's own problem: an nn.Module factory, training data and a loss function, run like a built-in.

A user writes a *factory* that returns a ``ModelProblem`` and names it (the protocol is in
``registry.problems``)::

    def my_problem(hidden=32):                      # spec keywords become its arguments
        return optbench.ModelProblem(
            model=lambda: MyNet(hidden),            # called after torch.manual_seed(seed): the init
            train=DataLoader(train_set, batch_size=64, shuffle=True),   # or a (inputs, targets) pair
            loss_fn=nn.CrossEntropyLoss(),
            val=(x_val, y_val), metric="accuracy",  # optional: val_loss / val_acc every eval_every steps
        )

    optbench.register_problem("my-problem", my_problem)            # from Python, or by import path:
    bench grid --allow-imports mypkg --problem 'mypkg.problems:my_problem(hidden=64)' ...

What optbench does with it, per run: seeds torch with the run's seed, calls the factory (with the spec's
keywords, plus any of ``device, seed, steps, batch_size`` it declares), seeds again and calls ``model()``
(so the init depends on the seed alone), applies the ``--init`` scheme to its Linear and Conv layers (gains
for ``activation``), moves the model to the device and feeds it step t's batch. Batches are deterministic
for a seed: (inputs, targets) tensors are cut into minibatches as the built-in MLPs' are
(``problems.minibatch_index``, ``--batch-size`` or ``batch_size``); a DataLoader (or any re-iterable of
``(inputs, targets)``) is iterated epoch after epoch, each epoch started under a torch RNG seeded from the
run's seed, so its shuffling is the seed's and the caller's RNG is left as it was (a loader with its own
``generator`` gets a seeded one for the epoch; the user's is never drawn from). ``--loss`` other than
``auto`` replaces ``loss_fn`` by that registry loss (``classes`` turns class-index targets into one-hot
ones where the loss needs them). ``--head-lr-scale`` and ``--freeze`` apply to the built-in MLPs only.

A problem registered from Python lives in this process; a grid ships it to its worker processes when its
factory can be pickled (a function at the top level of a module or script), else runs those cells here.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.problems import Problem, minibatch_index, problems
from optbench.registry.userfactory import CUSTOM_LOSS, user_entry

DEFAULT_BATCH_SIZE = 64
SHARPNESS_ROWS = 2048  # the fixed batch of sharpness on tensor data, as the built-in MLPs'
_NAME_RE = re.compile(r"^[A-Za-z_][\w.\-]*$")


@dataclass(eq=False)
class ModelProblem(Problem):
    """A problem made of an nn.Module factory, training data and a loss function (see the module docstring).

    Args:
        model: a function of no arguments that returns a fresh nn.Module (a class, a lambda). Not a module
            instance: every run must start from its own seed's init.
        train: ``(inputs, targets)`` tensors, or a DataLoader / re-iterable of ``(inputs, targets)`` batches.
        loss_fn: ``loss_fn(outputs, targets)`` -> a scalar tensor (e.g. ``nn.CrossEntropyLoss()``).
        val: optional held-out data, in either form of ``train``: ``val_loss`` every ``eval_every`` steps.
        metric: ``"accuracy"`` (argmax over dim 1 against class indices) or a function ``(outputs,
            targets)`` -> the fraction correct; stored as ``val_acc``. Needs ``val``.
        batch_size: minibatch size for tensor data (``--batch-size`` overrides it).
        eval_every: steps between evaluations of ``val``.
        activation: the model's nonlinearity, for the gains of ``--init`` schemes.
        classes: number of classes of class-index targets (lets ``--loss`` take a one-hot loss).
    """

    model: Callable[[], nn.Module]
    train: Any
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    val: Any = None
    metric: str | Callable | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    eval_every: int | None = 10
    activation: str = "relu"
    classes: int | None = None
    name: str = "model"
    params: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        if isinstance(self.model, nn.Module) or not callable(self.model):
            raise OptbenchError(
                "ModelProblem(model=...) takes a function that builds the model (model=lambda: MyNet()), "
                "so that each run starts from its own seed's init"
            )
        if not callable(self.loss_fn):
            raise OptbenchError(f"ModelProblem(loss_fn=...) must be callable, got {self.loss_fn!r}")
        if self.metric is not None and self.metric != "accuracy" and not callable(self.metric):
            raise OptbenchError(f"ModelProblem(metric=...) is 'accuracy' or a function, got {self.metric!r}")
        if self.metric is not None and self.val is None:
            raise OptbenchError("ModelProblem(metric=...) needs val=(inputs, targets) or a DataLoader")
        if self.val is None:
            self.eval_every = None

    # ------------------------------------------------------------------------------------- building a run

    def for_run(
        self, name: str, *, init: str, loss: str, device: str, seed: int, steps: int, batch_size: int | None
    ) -> ModelProblem:
        """This run's problem: a copy of the recipe with its model and batches built (the recipe itself is
        left as it was, so a factory may return the same one every time)."""
        run = copy.copy(self)
        run.name = name
        run._build(init, loss, device, seed, steps, batch_size)
        return run

    def _build(self, init: str, loss: str, device: str, seed: int, steps: int, batch_size: int | None):
        from optbench.registry.inits import apply_init

        torch.manual_seed(seed)
        module = self.model()
        if not isinstance(module, nn.Module):
            raise OptbenchError(
                f"problem {self.name!r}: model() returned {type(module).__name__}, not a Module"
            )
        if init != "default":
            apply_init(module, init, self.activation)
        self.module = module.to(device)
        self.params = list(self.module.parameters())
        if not self.params:
            raise OptbenchError(f"problem {self.name!r}: the model has no parameters")
        self.device = device
        self.criterion, self.target_kind = self._criterion(loss)
        self.batches = _Batches(self.train, batch_size or self.batch_size, steps, seed, device)
        self._step, self._batch = -1, None

    def _criterion(self, loss: str):
        if loss == CUSTOM_LOSS:
            criterion = self.loss_fn
        else:
            from optbench.registry.losses import make_loss

            criterion, kind = make_loss(loss)
            if kind == "dense" and self.classes:
                return criterion.to(self.device), "one-hot"
            return criterion.to(self.device), kind
        if isinstance(criterion, nn.Module):
            criterion.to(self.device)
        return criterion, "as given"

    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        if self.target_kind == "one-hot" and y.dtype in (torch.int64, torch.int32):
            return torch.nn.functional.one_hot(y.long(), self.classes).float()
        return y

    # --------------------------------------------------------------------------------------- the protocol

    def param_groups(self, lr: float, head_lr_scale: float = 1.0, freeze: int = 0) -> list[dict]:
        if head_lr_scale != 1.0 or freeze:
            raise NotApplicable(
                f"problem {self.name!r}: --head-lr-scale/--freeze apply to the built-in MLP problems"
            )
        return [{"params": self.params, "lr": lr}]

    def loss(self, step: int) -> torch.Tensor:
        if step != self._step:  # LBFGS evaluates the same step again: the same batch
            self._step, self._batch = step, self.batches.at(step)
        x, y = self._batch
        return self.criterion(self.module(x), self._targets(y))

    def sharpness_loss(self):
        """The training loss on step 0's batch (tensor data: its first ``SHARPNESS_ROWS`` rows instead), as a
        pure function of the trainable parameters, with the model in ``eval()`` mode: dropout off and
        BatchNorm on its running statistics, so that the surface is one deterministic function and measuring
        it changes no buffer and draws no random number of the run."""
        if self.batches.index is not None:
            x, y = self.batches.x[:SHARPNESS_ROWS], self.batches.y[:SHARPNESS_ROWS]
        else:  # a loader's batch 0: taken now and kept for step 0, so the run sees the same batches
            if self._step != 0:
                self._step, self._batch = 0, self.batches.at(0)
            x, y = self._batch
        y = self._targets(y)
        names = [name for name, p in self.module.named_parameters() if p.requires_grad]

        def loss_of(params):
            was_training = self.module.training
            self.module.eval()
            try:
                out = torch.func.functional_call(self.module, dict(zip(names, params, strict=True)), (x,))
            finally:
                self.module.train(was_training)
            return self.criterion(out, y)

        return loss_of

    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Loss and metric over ``val`` (``model.eval()``, no gradients); over several batches, their means
        weighted by the batch sizes."""
        was_training = self.module.training
        self.module.eval()
        parts = []  # (rows, loss, metric or None) per batch
        try:
            with torch.no_grad():
                for x, y in _pairs(self.val, self.device):
                    out = self.module(x)
                    metric = _metric(self.metric, out, y) if self.metric is not None else None
                    parts.append((len(y), self.criterion(out, self._targets(y)).float(), metric))
        finally:
            self.module.train(was_training)
        if not parts:
            raise OptbenchError(f"problem {self.name!r}: the validation data is empty")
        if len(parts) == 1:
            return parts[0][1], parts[0][2]
        rows = sum(n for n, _, _ in parts)
        loss = sum(n * value for n, value, _ in parts) / rows
        metric = sum(n * m for n, _, m in parts) / rows if self.metric is not None else None
        return loss, metric


def _metric(metric, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if metric == "accuracy":
        return (out.argmax(1) == y).float().mean()
    return torch.as_tensor(metric(out, y), dtype=torch.float32)


def _is_pair(data) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data)


def _to(batch, device: str) -> tuple:
    try:
        x, y = batch
    except (TypeError, ValueError):
        raise OptbenchError(
            f"a training or validation batch must be a pair (inputs, targets), got {type(batch).__name__}"
        ) from None
    return x.to(device), y.to(device)


def _pairs(data, device: str) -> Iterator[tuple]:
    """The batches of validation data: one pair of tensors, or each batch of a loader."""
    if _is_pair(data):
        yield _to(data, device)
        return
    for batch in data:
        yield _to(batch, device)


class _Batches:
    """Step t's training batch on the device, the same for the same seed and step on every run."""

    def __init__(self, data, batch_size: int, steps: int, seed: int, device: str):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptbenchError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        self.device = device
        if _is_pair(data):
            x, y = data
            if len(x) != len(y) or not len(x):
                raise OptbenchError(
                    f"training data: {len(x)} inputs and {len(y)} targets (must be equal, > 0)"
                )
            self.x, self.y = x.to(device), y.to(device)
            self.index = minibatch_index(len(x), batch_size, steps, seed).to(device)
            return
        if not isinstance(data, Iterable) or isinstance(data, Iterator):
            raise OptbenchError(
                "ModelProblem(train=...) is (inputs, targets) tensors or a DataLoader (re-iterable: a "
                f"generator runs out after one epoch), got {type(data).__name__}"
            )
        self.index = None
        self.epochs = _epochs(data, seed)
        self.next_step = 0

    def at(self, step: int) -> tuple:
        if self.index is not None:
            rows = self.index[step]
            return self.x[rows], self.y[rows]
        if step != self.next_step:
            raise OptbenchError(
                f"batches of a DataLoader are taken in order: step {step} after {self.next_step}"
            )
        self.next_step += 1
        return _to(next(self.epochs), self.device)


def _epochs(loader: Iterable, seed: int) -> Iterator:
    """The loader's batches, epoch after epoch; each epoch begins under a torch RNG seeded from ``seed``."""
    seeds = torch.Generator().manual_seed(seed)
    for epoch in itertools.count():
        epoch_seed = int(torch.randint(0, 2**62, (), generator=seeds))
        batches, first = _start_epoch(loader, epoch_seed)
        if first is None:
            raise OptbenchError(f"the training data yielded no batch (epoch {epoch})")
        yield first
        yield from batches


def _start_epoch(loader: Iterable, epoch_seed: int):
    """(the epoch's iterator, its first batch): a sampler draws its order when the first batch is taken,
    and workers their seeds when the iterator is made, so both happen under the seeded RNG. A loader (or
    sampler) with a generator of its own gets a seeded one for the epoch (the sampler keeps it to the
    epoch's end); the user's generator is never drawn from."""
    holders = [h for h in (loader, getattr(loader, "sampler", None)) if _own_generator(h) is not None]
    saved = [h.generator for h in holders]
    epoch_generator = torch.Generator().manual_seed(epoch_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(epoch_seed)
        try:
            for holder in holders:
                holder.generator = epoch_generator
            batches = iter(loader)
            first = next(batches, None)
        finally:
            for holder, generator in zip(holders, saved, strict=True):
                holder.generator = generator
    return batches, first


def _own_generator(holder) -> torch.Generator | None:
    generator = getattr(holder, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


# ----------------------------------------------------------------------------- registering from Python


def register_problem(name: str, factory: Callable[..., Any], summary: str | None = None) -> str:
    """Make ``factory`` (a function returning a ``ModelProblem``) the problem ``name``, in this process:
    a grid axis value, an lr-find target, a ``bench``-free Python run. Registering a name again replaces
    the user's earlier factory (a built-in name is refused). Returns the name.

    >>> optbench.register_problem("my-problem", my_problem)  # doctest: +SKIP
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise OptbenchError(f"problem name {name!r}: letters, digits, '-', '_' and '.', no ':'")
    if not callable(factory):
        raise OptbenchError(f"register_problem({name!r}, ...): the factory must be callable")
    if name in problems and not problems.get(name).meta.get("user"):
        raise OptbenchError(f"problem {name!r} is built in; choose another name")
    entry = user_entry(name, factory, summary)
    problems.add(name, entry.factory, entry.summary, replace=True, **entry.meta)
    _forget_checks()
    return name


def registered_problems() -> dict[str, tuple[Callable, str]]:
    """The problems registered from Python in this process, name -> (the user's factory, summary): what
    a grid ships to its workers."""
    return {e.name: (e.factory.factory, e.summary) for e in problems.entries() if e.meta.get("user")}


def travels(factory) -> bool:
    """Whether a spawned worker can have ``factory``: it pickles (by reference) and, defined in
    ``__main__``, that is a script the worker re-imports (not an interactive session)."""
    import pickle
    import sys

    try:
        pickle.dumps(factory)
    except Exception:  # noqa: BLE001 - a lambda, a nested function: pickle's own reasons vary
        return False
    main = sys.modules.get("__main__")
    return getattr(factory, "__module__", None) != "__main__" or bool(getattr(main, "__file__", None))


def adopt(shipped: tuple) -> None:
    """In a worker: register the problems its grid's process registered (``travels``), once."""
    for name, factory, summary in shipped:
        if name not in problems or problems.get(name).factory.factory is not factory:
            register_problem(name, factory, summary)


def _forget_checks() -> None:
    """A name registered again must be checked again: clear what was cached about problem specs."""
    from optbench.registry import limits, standins, validate

    for cached in (validate.check_problem_arguments, standins._built, limits.mlp_sizes):
        with contextlib.suppress(AttributeError):
            cached.cache_clear()
    validate._canonical_strings.cache_clear()
