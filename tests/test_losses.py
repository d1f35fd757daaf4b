"""Losses: REFERENCE_VECTORS.md vectors through the registry, Dice and Focal against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry.losses import canonical_loss, losses, make_loss
from optbench.registry.problems import build_problem


def _loss(spec: str):
    module, _ = make_loss(spec)
    return module


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ------------------------------------------------------------------------ REFERENCE_VECTORS.md vectors

CE_INPUT = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 3.0]])
CE_TARGET = torch.tensor([0, 1, 1])


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [("none", [1.3133, 0.1269, 0.1269]), ("sum", 1.5671), ("mean", 0.5224)],
)
def test_cross_entropy_reference_vectors(reduction, expected):
    loss = _loss(f"cross-entropy(reduction={reduction!r})")(CE_INPUT, CE_TARGET)
    np.testing.assert_allclose(loss.numpy(), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [
        ("none", [1.3133, 0.2539, 0.2539]),
        ("sum", 1.8210),
        ("mean", 0.3642),
    ],  # mean divides by the weight sum 5
)
def test_cross_entropy_with_class_weights_reference_vectors(reduction, expected):
    """Class weights are given in spec syntax as a list: ``--loss 'cross-entropy(weight=[1.0, 2.0])'``."""
    loss = _loss(f"cross-entropy(weight=[1.0, 2.0], reduction={reduction!r})")(CE_INPUT, CE_TARGET)
    np.testing.assert_allclose(loss.numpy(), expected, atol=1e-4)


BCE_LOGITS = torch.tensor([[1.0, 2.0], [2.0, 2.0], [3.0, 4.0], [4.0, 5.0]])
BCE_TARGET = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [
        ("none", [[0.3133, 2.1269], [0.1269, 2.1269], [3.0486, 0.0181], [4.0181, 0.0067]]),
        ("sum", 11.7856),
        ("mean", 1.4732),
    ],
)
def test_bce_reference_vectors(reduction, expected):
    """REFERENCE_VECTORS.md's BCELoss on sigmoid(x) is bce-with-logits on x."""
    loss = _loss(f"bce-with-logits(reduction={reduction!r})")(BCE_LOGITS, BCE_TARGET)
    np.testing.assert_allclose(loss.numpy(), expected, atol=1e-4)


# ------------------------------------------------------------------------------------------ Dice, Focal

LOGITS = [[0.5, -1.0, 3.0], [2.0, 0.0, -2.5]]
TARGET = [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]


def _flat(rows):
    return [v for row in rows for v in row]


@pytest.mark.parametrize("smooth", [1.0, 0.0, 5.0])
def test_dice_by_hand(smooth):
    p = [_sigmoid(x) for x in _flat(LOGITS)]
    y = _flat(TARGET)
    intersection = sum(a * b for a, b in zip(p, y, strict=True))
    expected = 1 - (2 * intersection + smooth) / (sum(p) + sum(y) + smooth)
    spec = "dice" if smooth == 1.0 else f"dice(smooth={smooth})"
    assert _loss(spec)(torch.tensor(LOGITS), torch.tensor(TARGET)).item() == pytest.approx(expected, rel=1e-6)


def test_dice_is_zero_for_perfect_overlap_and_near_one_for_none():
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert _loss("dice")(torch.tensor([[30.0, -30.0, 30.0, -30.0]]), target).item() == pytest.approx(
        0.0, abs=1e-6
    )
    disjoint = _loss("dice(smooth=0)")(torch.tensor([[-30.0, 30.0, -30.0, 30.0]]), target).item()
    assert disjoint == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 0.0), (0.9, 1.0), (0.25, 5.0)])
def test_focal_by_hand(alpha, gamma):
    terms = []
    for x, y in zip(_flat(LOGITS), _flat(TARGET), strict=True):
        p = _sigmoid(x)
        p_t = p if y == 1 else 1 - p
        alpha_t = alpha if y == 1 else 1 - alpha
        terms.append(-alpha_t * (1 - p_t) ** gamma * math.log(p_t))
    expected = sum(terms) / len(terms)
    spec = "focal" if (alpha, gamma) == (0.25, 2.0) else f"focal(alpha={alpha}, gamma={gamma})"
    assert _loss(spec)(torch.tensor(LOGITS), torch.tensor(TARGET)).item() == pytest.approx(expected, rel=1e-5)


def test_focal_with_gamma_0_and_alpha_half_is_half_bce():
    logits, target = torch.tensor(LOGITS), torch.tensor(TARGET)
    focal = _loss("focal(alpha=0.5, gamma=0)")(logits, target)
    bce = _loss("bce-with-logits")(logits, target)
    assert focal.item() == pytest.approx(bce.item() / 2, rel=1e-6)


def test_focal_down_weights_easy_examples_and_stays_finite_at_extreme_logits():
    target = torch.tensor([[1.0, 0.0]])
    easy = _loss("focal")(torch.tensor([[4.0, -4.0]]), target)
    hard = _loss("focal")(torch.tensor([[-4.0, 4.0]]), target)
    assert easy.item() < 1e-3 * hard.item()
    logits = torch.tensor([[-200.0, 200.0]], requires_grad=True)
    loss = _loss("focal")(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------------ the registry


@pytest.mark.parametrize("name", losses.names())
@pytest.mark.parametrize("problem", ["mlp-classification", "mlp-regression"])
def test_every_loss_trains_an_mlp_or_is_not_applicable(name, problem):
    spec = f"{problem}(width=8, depth=1, n_train=64, n_val=32)"
    target = losses.get(name).meta["target"]
    if problem == "mlp-regression" and target != "dense":
        with pytest.raises(NotApplicable, match="class targets"):
            build_problem(spec, loss=name, steps=1)
        return
    torch.manual_seed(0)
    mlp = build_problem(spec, loss=name, steps=1)
    loss = mlp.loss(0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in mlp.trainable)


@pytest.mark.parametrize("name", losses.names())
def test_every_loss_declares_its_target_kind(name):
    assert losses.get(name).meta["target"] in ("index", "dense", "probability")
    assert make_loss(name)[1] == losses.get(name).meta["target"]


def test_unknown_loss_argument_lists_the_valid_ones():
    with pytest.raises(OptbenchError) as err:
        make_loss("cross-entropy(bogus=1)")
    assert "bogus" in str(err.value) and "label_smoothing" in str(err.value)


def test_unknown_loss_name_lists_the_valid_ones():
    with pytest.raises(OptbenchError, match="valid: .*dice.*focal"):
        canonical_loss("dicee")
    assert canonical_loss("focal( gamma=1 )") == "focal(gamma=1)"
