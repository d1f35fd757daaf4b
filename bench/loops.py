"""Hand-written baselines the benchmarks compare against: the loop a user would write themselves."""

from __future__ import annotations

import torch


def bare_sgd_loop(lr: float, steps: int, momentum: float = 0.0, device: str = "cpu") -> list[float]:
    """Plain SGD on f(x) = (2x)^2 from x = 2, reading the loss with .item() every step."""
    x = torch.tensor([2.0], requires_grad=True, device=device)
    optimizer = torch.optim.SGD([x], lr=lr, momentum=momentum)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((2 * x) ** 2).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    """``python bench/loops.py LRS MOMENTA STEPS``: the hand-written grid, one run after another."""
    import sys

    torch.set_num_threads(1)
    lrs, momenta, steps = (int(a) for a in sys.argv[1:4])
    for i in range(lrs):
        for m in range(momenta):
            bare_sgd_loop(0.01 + 0.2 * i / max(1, lrs - 1), steps, momentum=0.9 * m / max(1, momenta - 1))


if __name__ == "__main__":
    main()
