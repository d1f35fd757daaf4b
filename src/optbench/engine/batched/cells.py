"""A batch's cells as stacked tensors: the trainable parameters of C cells as one flat tensor [C, N].

- ``ToyBatch``: the points [C, d]; the loss is the problem's own function (``problems.ToyProblem.fn``,
  written over the last dimension), and autograd of the sum of the C losses gives each cell its own
  gradient exactly (the cells share nothing: d(sum)/dx_c = dloss_c/dx_c).
- ``MLPBatch``: every cell's problem is built by ``problems.problem_of`` exactly as the reference engine
  builds it (same seed, init, minibatch order), on the CPU, and the stacks are moved to the batch's device
  once; the network runs layer by layer on [C, rows, width] activations with the batch's ``Kernels``.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import torch

from optbench.engine.batched.kernels import ELEMENTWISE, Kernels
from optbench.registry.problems import MLPProblem, problem_of, problems
from optbench.spec import RunConfig, parse_spec


class Fallback(Exception):
    """These cells go to the reference engine."""


class CellBatch:
    """The trainable parameters of C cells as one flat tensor [C, N] (row c: cell c's parameters)."""

    flat: torch.Tensor
    device: torch.device
    columns: list[tuple[int, int, int]]  # (param group, first column, end column), groups in column order
    coords = False  # toy problems: flat is the point [C, d]
    eval_every: int | None = None
    batch_index: torch.Tensor | None = None  # MLPs: [T, C, B] the rows of each step's minibatch
    failed: set[int]

    def group_lrs(self, lr: float) -> list[float]:
        """The lr of each param group the problem makes for a cell of this lr (as engine.run makes them)."""
        raise NotImplementedError

    def select_cells(self, keep: list[int]) -> None:
        """Stack the cells with these indices into the config list, in this order (before the loop)."""
        raise NotImplementedError

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these rows of the batch (dropping diverged cells)."""
        raise NotImplementedError

    def warned_cells(self) -> dict[int, list[str]]:
        """Cells whose own problem warned while it was built: their warnings."""
        return {}

    def loss_and_grad(self, index: torch.Tensor | None, grad_out: torch.Tensor) -> torch.Tensor:
        """This step's losses [C] (the values the reference records); the gradient [C, N] goes into
        ``grad_out``. ``index`` [C, B]: this step's minibatch rows (MLPs)."""
        raise NotImplementedError

    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


def build(cfg: RunConfig, device: str | None = None):
    """The cell's problem as engine.run builds it (seed torch first: the init draws from it)."""
    return problem_of(cfg, device)


def factory_kwargs(problem: str) -> dict:
    """The problem factory's keyword defaults (a data set's sizes: ``data_sizes``) overridden by the spec's
    arguments."""
    spec = parse_spec(problem, what="problem")
    entry = problems.get(spec.name)
    params = inspect.signature(entry.factory).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **entry.meta.get("data_sizes", {}), **spec.kw}


class ToyBatch(CellBatch):
    coords = True

    def __init__(self, cfgs: list[RunConfig]):
        cfg = cfgs[0]
        try:  # the start point comes from the problem spec, the same for every cell (no RNG involved)
            self.problem = build(cfg)
            self.problem.param_groups(cfg.lr, cfg.head_lr_scale, cfg.freeze)
        except Exception as err:  # noqa: BLE001 - the reference engine records it
            raise Fallback from err
        self.fn = self.problem.fn
        self.x0 = self.problem.x.detach()
        self.device = self.x0.device
        self.columns = [(0, 0, self.x0.numel())]
        self.failed = set()

    def group_lrs(self, lr):
        return [g["lr"] for g in self.problem.param_groups(lr)]

    def select_cells(self, keep):
        self.flat = self.x0.expand(len(keep), -1).clone()

    def select_rows(self, rows):
        self.flat = self.flat.index_select(0, rows)

    def loss_and_grad(self, index, grad_out):
        x = self.flat.detach().requires_grad_(True)
        losses = self.fn(x)
        (grad,) = torch.autograd.grad(losses.sum(), x)  # cells are independent: d(sum)/dx_c = dloss_c/dx_c
        grad_out.copy_(grad)
        return losses.detach()


