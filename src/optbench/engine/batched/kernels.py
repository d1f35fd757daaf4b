"""The exactness switch: how a batch computes its products, activations and losses, in one place.

Two modes (``Kernels(exact=...)``):

- **exact** (the CPU default): every cell gets the float32 bits the reference engine gets. A product, an
  activation or a log-softmax runs batched only where that rounds like the reference's per-cell call, which
  is decided by a *probe*: both forms run once on random data of the shape, on the batch's device, and the
  batched one is taken only if it is bit-identical (verdicts cached per site, device, threads and shape in
  ``_EXACT``). Elsewhere the work runs cell by cell, as the reference does it. Loss values come from each
  cell's own call of the loss module.
- **fast** (the CUDA default; on CPU on request): every product, activation and loss is batched, with no
  probe and no per-cell fallback: one ``bmm`` per product, activations on the whole stack, the loss module
  vectorized over cells with ``torch.func.vmap``. The engines then agree to rounding (docs/batched-engine.md
  derives the tolerance from torch's own foreach / fused / for-loop implementations).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EXACT, FAST = "exact", "fast"
MODES = ("auto", EXACT, FAST)  # auto: exact on CPU, fast on any other device


def resolve(mode: str, device: str) -> str:
    """The mode a batch on ``device`` runs: ``auto`` is exact on CPU and fast elsewhere.

    Exact on another device is refused: there torch.optim itself takes other kernels (foreach on CUDA), so
    no engine can promise the reference's bits; ``ValueError`` names the device.
    """
    if mode not in MODES:
        raise ValueError(f"unknown exactness {mode!r}; valid: {', '.join(MODES)}")
    on_cpu = torch.device(device).type == "cpu"
    if mode == "auto":
        return EXACT if on_cpu else FAST
    if mode == EXACT and not on_cpu:
        raise ValueError(
            f"exactness 'exact' is a CPU contract: on {device} torch.optim takes its foreach kernels, so no "
            "engine gives the reference's bits there; use auto or fast"
        )
    return mode


# Activations whose kernels give an element the same bits wherever it sits in the tensor: the piecewise
# linear ones on any device (a comparison and at most one multiply), and tanh where a probe on the device
# finds it so (on CPU its vectorised routine handles the tail elements too). ATen's CPU kernels compute the
# last n % (vector width) elements of sigmoid, SiLU, ELU, SELU and GELU with the scalar formula, which
# differs from the vectorised one in the last bit for a few % of inputs, so stacking cells would move a
# cell's tail; in exact mode those run on each cell's own [rows, width] slice, as in the reference.
ELEMENTWISE = tuple(
    getattr(torch.nn, name)
    for name in ("Identity", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "SELU", "GELU", "SiLU", "ELU")
)
_PIECEWISE_LINEAR = (torch.nn.Identity, torch.nn.ReLU, torch.nn.LeakyReLU)
_POSITION_INDEPENDENT = (*_PIECEWISE_LINEAR, torch.nn.Tanh)

# The four products of a Linear layer, batched over C cells, each with the per-cell call the reference
# engine makes (F.linear -> addmm forward; AddmmBackward0: grad·W, gradᵀ·x, and the bias grad summed over
# rows). Both forms compute the same math; whether they round alike depends on the BLAS kernel that the
# shapes select (MKL takes other paths for a 1-column output, ATen a naive loop for tiny products).
SITES: dict[str, tuple[Callable, Callable]] = {
    "linear": (
        lambda x, w, b, out=None: torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2), out=out),
        lambda x, w, b: torch.nn.functional.linear(x, w, b),
    ),
    "grad_input": (
        lambda g, w, out=None: torch.bmm(g, w, out=out),
        lambda g, w: g.mm(w),
    ),
    "grad_weight": (
        lambda g, x, out=None: torch.bmm(g.transpose(1, 2), x, out=out),
        lambda g, x: g.t().mm(x),
    ),
    "grad_bias": (
        lambda g, out=None: torch.sum(g, 1, out=out),
        lambda g: g.sum(0, keepdim=True).view(g.shape[1]),
    ),
}
# Probe verdicts by (site, device, CPU threads, shapes): a kernel that matches on one device (or thread
# count, which changes how ATen splits the work) proves nothing about another.
_EXACT: dict[tuple, bool] = {}

# Exactness probes try PROBE_CELLS cells' worth of random data: for some shapes (a single row, 2-3 inputs,
# a few classes) the batched kernel rounds like the per-cell one only on part of the data, so one small
# draw can pass by chance. A draw that already compares PROBE_ELEMENTS results is evidence enough (the
# per-cell reference side costs ~0.1 s a round at 64 cells of 64 x 64).
PROBE_CELLS = 512
PROBE_ELEMENTS = 1 << 17
ALIGN_BYTES = 64  # torch's allocators start every tensor on a 64-byte (CUDA: 512-byte) boundary


class Kernels:
    """A batch's products, activations and losses, exact (probed, per cell where needed) or fast."""

    def __init__(self, exact: bool):
        self.exact = exact

    @property
    def mode(self) -> str:
        return EXACT if self.exact else FAST

    def product(self, site: str, *args: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """One of ``SITES`` for all cells: batched, or (exact mode, where the probe says so) per cell."""
        batched, per_cell = SITES[site]
        if not self.exact or _product_is_exact(site, args):
            return batched(*args) if out is None else batched(*args, out=out)
        return torch.stack([per_cell(*_cell(args, c)) for c in range(args[0].shape[0])], out=out)

    def activation(self, layer: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
        """The problem's own activation module on the stack [C, rows, width] (exact mode: per cell where
        the stack would round a cell otherwise, ``_stacks_like_cells``)."""
        if type(layer) is torch.nn.ReLU:
            return torch.relu_(h)  # same values and backward (from the result) as ReLU
        if not self.exact or _stacks_like_cells(layer, h):
            return layer(h)
        return torch.stack([layer(cell) for cell in h.unbind(0)])

    def train_losses(
        self, module, out: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-cell losses [C] to differentiate, their values as the reference computes them)."""
        if not self.exact:
            losses = torch.func.vmap(module)(out, target)
            return losses, losses.detach()
        if not is_plain_cross_entropy(module):
            losses = torch.stack([module(o, y) for o, y in zip(out.unbind(0), target.unbind(0), strict=True)])
            return losses, losses.detach()
        # F.cross_entropy = nll_loss(log_softmax(x)). log_softmax is row-wise, and the gradient of a mean
        # nll is -1/rows at each target whatever the order of the sum; only the value is reduced per cell.
        log_p = _log_softmax_classes(out)  # [C, classes, rows]
        nll = torch.nn.functional.nll_loss(log_p, target, reduction="none")  # [C, rows]
        return nll.mean(1), _cell_values(module, log_p.detach(), target.unbind(0), log_probs=True)

    def eval_losses(self, module, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each cell's loss [C] on the held-out split (``target`` shared by every cell), without gradients."""
        with torch.no_grad():
            if not self.exact:
                return torch.func.vmap(module, in_dims=(0, None))(out, target)
            if is_plain_cross_entropy(module):
                scores = _log_softmax_classes(out)
                return _cell_values(module, scores, [target] * out.shape[0], log_probs=True)
            return _cell_values(module, out, [target] * out.shape[0], log_probs=False)


def is_plain_cross_entropy(module) -> bool:
    return (
        type(module) is torch.nn.CrossEntropyLoss
        and module.weight is None
        and module.reduction == "mean"
        and module.label_smoothing == 0.0
        and module.ignore_index < 0
    )


def clear_verdicts() -> None:
    """Forget every probe verdict (tests: probe afresh, as a new process would)."""
    _EXACT.clear()


def _cell_values(module, scores: torch.Tensor, targets, *, log_probs: bool) -> torch.Tensor:
    """Each cell's loss value from its own call, as the reference makes it (plain cross-entropy: the nll of
    the log-probabilities [C, classes, rows]; else the loss module on the outputs [C, rows, out])."""
    with torch.no_grad():
        if log_probs:  # one transposing copy, then [rows, classes] per cell
            rows = scores.transpose(1, 2).contiguous()
            return torch.stack(
                [torch.nn.functional.nll_loss(lp, y) for lp, y in zip(rows.unbind(0), targets, strict=True)]
            )
        return torch.stack([module(o, y) for o, y in zip(scores.unbind(0), targets, strict=True)])


# ------------------------------------------------------------------------------------------------ probes


def _probe_rounds(cells: int, elements_per_draw: int) -> int:
    return max(1, min(-(-PROBE_CELLS // max(1, cells)), -(-PROBE_ELEMENTS // max(1, elements_per_draw))))


def _probe_generator(device: torch.device) -> torch.Generator:
    """A fresh generator on the device under test: a verdict must not depend on what ran before, and the
    random data must be made where the kernels it judges run."""
    return torch.Generator(device=device).manual_seed(0)


def _probe_like(a: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random data with a's shape, strides and device (stride 0 stays a broadcast)."""
    if a.stride(0) == 0:
        return torch.randn(a.shape[1:], generator=generator, device=a.device).expand(a.shape)
    return torch.empty_strided(a.shape, a.stride(), device=a.device).normal_(generator=generator)


def _product_is_exact(site: str, args: tuple[torch.Tensor, ...]) -> bool:
    """Does the batched form of ``site`` give every cell the per-cell call's bits for these shapes?"""
    device = args[0].device
    key = (site, str(device), torch.get_num_threads(), *((tuple(a.shape), a.stride()) for a in args))
    exact = _EXACT.get(key)
    if exact is None:
        batched, per_cell = SITES[site]
        generator = _probe_generator(device)
        rounds, tried = 1, 0
        while tried < rounds:
            probe = [_probe_like(a, generator) for a in args]
            expected = torch.stack([per_cell(*_cell(probe, c)) for c in range(args[0].shape[0])])
            exact = torch.equal(batched(*probe), expected)
            if not exact:
                break
            rounds, tried = _probe_rounds(args[0].shape[0], expected.numel()), tried + 1
        _EXACT[key] = exact
    return exact


def _cell(args: tuple[torch.Tensor, ...] | list[torch.Tensor], c: int) -> list[torch.Tensor]:
    """Cell c's operands as the reference holds them: its parameters and activations are tensors of their
    own, whose data start on an allocator boundary. A view into the stack may start anywhere, and BLAS may
    take another kernel for it (MKL on AVX2 rounds small products otherwise for an operand that is not
    16-byte aligned), so a view that starts off the boundary is copied."""
    views = [a[c] for a in args]
    return [v if v.data_ptr() % ALIGN_BYTES == 0 else v.clone() for v in views]


def _log_softmax_classes(out: torch.Tensor) -> torch.Tensor:
    """log_softmax over the classes of [C, rows, classes] logits, returned as [C, classes, rows].

    The reference takes it over the last dim of [rows, classes]; ATen's kernel for a last dim of a few
    classes is slow (~60 ns a row), the one for an inner dim is ~15x faster. Used where both give the same
    bits, forward and backward, for this shape, tried on random data (at 50 or 100 rows of 3 classes the
    two kernels differ in only a fraction of the rows).
    """

    def trial(gen: torch.Generator) -> bool:
        with torch.enable_grad():  # the first call may come from the evaluation, under no_grad
            x = torch.randn(out.shape, generator=gen, device=out.device) * 4
            grad = torch.randn(out.shape, generator=gen, device=out.device)
            want = torch.stack([torch.log_softmax(row, 1) for row in x])
            want_grad = torch.stack(
                [
                    torch._log_softmax_backward_data(g, y, 1, torch.float32)
                    for g, y in zip(grad, want, strict=True)
                ]
            )
            leaf = x.requires_grad_(True)
            got = torch.log_softmax(leaf.transpose(1, 2).contiguous(), 1).transpose(1, 2)
            (got_grad,) = torch.autograd.grad(got, leaf, grad)
        return torch.equal(got, want) and torch.equal(got_grad, want_grad)

    if _verdict("log_softmax", out, trial):
        return torch.log_softmax(out.transpose(1, 2).contiguous(), 1)
    return torch.log_softmax(out, 2).transpose(1, 2)


def _stacks_like_cells(layer: torch.nn.Module, h: torch.Tensor) -> bool:
    """Does the activation on the stack [C, rows, width] give every cell the bits it gets on its own slice,
    forward and backward? Piecewise-linear ones always do; tanh where random data of h's shape, on h's
    device, says so (a verdict per shape); the rest never do (``_POSITION_INDEPENDENT``).
    """
    if type(layer) in _PIECEWISE_LINEAR:
        return True
    if type(layer) not in _POSITION_INDEPENDENT:
        return False

    def trial(gen: torch.Generator) -> bool:
        with torch.enable_grad():  # the evaluation runs under no_grad
            x = (torch.randn(h.shape, generator=gen, device=h.device) * 4).requires_grad_(True)
            grad = torch.randn(h.shape, generator=gen, device=h.device)
            cells = [cell.detach().requires_grad_(True) for cell in x.unbind(0)]
            want = [layer(cell) for cell in cells]
            want_grad = torch.autograd.grad(want, cells, list(grad.unbind(0)))
            got = layer(x)
            (got_grad,) = torch.autograd.grad(got, x, grad)
        return torch.equal(got, torch.stack(want)) and torch.equal(got_grad, torch.stack(want_grad))

    return _verdict(type(layer).__name__, h, trial)


def _verdict(name: str, like: torch.Tensor, trial: Callable[[torch.Generator], bool]) -> bool:
    """Cached per (name, device, threads, shape of ``like``): does ``trial`` hold on every one of the
    probe's random draws (``_probe_rounds``), from a fresh generator on ``like``'s device?"""
    key = (name, str(like.device), torch.get_num_threads(), tuple(like.shape))
    exact = _EXACT.get(key)
    if exact is None:
        gen = _probe_generator(like.device)
        exact = all(trial(gen) for _ in range(_probe_rounds(like.shape[0], like.numel())))  # stops at a miss
        _EXACT[key] = exact
    return exact
