"""Problems on real data that needs no download: the data sets scikit-learn ships inside its wheel.

``digits`` (1,797 8x8 grey images of the digits 0-9), ``breast_cancer`` (569 tumours, 30 features, 2
classes) and ``wine`` (178 wines, 13 features, 3 classes). Each is split once, deterministically: a
stratified train/held-out split (``val_fraction`` 0.2, shuffled with ``data_seed``; scikit-learn's
``train_test_split``), then standardized with the training rows' mean and standard deviation
(``StandardScaler``, so no held-out statistic leaks in). The held-out split gives ``val_loss`` and
``val_acc`` every ``eval_every`` steps. ``n_train``/``n_val`` keep the first rows of a split (for quick
runs).

scikit-learn is the optional extra ``datasets``: without it the problems are still listed, and building
one is one line naming ``pip install 'optbench[datasets]'``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from optbench.errors import OptbenchError
from optbench.registry.problems import Dataset, MLPProblem, problems

EXTRA = "datasets"
MISSING = f"needs scikit-learn: pip install 'optbench[{EXTRA}]'"
# What each data set holds, for the memory check before a run (registry.limits) and `bench list`.
SIZES = {
    "digits": {"in_dim": 64, "classes": 10, "rows": 1797},
    "breast_cancer": {"in_dim": 30, "classes": 2, "rows": 569},
    "wine": {"in_dim": 13, "classes": 3, "rows": 178},
}


def has_sklearn() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


def _split_sizes(name: str, val_fraction: float = 0.2) -> dict:
    rows = SIZES[name]["rows"]
    n_val = -(-rows * val_fraction // 1)  # train_test_split rounds the test share up
    sizes = SIZES[name]
    return {
        "in_dim": sizes["in_dim"],
        "classes": sizes["classes"],
        "n_train": int(rows - n_val),
        "n_val": int(n_val),
    }


@functools.lru_cache(maxsize=16)
def load(name: str, data_seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """The standardized, split data set ``name`` as float32 CPU tensors (cached: treat it as read-only)."""
    try:
        import sklearn.datasets
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise OptbenchError(f"data set {name!r} {MISSING}") from None
    if not (isinstance(val_fraction, float) and 0 < val_fraction < 1):
        raise OptbenchError(f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}")
    bunch = getattr(sklearn.datasets, f"load_{name}")()
    x_train, x_val, y_train, y_val = train_test_split(
        bunch.data, bunch.target, test_size=val_fraction, random_state=data_seed, stratify=bunch.target
    )
    scaler = StandardScaler().fit(x_train)  # a constant feature (digits' border pixels) is left at 0

    def features(x):
        return torch.tensor(scaler.transform(x), dtype=torch.float32)

    def labels(y):
        return torch.tensor(y, dtype=torch.int64)

    return Dataset(
        features(x_train),
        labels(y_train),
        features(x_val),
        labels(y_val),
        classes=SIZES[name]["classes"],
        meta={"source": f"sklearn.datasets.load_{name}"},
    )


def _subset(data: Dataset, n_train: int | None, n_val: int | None) -> Dataset:
    """The first ``n_train`` / ``n_val`` rows of each split (None: all of it)."""
    for key, value in (("n_train", n_train), ("n_val", n_val)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise OptbenchError(f"{key} must be a whole number >= 1, got {value!r}")
    return Dataset(
        data.x_train[:n_train],
        data.y_train[:n_train],
        data.x_val[:n_val],
        data.y_val[:n_val],
        classes=data.classes,
        meta=data.meta,
    )


def _mlp(
    problem: str, data_name: str, *, width, depth, activation, n_train, n_val, data_seed, val_fraction, **run
):
    data = _subset(load(data_name, data_seed, val_fraction), n_train, n_val)
    return MLPProblem(problem, data, width=width, depth=depth, activation=activation, **run)


def _register_mlp(problem: str, data_name: str, summary: str, width: int, depth: int) -> None:
    def factory(
        device,
        *,
        init,
        loss,
        seed,
        steps,
        batch_size=None,
        width=width,
        depth=depth,
        activation="relu",
        n_train=None,
        n_val=None,
        eval_every=10,
        data_seed=0,
        val_fraction=0.2,
    ):
        return _mlp(
            problem,
            data_name,
            width=width,
            depth=depth,
            activation=activation,
            n_train=n_train,
            n_val=n_val,
            data_seed=data_seed,
            val_fraction=val_fraction,
            loss=loss,
            init=init,
            device=device,
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            eval_every=eval_every,
        )

    factory.__doc__ = summary
    problems.add(
        problem,
        factory,
        summary,
        default_loss="cross-entropy",
        extra=EXTRA,
        batched="mlp",
        data_sizes=_split_sizes(data_name),
    )


_register_mlp(
    "digits-mlp",
    "digits",
    "MLP (width 64, depth 2, relu) on scikit-learn's digits (8x8 images, 10 classes)",
    64,
    2,
)
_register_mlp(
    "breast-cancer",
    "breast_cancer",
    "logistic regression (depth 0; depth=2 for an MLP) on scikit-learn's breast cancer (30 features, 2 classes)",
    32,
    0,
)
_register_mlp(
    "wine", "wine", "MLP (width 32, depth 1, relu) on scikit-learn's wine (13 features, 3 classes)", 32, 1
)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (``channels``, 2x``channels``), each with ReLU and 2x2 max pooling, then a
    Linear head: [N, 1, 8, 8] -> [N, 10]."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@problems.register(
    "digits-cnn",
    "small CNN (two 3x3 convolutions, 16 and 32 channels) on scikit-learn's digits (8x8 images, 10 classes)",
    default_loss="cross-entropy",
    extra=EXTRA,
)
def digits_cnn(
    device,
    *,
    init,
    loss,
    seed,
    steps,
    batch_size=None,
    channels=16,
    n_train=None,
    n_val=None,
    eval_every=10,
    data_seed=0,
    val_fraction=0.2,
):
    """The digits as [N, 1, 8, 8] images (standardized pixels) through ``DigitsCNN``; a ``ModelProblem``."""
    from optbench.registry.modelproblem import ModelProblem

    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise OptbenchError(f"digits-cnn: channels must be a whole number >= 1, got {channels!r}")
    data = _subset(load("digits", data_seed, val_fraction), n_train, n_val)

    def images(x):
        return x.view(-1, 1, 8, 8)

    recipe = ModelProblem(
        model=lambda: DigitsCNN(channels),
        train=(images(data.x_train), data.y_train),
        loss_fn=nn.CrossEntropyLoss(),
        val=(images(data.x_val), data.y_val),
        metric="accuracy",
        eval_every=eval_every,
        classes=10,
        name="digits-cnn",
    )
    return recipe.for_run(
        "digits-cnn", init=init, loss=loss, device=device, seed=seed, steps=steps, batch_size=batch_size
    )