class MLPBatch(CellBatch):
    """The cells' MLPs, run layer by layer on stacked weights [C, out, in] (views into ``flat``).

    Linear layers run through ``BatchedLinear``, activations are the problem's own modules, the loss is the
    problem's loss module; ``kernels`` decides how each of them is batched (exact or fast).
    """

    def __init__(self, cfgs: list[RunConfig], kernels: Kernels):
        self.kernels = kernels
        self.device = torch.device(cfgs[0].device)
        self.problems: dict[int, MLPProblem] = {}
        self.warnings: dict[int, list[str]] = {}
        self.failed = set()
        for i, cfg in enumerate(cfgs):  # each cell's model, init and batch order exactly as engine.run's
            self._add(i, cfg)
        if not self.problems:
            raise Fallback
        first = next(iter(self.problems.values()))
        if not all(isinstance(m, (torch.nn.Linear, *ELEMENTWISE)) for m in first.model):
            raise Fallback
        if first.batch_index.shape[1] == 1:  # e.g. n_train=1: a single row (see unsupported_reason)
            raise Fallback
        self.template = first
        self.layers = list(first.model)
        self.loss_module, self.eval_every = first.loss_module.to(self.device), first.eval_every
        self.x_train, self.y_train = first.x_train.to(self.device), first.y_train.to(self.device)
        self.x_val, self.y_val = first.x_val.to(self.device), first.y_val.to(self.device)
        self.val_labels = first.val_labels.to(self.device) if first.val_labels is not None else None
        cfg = cfgs[min(self.problems)]
        groups = first.param_groups(cfg.lr, cfg.head_lr_scale, cfg.freeze)  # sets the frozen layers
        named = list(first.model.named_parameters())
        self.trainable = [(name, p.shape) for name, p in named if p.requires_grad]  # engine: .trainable
        self.frozen_names = [name for name, p in named if not p.requires_grad]
        self.offsets = np.cumsum([0] + [shape.numel() for _, shape in self.trainable]).tolist()
        self.columns = _group_columns(groups, first.trainable, self.offsets)
        self.head_lr_scale, self.freeze = cfg.head_lr_scale, cfg.freeze
        self._buffers: dict[tuple, torch.Tensor] = {}

    def _add(self, i: int, cfg: RunConfig) -> None:
        """Build cell i's problem on the CPU (the reference builds it there too, then moves it)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                torch.manual_seed(cfg.seed)
                problem = build(cfg, device="cpu")
                problem.param_groups(cfg.lr, cfg.head_lr_scale, cfg.freeze)
            except Exception:  # noqa: BLE001 - the reference engine records it
                self.failed.add(i)
                return
        self.problems[i] = problem
        self.warnings[i] = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))

    def warned_cells(self):
        return {i: w for i, w in self.warnings.items() if w}

    def group_lrs(self, lr):
        return [g["lr"] for g in self.template.param_groups(lr, self.head_lr_scale, self.freeze)]

    def select_cells(self, keep):
        models = [dict(self.problems[i].model.named_parameters()) for i in keep]
        flat = torch.cat(
            [torch.stack([m[name].detach().reshape(-1) for m in models]) for name, _ in self.trainable], 1
        )
        self.flat = flat.to(self.device)
        self.frozen = {
            name: torch.stack([m[name].detach() for m in models]).to(self.device)
            for name in self.frozen_names
        }
        index = torch.stack([self.problems[i].batch_index for i in keep], 1).contiguous()  # [T, C, B]
        self.batch_index = index.to(self.device)
        self.problems, self.template = {}, None  # the stacked copies are all that is needed from here on

    def select_rows(self, rows):
        self.flat = self.flat.index_select(0, rows)
        self.frozen = {name: w.index_select(0, rows) for name, w in self.frozen.items()}
        self.batch_index = self.batch_index.index_select(1, rows)
        self._buffers.clear()  # sized for the old rows

    def tensors(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The trainable tensors of every cell, [C, *shape], as views into ``flat``."""
        cells = flat.shape[0]
        return [
            flat[:, a:b].view(cells, *shape)
            for (_, shape), a, b in zip(self.trainable, self.offsets[:-1], self.offsets[1:], strict=True)
        ]

    def _weights(self, leaves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**self.frozen, **dict(zip((name for name, _ in self.trainable), leaves, strict=True))}

    def _forward(
        self, weights: dict[str, torch.Tensor], x: torch.Tensor, training: bool = True
    ) -> torch.Tensor:
        """All cells' outputs [C, rows, out]; x is [C, rows, in], or [rows, in] shared by every cell.

        Each Linear writes into a buffer kept from the previous call of the same shape (train and eval
        have their own): fresh multi-MB blocks every step would cost page faults on every first touch,
        and a captured CUDA graph needs its outputs at fixed addresses.
        """
        h = x
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, torch.nn.Linear):
                h = self.kernels.activation(layer, h)
                continue
            w, b = weights[f"{i}.weight"], weights[f"{i}.bias"]
            h = h.expand(w.shape[0], *h.shape) if h.dim() == 2 else h
            key = (training, i, h.shape[0], h.shape[1])
            if key not in self._buffers:
                self._buffers[key] = torch.empty(h.shape[0], h.shape[1], w.shape[1], device=w.device)
            out = self._buffers[key].detach_()  # last step's graph is gone; drop its history
            if training:
                h = BatchedLinear.apply(h, w, b, out, self.kernels)
            else:
                h = self.kernels.product("linear", h, w, b, out=out)
        return h

    def loss_and_grad(self, index, grad_out):
        x, y = self.x_train[index], self.y_train[index]
        leaves = [w.detach().requires_grad_(True) for w in self.tensors(self.flat)]
        out = self._forward(self._weights(leaves), x)
        differentiable, values = self.kernels.train_losses(self.loss_module, out, y)
        grads = torch.autograd.grad(differentiable.sum(), leaves)
        torch.cat([g.reshape(g.shape[0], -1) for g in grads], 1, out=grad_out)
        return values

    def evaluate(self):
        with torch.no_grad():
            out = self._forward(self._weights(self.tensors(self.flat)), self.x_val, training=False)
            val_loss = self.kernels.eval_losses(self.loss_module, out, self.y_val)
            val_acc = None
            if self.val_labels is not None:
                val_acc = (out.argmax(2) == self.val_labels).float().mean(1)
        return val_loss, val_acc


