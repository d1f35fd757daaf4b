"""Update rules of the batched engine: torch.optim's single-tensor update, applied to stacked parameters.

The batched engine keeps all trainable parameters of C cells in one flat float32 tensor [C, N] (cell c's
parameters are row c) and cuts it into ``Block``s: a run of cells that take the same code path (momentum
on or off, weight decay on or off, ...) times the columns of one param group. Within a block every
hyperparameter is a float32 tensor [cells, 1] that broadcasts along the row.

Each rule mirrors the ``foreach=False`` path of its torch optimizer (``torch/optim/sgd.py``
``_single_tensor_sgd`` etc., the path torch takes for CPU tensors) operation for operation, so that the
float32 results are the same bit for bit on CPU. The rules only combine the tensors they are given, so
they run on any device. On CUDA torch takes its foreach path by default, whose ``addcmul``/``addcdiv``
compute ``p + v·(x∘y)`` where a rule rounds ``v·x`` first: Adam, AdamW and RMSprop are expected to agree
with torch there to rounding, not bit for bit (SGD and Adagrad group alike; not yet verified on a GPU).
The CPU correspondences:

- ``p.add_(g, alpha=a)`` is one fused multiply-add in ATen; ``p.addcmul_(g, a_t)`` with a tensor ``a_t``
  is the same fused multiply-add, so it replaces every ``alpha=`` scalar that differs per cell.
- ``p.addcdiv_(x, y, value=v)`` computes ``p + (v·x)/y``; with a per-cell ``v`` it becomes
  ``p.addcdiv_(v_t * x, y)``, which rounds ``v·x`` at the same place (likewise ``addcmul_(x, x, value=v)``).
- Python-float arithmetic torch does on hyperparameters (``1 - beta1**step``, ``lr / bias_correction1``,
  ``1 - lr·weight_decay``) is done ahead of time in float64 for every step and cell (``Rule.tables``),
  then rounded to float32 once, as ATen rounds a Python scalar.
- Branches torch takes per parameter group (``if momentum != 0``, ``if weight_decay != 0``) are
  ``Rule.switches``; the engine sorts cells so that each block takes one branch (no ``torch.where``).

``tests/test_batched.py`` proves each rule equal to its torch optimizer on hypothesis-drawn
hyperparameters; a setting outside a rule's ``required`` values runs on the reference engine.

A new rule: subclass ``Rule``, list the param-group entries it reads, write ``tables``, ``switches``,
``state_names`` (and ``init_state`` if a state does not start at 0) and ``step`` after the torch source,
decorate it with ``@register``, and add it to the tests' strategies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from optbench.registry.optimizers import SGDL1L2

Tensor = torch.Tensor


@dataclass
class Block:
    """Cells that take the same branches x the columns of one param group, for the current step."""

    param: Tensor  # [cells, n] view into the flat parameters (updated in place)
    grad: Tensor  # [cells, n] the gradient of this step
    state: dict[str, Tensor]  # [cells, n] views into the flat optimizer state
    hp: dict[str, Tensor]  # this step's value of each of ``Rule.tables``, float32 [cells, 1]
    on: dict[str, bool]  # the block's switches (``Rule.switches``)
    first: bool  # the run's first step


class Rule:
    """One optimizer's update, batched over configs.

    ``reads``: the param-group entries the update uses (``betas`` is read as ``beta1``, ``beta2``);
    ``varying``: those a scheduler may change from step to step (the rest must stay constant);
    ``flags``: boolean entries that must be equal for every cell of a batch (part of the batch key);
    ``required``: entries that must hold one of these values (torch has other code paths for the rest).
    """

    name: str = ""
    torch_class: type = object
    reads: tuple[str, ...] = ("lr",)
    varying: tuple[str, ...] = ("lr",)
    flags: tuple[str, ...] = ()
    required: dict[str, tuple] = {
        "foreach": (None, False),
        "fused": (None, False),
        "differentiable": (False,),
        "capturable": (False,),
    }

    def unsupported(self, group: dict) -> str | None:
        """Why a param group (or an optimizer spec's keyword arguments) is outside the proven subset."""
        for key, allowed in self.required.items():
            if key in group and group[key] not in allowed:
                return f"{self.name}({key}={group[key]!r}) is not in the batched engine's proven subset"
        return None

    def tables(self, h: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
        """Float64 values [steps or 1, G, C] from the group entries ``h`` ([steps or 1, G, C]: 1 where an
        entry is constant over the run); a table that does not depend on the step may stay [1, G, C]."""
        raise NotImplementedError

    def switches(self, h: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The branches torch takes, as bool [steps or 1, G, C]; each must stay fixed over a run."""
        return {}

    def state_names(self, flags: dict[str, bool]) -> tuple[str, ...]:
        return ()

    def init_state(self, block: Block) -> None:
        """Set the initial state of a block (the engine allocates it as zeros)."""

    def step(self, b: Block, flags: dict[str, bool]) -> None:
        raise NotImplementedError


RULES: dict[str, Rule] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add one instance of the rule to ``RULES`` under its name."""
    RULES[cls.name] = cls()
    return cls


def _pow(base: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """``base ** exponent`` elementwise with Python floats (libm pow, as torch's Python-side math does;
    numpy's vectorised pow may round otherwise), computed once per distinct pair of values."""
    base, exponent = np.broadcast_arrays(np.asarray(base, np.float64), np.asarray(exponent, np.float64))
    bases, base_at = np.unique(base, return_inverse=True)
    exponents, exponent_at = np.unique(exponent, return_inverse=True)
    if bases.size * exponents.size <= 4 * base.size:  # a table of every pair is small: the usual case
        table = np.array([[b**e for e in exponents.tolist()] for b in bases.tolist()]).reshape(
            bases.size, exponents.size
        )
        return table[base_at.reshape(base.shape), exponent_at.reshape(base.shape)]
    cache: dict[tuple[float, float], float] = {}
    pairs = zip(base.ravel().tolist(), exponent.ravel().tolist(), strict=True)
    return np.array([cache.setdefault(k, k[0] ** k[1]) for k in pairs]).reshape(base.shape)


def _step_count(steps: int) -> np.ndarray:
    """torch's ``state['step']`` after its increment: 1.0, 2.0, ... as a [steps, 1, 1] table."""
    return np.arange(1, steps + 1, dtype=np.float64).reshape(-1, 1, 1)


def _decayed(b: Block, g: Tensor) -> Tensor:
    """``grad.add(param, alpha=weight_decay)`` where torch does it (weight_decay != 0)."""
    return torch.addcmul(g, b.param, b.hp["weight_decay"]) if b.on["weight_decay"] else g


# -------------------------------------------------------------------------------------------------- SGD


@register
class SGDRule(Rule):
    """torch.optim.SGD: ``g += wd·p``; ``buf = g`` (first step), else ``buf = m·buf + (1 - dampening)·g``;
    nesterov: ``g += m·buf`` else ``g = buf``; ``p -= lr·g``."""

    name = "sgd"
    torch_class = torch.optim.SGD
    reads = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    varying = ("lr", "momentum")
    flags = ("nesterov", "maximize")

    def tables(self, h, steps):
        return {
            "neg_lr": -h["lr"],
            "momentum": h["momentum"],
            "one_minus_dampening": 1 - h["dampening"],
            "weight_decay": h["weight_decay"],
        }

    def switches(self, h):
        return {"momentum": h["momentum"] != 0, "weight_decay": h["weight_decay"] != 0}

    def state_names(self, flags):
        return ("momentum_buffer",)

    def step(self, b, flags):
        g = -b.grad if flags["maximize"] else b.grad
        g = _decayed(b, g)
        if b.on["momentum"]:
            buf = b.state["momentum_buffer"]
            if b.first:
                buf.copy_(g)
            else:
                buf.mul_(b.hp["momentum"]).addcmul_(g, b.hp["one_minus_dampening"])
            g = torch.addcmul(g, buf, b.hp["momentum"]) if flags["nesterov"] else buf
        b.param.addcmul_(g, b.hp["neg_lr"])


@register
class SGDL1L2Rule(Rule):
    """optbench's ``sgd-l1l2``: ``g += l1·sign(p)``, ``g += l2·p``, heavy ball ``buf = m·buf + g``, ``p -= lr·buf``."""

    name = "sgd-l1l2"
    torch_class = SGDL1L2
    reads = ("lr", "momentum", "l1", "l2")
    varying = ("lr", "momentum")
    required = {}

    def tables(self, h, steps):
        return {"neg_lr": -h["lr"], "momentum": h["momentum"], "l1": h["l1"], "l2": h["l2"]}

    def switches(self, h):
        return {"momentum": h["momentum"] != 0, "l1": h["l1"] != 0, "l2": h["l2"] != 0}

    def state_names(self, flags):
        return ("momentum_buffer",)

    def step(self, b, flags):
        g = b.grad
        if b.on["l1"]:
            g = torch.addcmul(g, torch.sign(b.param), b.hp["l1"])
        if b.on["l2"]:
            g = torch.addcmul(g, b.param, b.hp["l2"])
        if b.on["momentum"]:
            buf = b.state["momentum_buffer"]
            if b.first:
                buf.copy_(g)
            else:
                buf.mul_(b.hp["momentum"]).add_(g)
            g = buf
        b.param.addcmul_(g, b.hp["neg_lr"])


# ------------------------------------------------------------------------------------------ Adam, AdamW


@register
class AdamRule(Rule):
    """torch.optim.Adam (and AdamW: ``decoupled_weight_decay``), single-tensor path::

    p *= 1 - lr·wd (decoupled) | g += wd·p
    m.lerp_(g, 1 - β1);  v = β2·v + (1 - β2)·g²;  v_max = max(v_max, v) (amsgrad)
    denom = sqrt(v) / sqrt(1 - β2^t) + eps;  p += (-lr / (1 - β1^t))·m / denom
    """

    name = "adam"
    torch_class = torch.optim.Adam
    reads = ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")
    varying = ("lr", "beta1", "beta2")
    flags = ("amsgrad", "maximize", "decoupled_weight_decay")

    def tables(self, h, steps):
        step = _step_count(steps)
        bias_correction1 = 1 - _pow(h["beta1"], step)
        bias_correction2 = 1 - _pow(h["beta2"], step)
        return {
            "one_minus_beta1": 1 - h["beta1"],
            "beta2": h["beta2"],
            "one_minus_beta2": 1 - h["beta2"],
            "neg_step_size": -(h["lr"] / bias_correction1),
            "bias_correction2_sqrt": _pow(bias_correction2, np.array(0.5)),
            "eps": h["eps"],
            "weight_decay": h["weight_decay"],
            "decay": 1 - h["lr"] * h["weight_decay"],
        }

    def switches(self, h):
        return {"weight_decay": h["weight_decay"] != 0}

    def state_names(self, flags):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if flags["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def step(self, b, flags):
        g = -b.grad if flags["maximize"] else b.grad
        if b.on["weight_decay"]:
            if flags["decoupled_weight_decay"]:
                b.param.mul_(b.hp["decay"])
            else:
                g = torch.addcmul(g, b.param, b.hp["weight_decay"])
        exp_avg, exp_avg_sq = b.state["exp_avg"], b.state["exp_avg_sq"]
        exp_avg.lerp_(g, b.hp["one_minus_beta1"])
        exp_avg_sq.mul_(b.hp["beta2"]).addcmul_(b.hp["one_minus_beta2"] * g, g)
        second = exp_avg_sq
        if flags["amsgrad"]:
            second = b.state["max_exp_avg_sq"]
            torch.maximum(second, exp_avg_sq, out=second)
        denom = (second.sqrt() / b.hp["bias_correction2_sqrt"]).add_(b.hp["eps"])
        b.param.addcdiv_(b.hp["neg_step_size"] * exp_avg, denom)


@register
class AdamWRule(AdamRule):
    """torch.optim.AdamW: Adam with ``decoupled_weight_decay=True`` (``p *= 1 - lr·wd``)."""

    name = "adamw"
    torch_class = torch.optim.AdamW


# ------------------------------------------------------------------------------------------------ RMSprop


@register
class RMSpropRule(Rule):
    """torch.optim.RMSprop::

    g += wd·p;  v = α·v + (1 - α)·g²;  centered: ḡ.lerp_(g, 1 - α), avg = sqrt(v - ḡ²) else sqrt(v)
    avg += eps;  momentum > 0: buf = m·buf + g/avg, p -= lr·buf  else p += (-lr·g)/avg
    """

    name = "rmsprop"
    torch_class = torch.optim.RMSprop
    reads = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    varying = ("lr", "momentum")
    flags = ("centered", "maximize")

    def tables(self, h, steps):
        return {
            "neg_lr": -h["lr"],
            "alpha": h["alpha"],
            "one_minus_alpha": 1 - h["alpha"],
            "eps": h["eps"],
            "weight_decay": h["weight_decay"],
            "momentum": h["momentum"],
        }

    def switches(self, h):
        return {"momentum": h["momentum"] > 0, "weight_decay": h["weight_decay"] != 0}

    def state_names(self, flags):
        return (
            ("square_avg", "momentum_buffer", "grad_avg")
            if flags["centered"]
            else ("square_avg", "momentum_buffer")
        )

    def step(self, b, flags):
        g = -b.grad if flags["maximize"] else b.grad
        g = _decayed(b, g)
        square_avg = b.state["square_avg"]
        square_avg.mul_(b.hp["alpha"]).addcmul_(b.hp["one_minus_alpha"] * g, g)
        if flags["centered"]:
            grad_avg = b.state["grad_avg"]
            grad_avg.lerp_(g, b.hp["one_minus_alpha"])
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(b.hp["eps"])
        if b.on["momentum"]:
            buf = b.state["momentum_buffer"]
            buf.mul_(b.hp["momentum"]).addcdiv_(g, avg)
            b.param.addcmul_(buf, b.hp["neg_lr"])
        else:
            b.param.addcdiv_(b.hp["neg_lr"] * g, avg)


# ------------------------------------------------------------------------------------------------ Adagrad


@register
class AdagradRule(Rule):
    """torch.optim.Adagrad: ``g += wd·p``; ``clr = lr / (1 + (t - 1)·lr_decay)``; ``s += g²``;
    ``p += (-clr·g) / (sqrt(s) + eps)``; ``s`` starts at ``initial_accumulator_value``."""

    name = "adagrad"
    torch_class = torch.optim.Adagrad
    reads = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize")
    varying = ("lr",)
    flags = ("maximize",)

    def tables(self, h, steps):
        step = _step_count(steps)
        return {
            "neg_clr": -(h["lr"] / (1 + (step - 1) * h["lr_decay"])),
            "eps": h["eps"],
            "weight_decay": h["weight_decay"],
            "initial_accumulator_value": h["initial_accumulator_value"],
        }

    def switches(self, h):
        return {"weight_decay": h["weight_decay"] != 0}

    def state_names(self, flags):
        return ("sum",)

    def init_state(self, b):
        b.state["sum"].copy_(b.hp["initial_accumulator_value"].expand_as(b.param))  # torch.full_like

    def step(self, b, flags):
        g = -b.grad if flags["maximize"] else b.grad
        g = _decayed(b, g)
        state_sum = b.state["sum"]
        state_sum.addcmul_(g, g, value=1)
        std = state_sum.sqrt().add_(b.hp["eps"])
        b.param.addcdiv_(b.hp["neg_clr"] * g, std)
