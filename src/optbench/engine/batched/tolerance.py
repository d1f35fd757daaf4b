"""The fast mode's tolerance, derived from torch itself: how far apart torch's own implementations of an
optimizer land on the same cells, against how far the batched engine lands from the reference.

torch.optim implements most optimizers three ways: a for-loop over tensors (``foreach=False``, the
single-tensor path the batched rules transcribe), ``foreach=True`` (multi-tensor kernels; the CUDA
default) and ``fused=True`` (one kernel). They compute the same formula and round differently. For a set
of cells, per step t::

    spread(t)    = max over cells and over torch's other implementations (foreach, fused) of
                   |loss_impl(t) - loss_forloop(t)| / |loss_forloop(t)|
    deviation(t) = max over cells of |loss_batched(t) - loss_forloop(t)| / |loss_forloop(t)|

A last-bit difference grows along a trajectory, and on a chaotic cell (Adam on a stiff problem, a large
lr) it reaches O(1): there the reference does not agree with itself either, so both are compared over the
*window* of steps before torch's own implementations part by more than ``WINDOW_LIMIT`` (all steps if they
never do). Where torch's implementations agree bit for bit for a rule (foreach on CPU; RMSprop has no fused
kernel; ``sgd-l1l2`` is optbench's own class), the rule's spread is the largest spread of the other rules on
the same cells: the rounding spread torch itself accepts between implementations of an optimizer there.

The contract (``Agreement.holds``), over the window::

    max deviation <= SPREAD_FACTOR x max spread + LOSS_ROUNDING

i.e. the fast mode keeps as many correct bits of the loss as torch's implementations keep against each
other, less at most 3 (SPREAD_FACTOR = 2^3): its batched products perturb every gradient element each
step, where a fused or foreach update perturbs the update only, and the dynamics amplify both alike
(measured on CPU: 0.5-4.2x, ``bench/test_batched_tolerance.py``). LOSS_ROUNDING is the loss value's own
rounding: a batched loss reduces a minibatch in another order than the reference's call, a few float32
ulps (2^-23 each, relative) even from identical parameters, where torch's implementations, which share the
loss kernel, agree exactly at step 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optbench import engine
from optbench.spec import RunConfig, Spec, parse_spec

WINDOW_LIMIT = 1e-3  # torch's implementations "agree" while their losses are within this, relative
IMPLEMENTATIONS = ("foreach", "fused")
SPREAD_FACTOR = 8.0  # 3 bits
LOSS_ROUNDING = 4 * 2.0**-23  # 4 float32 ulps, relative


@dataclass
class Agreement:
    """One rule's measurement on a set of cells."""

    rule: str
    window: int  # steps compared
    spread: float  # max over the window of torch's implementation spread (own, or borrowed: ``borrowed``)
    deviation: float  # max over the window of the batched engine's deviation from the for-loop reference
    borrowed: bool = False  # the spread is the other rules' (torch's implementations agreed bit for bit)

    @property
    def holds(self) -> bool:
        return self.deviation <= SPREAD_FACTOR * self.spread + LOSS_ROUNDING

    @property
    def ratio(self) -> float:
        """deviation / spread (inf where torch's spread is 0 even borrowed)."""
        return self.deviation / self.spread if self.spread else float("inf")

    def row(self) -> dict:
        return {**self.__dict__, "ratio": self.ratio, "holds": self.holds}


def with_option(optimizer: str, **options) -> str:
    """The optimizer spec with these arguments set, e.g. ``adam(betas=(0.8, 0.99))`` + foreach=True."""
    spec = parse_spec(optimizer, what="optimizer")
    return Spec(spec.name, tuple({**spec.kw, **options}.items())).canonical()


def forloop(optimizer: str) -> str:
    """The spec of torch's for-loop implementation (``foreach=False``) where the class has the switch."""
    from optbench.engine.batched.plans import init_defaults
    from optbench.engine.batched.rules import RULES

    rule = RULES.get(parse_spec(optimizer, what="optimizer").name)
    if rule is None or "foreach" not in init_defaults(rule.torch_class):
        return optimizer
    return with_option(optimizer, foreach=False)


def losses(results) -> np.ndarray:
    """[cells, T] float64 losses; a run shorter than the longest (diverged) is padded with NaN."""
    steps = max(len(r.trace["loss"]) for r in results)
    out = np.full((len(results), steps), np.nan)
    for c, r in enumerate(results):
        out[c, : len(r.trace["loss"])] = r.trace["loss"]
    return out


def relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per step, the max over cells of |a - b| / |b| (NaN where either has no value)."""
    steps = min(a.shape[1], b.shape[1])
    a, b = a[:, :steps], b[:, :steps]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(np.float32).tiny)
    rel = np.where(np.isnan(a) & np.isnan(b), 0.0, rel)  # both ended: no difference
    rel = np.where(np.isinf(a) & (a == b), 0.0, rel)
    return np.nan_to_num(rel, nan=np.inf).max(axis=0)


def spread(cfgs: list[RunConfig], reference: np.ndarray) -> np.ndarray:
    """Per step: torch's own implementation spread against the for-loop ``reference`` losses (0 where no
    other implementation runs these cells)."""
    worst = np.zeros(reference.shape[1])
    for option in IMPLEMENTATIONS:
        runs = [engine.run(c.replace(optimizer=with_option(c.optimizer, **{option: True}))) for c in cfgs]
        if any(r.summary.status in ("invalid", "failed") for r in runs):
            continue  # torch has no such implementation of this optimizer (RMSprop fused, sgd-l1l2)
        rel = relative(losses(runs), reference)
        worst[: rel.size] = np.maximum(worst[: rel.size], rel)
    return worst


def measure(groups: dict[str, list[RunConfig]], batched_results: dict[str, list]) -> list[Agreement]:
    """Each rule's agreement on its cells (configs with the for-loop optimizer and the batched results of
    the same configs). Rules whose torch implementations agree bit for bit borrow the others' spread."""
    measured = {}
    for rule, cfgs in groups.items():
        reference = losses([engine.run(c.replace(optimizer=forloop(c.optimizer))) for c in cfgs])
        torch_spread = spread(cfgs, reference)
        deviation = relative(losses(batched_results[rule]), reference)
        measured[rule] = (torch_spread, deviation)
    own = {rule: float(_window_max(s, s)) for rule, (s, _) in measured.items()}
    fallback = max(own.values(), default=0.0)
    out = []
    for rule, (torch_spread, deviation) in measured.items():
        window = _window(torch_spread)
        borrowed = own[rule] == 0.0
        out.append(
            Agreement(
                rule,
                window,
                fallback if borrowed else own[rule],
                float(np.max(deviation[:window], initial=0.0)),
                borrowed,
            )
        )
    return out


def _window(torch_spread: np.ndarray) -> int:
    """The steps before torch's implementations first part by more than WINDOW_LIMIT."""
    apart = np.flatnonzero(torch_spread > WINDOW_LIMIT)
    return int(apart[0]) if apart.size else torch_spread.size


def _window_max(torch_spread: np.ndarray, values: np.ndarray) -> float:
    return float(np.max(values[: _window(torch_spread)], initial=0.0))
