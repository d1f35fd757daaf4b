"""Analytic stability bounds, where a problem has one, and how to compare a sweep's measurement with them.

Gradient descent on a quadratic of curvature L: x_{t+1} = (1 - lr·L)·x_t, stable iff lr < 2/L.
Heavy-ball momentum m (PyTorch SGD: buf = m·buf + g; x -= lr·buf): stable iff 0 < lr·L < 2(1 + m).
"""

from __future__ import annotations

from dataclasses import dataclass


def sgd_stability_bound(curvature: float, momentum: float = 0.0) -> float:
    """Largest stable lr (exclusive) for SGD with heavy-ball momentum on a quadratic of curvature L."""
    return 2 * (1 + momentum) / curvature


def stability_threshold(optimizer_kind: str, lr: float, momentum: float = 0.0) -> float:
    """Where the (preconditioned) sharpness stops being stable for this lr.

    ``"gd"``: heavy-ball gradient descent, lambda_max < 2(1 + m)/lr. ``"adam"``: EMA momentum with
    beta1 = ``momentum``, lambda_max(P^-1 H) < (2 + 2 beta1)/((1 - beta1) lr) (38/lr at beta1 = 0.9).
    """
    if optimizer_kind == "gd":
        return sgd_stability_bound(lr, momentum)  # lr·lambda < 2(1 + m): symmetric in lr and lambda
    if optimizer_kind == "adam":
        return (2 + 2 * momentum) / ((1 - momentum) * lr)
    raise ValueError(f"unknown optimizer kind {optimizer_kind!r}; valid: gd, adam")


@dataclass
class BoundCheck:
    bound: float
    largest_stable: float | None
    smallest_unstable: float | None

    @property
    def agrees(self) -> bool | None:
        """The bound lies in the bracket the sweep measured: largest stable < bound <= smallest unstable.

        False as soon as one side contradicts the bound (a stable lr at or above it, an unstable one below
        it); None when nothing contradicts it but the sweep has no lr on one side (not tested).
        """
        if self.largest_stable is not None and self.largest_stable >= self.bound:
            return False  # stable where theory says unstable
        if self.smallest_unstable is not None and self.smallest_unstable < self.bound:
            return False  # unstable where theory says stable
        if self.largest_stable is None or self.smallest_unstable is None:
            return None
        return True

    def sentence(self) -> str:
        lo = f"{self.largest_stable:.4g}" if self.largest_stable is not None else "none"
        hi = f"{self.smallest_unstable:.4g}" if self.smallest_unstable is not None else "none"
        verdict = {
            True: "agrees",
            False: "DISAGREES",
            None: "not tested (the sweep does not bracket the bound)",
        }[self.agrees]
        return (
            f"analytic bound lr < {self.bound:.4g}; measured: largest stable {lo}, smallest unstable {hi} "
            f"-> measurement {verdict}"
        )
