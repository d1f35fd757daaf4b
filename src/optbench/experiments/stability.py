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


# ---------------------------------------------------------------------- which threshold applies to a run


def gd_momentum(optimizer: str, momentum: float | None) -> float | None:
    """m where ``optimizer`` is gradient descent with heavy-ball momentum m (``sgd``, at most its momentum
    given), whose stability bound is lr·lambda < 2(1 + m); None for any other update rule."""
    from optbench.spec import parse_spec

    spec = parse_spec(optimizer, what="optimizer")
    if spec.name != "sgd" or set(spec.kw) - {"momentum"}:
        return None
    return float(momentum if momentum is not None else spec.kw.get("momentum", 0.0))


def adam_beta1(optimizer: str, momentum: float | None) -> float | None:
    """beta1 where ``optimizer`` is Adam or AdamW without AMSGrad (the preconditioned threshold
    (2 + 2 beta1)/((1 - beta1) lr) applies); None otherwise. torch's default beta1 is 0.9."""
    from optbench.spec import parse_spec

    spec = parse_spec(optimizer, what="optimizer")
    if spec.name not in ("adam", "adamw") or spec.kw.get("amsgrad", False):
        return None
    if momentum is not None:
        return float(momentum)
    return float(spec.kw["betas"][0]) if "betas" in spec.kw else 0.9


def run_threshold(column: str, optimizer: str, momentum: float | None, lr: float) -> float | None:
    """The threshold a run's ``sharpness`` (GD: 2(1+m)/lr) or ``precond_sharpness`` (Adam: 38/lr at
    beta1 0.9) is compared with; None where no threshold applies (e.g. Adam's raw sharpness)."""
    if column == "precond_sharpness":
        beta1 = adam_beta1(optimizer, momentum)
        return None if beta1 is None else stability_threshold("adam", lr, beta1)
    m = gd_momentum(optimizer, momentum)
    return None if m is None else stability_threshold("gd", lr, m)


# ------------------------------------------------------------------------- what a sweep's runs did, and why

SPIKE_SHARE = 0.5  # a climb back more than half way from the lowest loss so far to the start is a spike
MINIBATCH_RISE = 2.0  # with minibatches a rise above the start counts from twice the start (batch noise)
REGIMES = ("monotone", "catapult", "no progress", "diverged")


def regime(losses, status: str, window: int = 1) -> str | None:
    """How one run went, from its loss trace (None for an invalid or failed run):

    ``diverged``     the engine stopped it (loss non-finite or past 10^6 x its start);
    ``no progress``  it ran to the end without ending below its start (e.g. lr = 2/L on a quadratic);
    ``catapult``     it ended below its start after a spike: the loss rose above its start, or, once it
                     had at least halved, climbed back more than ``SPIKE_SHARE`` of the way to the start;
    ``monotone``     it ended below its start without a spike.

    ``window`` > 1: the run takes minibatches, ``window`` per epoch, and each step's loss is of another
    batch; the rules then read the mean loss over the last ``window`` steps (an epoch's batches), and a
    rise above the start counts from ``MINIBATCH_RISE`` x the start.
    """
    import numpy as np

    if status == "diverged":
        return "diverged"
    losses = np.asarray(losses, dtype=float)
    if status != "ok" or not len(losses):
        return None
    if not losses[-1] < losses[0]:
        return "no progress"
    if window > 1:
        losses = _trailing_mean(losses, window)
    start = losses[0]
    low = np.minimum.accumulate(losses)
    rose = losses > start * (MINIBATCH_RISE if window > 1 else 1.0)
    climbed = (losses - low > SPIKE_SHARE * (start - low)) & (low <= start / 2)
    return "catapult" if bool(rose.any() or climbed.any()) else "monotone"


def _trailing_mean(values, window: int):
    """Mean of the last ``window`` values at each step (of all values so far, before the first window)."""
    import numpy as np

    sums = np.concatenate([[0.0], np.cumsum(values)])
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    ends = np.arange(1, len(values) + 1)
    return (sums[ends] - sums[ends - counts]) / counts


@dataclass
class PredictionCheck:
    """The bound predicted from the initial sharpness against a sweep's regimes (one lr per run).

    Gradient descent is stable near its start iff lr < 2(1 + m)/lambda_0. With m = 0, below the bound a run
    should be monotone; above it the start is unstable and the run either catapults (spikes, the sharpness
    falls below 2/lr, it converges) or diverges: the edge is checked between monotone and the rest. With
    heavy-ball momentum even a stable run's loss oscillates (the iterate overshoots), so the edge is
    checked between the runs that converged (monotone or catapult) and those that did not (no progress,
    diverged). ``agrees`` as ``BoundCheck``: largest stable lr < bound <= smallest unstable lr.
    """

    sharpness: float  # lambda_0
    bound: float  # 2(1 + m)/lambda_0
    largest_stable: float | None  # monotone (m = 0) or converged (m > 0)
    smallest_unstable: float | None
    first_diverged: float | None
    catapults: list[float]
    momentum: float = 0.0

    @property
    def stable_word(self) -> str:
        return "converging" if self.momentum else "monotone"

    @property
    def agrees(self) -> bool | None:
        """False when a stable run lies at or above the bound, or an unstable one below it; None when nothing
        contradicts it but the sweep has no lr on one side; else True."""
        return BoundCheck(self.bound, self.largest_stable, self.smallest_unstable).agrees

    def sentences(self) -> list[str]:
        def lr(value: float | None) -> str:
            return "none" if value is None else f"{value:.4g}"

        verdict = {True: "agrees", False: "DISAGREES", None: "not tested (no lr on one side of it)"}
        lines = [
            f"predicted bound lr < 2(1+m)/lambda_0 = {self.bound:.4g}; measured: largest {self.stable_word} "
            f"{lr(self.largest_stable)}, smallest non-{self.stable_word} {lr(self.smallest_unstable)}, first "
            f"diverged {lr(self.first_diverged)} -> prediction {verdict[self.agrees]}"
        ]
        above = [v for v in self.catapults if v >= self.bound]
        below = [v for v in self.catapults if v < self.bound]
        if above:
            lines.append(
                f"catapults (the loss spikes, then converges) at lr {', '.join(map(lr, above))}: expected "
                "above 2(1+m)/lambda_0, where the sharpness must fall below 2(1+m)/lr before training can "
                "converge"
            )
        if below or (self.first_diverged is not None and self.first_diverged < self.bound):
            what = f"spikes at lr {', '.join(map(lr, below))}" if below else "a divergence"
            lines.append(
                f"{what} below the predicted bound: the bound is local (at the start); progressive "
                "sharpening can raise the sharpness to 2(1+m)/lr later in training (the edge of stability)"
            )
        return lines


def prediction_check(sharpness: float, momentum: float, runs) -> PredictionCheck | None:
    """``PredictionCheck`` from lambda_0, m and a sweep's runs (columns ``lr`` and ``regime``)."""
    import math

    if not (math.isfinite(sharpness) and sharpness > 0):
        return None
    by = runs.dropna(subset=["regime"])
    stable_regimes = ("monotone", "catapult") if momentum else ("monotone",)
    stable = by["regime"].isin(stable_regimes)
    diverged = by[by["regime"] == "diverged"]["lr"]
    return PredictionCheck(
        sharpness,
        sgd_stability_bound(sharpness, momentum),
        float(by[stable]["lr"].max()) if stable.any() else None,
        float(by[~stable]["lr"].min()) if (~stable).any() else None,
        float(diverged.min()) if len(diverged) else None,
        sorted(float(v) for v in by[by["regime"] == "catapult"]["lr"]),
        momentum,
    )
