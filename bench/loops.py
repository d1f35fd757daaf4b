"""Hand-written baselines the benchmarks compare against: the loop a user would write themselves."""

from __future__ import annotations

import torch


def bare_sgd_loop(lr: float, steps: int, momentum: float = 0.0) -> list[float]:
    """Plain SGD on f(x) = (2x)^2 from x = 2, reading the loss with .item() every step."""
    x = torch.tensor([2.0], requires_grad=True)
    optimizer = torch.optim.SGD([x], lr=lr, momentum=momentum)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((2 * x) ** 2).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
