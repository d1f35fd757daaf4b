"""Loss functions for the MLP problems: torch's own plus custom Dice and Focal.

Each entry declares the target it expects, so a problem can hand it the right form (or report the
combination as not applicable):

- ``index``: class indices, shape [B] (cross-entropy)
- ``dense``: real-valued targets of the output's shape (regression losses; one-hot for classification)
- ``probability``: targets in [0, 1] of the output's shape (bce-with-logits, dice, focal)
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

from optbench.errors import OptbenchError
from optbench.registry.base import Registry
from optbench.spec import Spec, parse_spec

losses = Registry("loss")


class DiceLoss(nn.Module):
    """Soft Dice loss on sigmoid outputs: ``1 - (2|X∩Y| + s) / (|X| + |Y| + s)``.

    X = sigmoid(logits), Y = targets in [0, 1], |X∩Y| = sum(X·Y), |X| = sum(X), sums over the whole batch,
    s = ``smooth`` (default 1). Perfect overlap gives 0; e.g. X = Y = [1, 0] gives 1 - 3/3 = 0.
    """

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(logits)
        intersection = (probs * target).sum()
        return 1 - (2 * intersection + self.smooth) / (probs.sum() + target.sum() + self.smooth)


class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al. 2017) on logits: ``-α_t (1 - p_t)^γ log(p_t)``, averaged.

    p_t = p where the target is 1, 1 - p where it is 0 (p = sigmoid(logit)); α_t = α for positives and
    1 - α for negatives. γ = 0 and α = 0.5 give half the BCE-with-logits loss. Defaults α = 0.25, γ = 2.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # log(p_t) computed from logits for stability: -BCE(logit, target) elementwise.
        log_p_t = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = log_p_t.exp()
        alpha_t = self.alpha * target + (1 - self.alpha) * (1 - target)
        return (-alpha_t * (1 - p_t) ** self.gamma * log_p_t).mean()


def _torch_loss(cls):
    def make(**kwargs):
        for key in ("weight", "pos_weight"):  # torch wants tensors; spec syntax gives lists
            if isinstance(kwargs.get(key), (list, tuple)):
                kwargs[key] = torch.tensor(kwargs[key], dtype=torch.float32)
        try:
            return cls(**kwargs)
        except TypeError as err:
            valid = ", ".join(
                p for p in inspect.signature(cls).parameters if p not in ("size_average", "reduce")
            )
            raise OptbenchError(f"bad argument for {cls.__name__}: {err}; valid: {valid}") from None

    return make


losses.add("mse", _torch_loss(nn.MSELoss), "nn.MSELoss: mean of (y - t)^2", target="dense")
losses.add("l1", _torch_loss(nn.L1Loss), "nn.L1Loss: mean of |y - t|", target="dense")
losses.add("smooth-l1", _torch_loss(nn.SmoothL1Loss), "nn.SmoothL1Loss (beta=1)", target="dense")
losses.add("huber", _torch_loss(nn.HuberLoss), "nn.HuberLoss (delta=1)", target="dense")
losses.add(
    "cross-entropy",
    _torch_loss(nn.CrossEntropyLoss),
    "nn.CrossEntropyLoss on logits and class indices",
    target="index",
)
losses.add(
    "bce-with-logits",
    _torch_loss(nn.BCEWithLogitsLoss),
    "nn.BCEWithLogitsLoss on logits, targets in [0,1]",
    target="probability",
)
losses.add(
    "dice", _torch_loss(DiceLoss), "custom soft Dice: 1 - (2|X∩Y| + s)/(|X| + |Y| + s)", target="probability"
)
losses.add(
    "focal", _torch_loss(FocalLoss), "custom focal (Lin 2017): -α_t (1-p_t)^γ log p_t", target="probability"
)


def canonical_loss(text: str) -> str:
    spec = parse_spec(text, what="loss")
    return Spec(losses.canonical_name(spec.name), spec.kwargs).canonical()


def make_loss(spec: str | Spec) -> tuple[nn.Module, str]:
    """Instantiate a loss; returns (module, target kind)."""
    spec = parse_spec(spec, what="loss") if isinstance(spec, str) else spec
    entry = losses.get(spec.name)
    return entry.factory(**spec.kw), entry.meta["target"]