def _group_columns(groups: list[dict], trainable: list[torch.Tensor], offsets: list[int]) -> list[tuple]:
    """(group, first column, end column) per param group; each group must be one run of columns."""
    group_of = {id(p): g for g, group in enumerate(groups) for p in group["params"]}
    columns: list[tuple[int, int, int]] = []
    for k, p in enumerate(trainable):
        g = group_of[id(p)]
        if columns and columns[-1][0] == g:
            columns[-1] = (g, columns[-1][1], offsets[k + 1])
        else:
            columns.append((g, offsets[k], offsets[k + 1]))
    if len({g for g, _, _ in columns}) != len(columns):
        raise Fallback
    return columns


class BatchedLinear(torch.autograd.Function):
    """y[c] = x[c] @ W[c]ᵀ + b[c] for every cell, into ``out``, with the kernels' products."""

    @staticmethod
    def forward(ctx, x, weight, bias, out, kernels):
        ctx.save_for_backward(x, weight)
        ctx.kernels = kernels
        ctx.mark_dirty(out)  # the result is written into ``out``, a buffer reused from step to step
        return kernels.product("linear", x, weight, bias, out=out)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        kernels = ctx.kernels
        grad = grad.contiguous()
        grad_x = kernels.product("grad_input", grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = kernels.product("grad_weight", grad, x) if ctx.needs_input_grad[1] else None
        grad_b = kernels.product("grad_bias", grad) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None
