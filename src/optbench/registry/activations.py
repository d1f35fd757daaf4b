"""Activation functions by name, shared by the MLP problems, the inits registry and the init report.

Each entry knows the ``nn.init.calculate_gain`` nonlinearity it corresponds to, so inits that take a gain
or nonlinearity can derive it from the problem's activation.
"""

from __future__ import annotations

from optbench.errors import OptbenchError

# name -> (torch.nn class name, None for the identity; the calculate_gain nonlinearity it maps to)
# GELU/SiLU/ELU have no entry in calculate_gain; we use the ReLU gain for them (they behave like a ReLU
# for large inputs) and say so in `bench list`.
ACTIVATIONS: dict[str, tuple[str | None, str]] = {
    "none": (None, "linear"),
    "relu": ("ReLU", "relu"),
    "leaky_relu": ("LeakyReLU", "leaky_relu"),
    "tanh": ("Tanh", "tanh"),
    "sigmoid": ("Sigmoid", "sigmoid"),
    "selu": ("SELU", "selu"),
    "gelu": ("GELU", "relu"),
    "silu": ("SiLU", "relu"),
    "elu": ("ELU", "relu"),
}

LEAKY_RELU_SLOPE = 0.01  # torch's nn.LeakyReLU default negative_slope


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise OptbenchError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return name


def make_activation(name: str):
    """A fresh nn.Module for the activation (nn.Identity for ``none``)."""
    import torch.nn as nn

    cls_name, _ = ACTIVATIONS[check_activation(name)]
    return nn.Identity() if cls_name is None else getattr(nn, cls_name)()


def gain_nonlinearity(name: str) -> str:
    """The ``calculate_gain`` nonlinearity name for an activation."""
    return ACTIVATIONS[check_activation(name)][1]


def gain(name: str) -> float:
    """``nn.init.calculate_gain`` for the activation (LeakyReLU with torch's default slope)."""
    import torch.nn as nn

    nonlinearity = gain_nonlinearity(name)
    param = LEAKY_RELU_SLOPE if nonlinearity == "leaky_relu" else None
    return nn.init.calculate_gain(nonlinearity, param)
