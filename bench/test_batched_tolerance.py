"""The fast mode's agreement with torch.optim, per rule, against torch's own implementation spread.

On the same cells: how far torch's foreach and fused optimizers land from its for-loop optimizer (the
spread) and how far the batched engine in fast mode lands from it (the deviation), over the steps where
torch agrees with itself (``engine.batched.tolerance``). Printed and kept in ``extra_info`` per rule with
the ratio deviation / spread; the tests assert the contract, this file reports the numbers (docs/
batched-engine.md quotes them). On CPU always; on CUDA when there is one (``scripts/gpu-check``).
"""

from __future__ import annotations

import json

import pytest
import torch

from optbench.engine import batched
from optbench.engine.batched import tolerance
from optbench.registry.validate import canonical_config
from optbench.spec import RunConfig

PROBLEMS = {
    # a 1-column head and sigmoid: fast mode's products and activations differ from the reference's here
    "regression": "mlp-regression(width=13, depth=2, activation='sigmoid', n_train=256, n_val=33)",
    "classification": "mlp-classification(width=32, depth=3, n_train=512, n_val=64)",
}
CELLS = {
    "sgd": [("sgd", 0.05, 0.9), ("sgd", 0.3, 0.9)],
    "adam": [("adam", 0.01, None), ("adam", 0.05, None)],
    "adamw": [("adamw(weight_decay=0.1)", 0.01, None)],
    "rmsprop": [("rmsprop", 0.001, 0.5), ("rmsprop(centered=True)", 0.01, 0.0)],
    "adagrad": [("adagrad", 0.05, None)],
    "sgd-l1l2": [("sgd-l1l2(l1=0.001)", 0.02, 0.9)],
}
STEPS = 200

devices = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
    ),
]


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("device", devices)
def test_fast_mode_deviation_against_torchs_own_spread(benchmark, device, problem):
    groups = {
        rule: [
            canonical_config(
                RunConfig(
                    problem=PROBLEMS[problem],
                    optimizer=o,
                    lr=lr,
                    momentum=m,
                    seed=s,
                    steps=STEPS,
                    batch_size=16,
                )
            ).replace(device=device)
            for s, (o, lr, m) in enumerate(specs)
        ]
        for rule, specs in CELLS.items()
    }

    def measure():
        results = {rule: batched.run_batch(cells, "fast") for rule, cells in groups.items()}
        return tolerance.measure(groups, results)

    agreements = benchmark.pedantic(measure, rounds=1, iterations=1)
    rows = {
        a.rule: {k: (round(v, 10) if isinstance(v, float) else v) for k, v in a.row().items()}
        for a in agreements
    }
    info = {
        "device": device,
        "problem": PROBLEMS[problem],
        "steps": STEPS,
        "spread_factor": tolerance.SPREAD_FACTOR,
        "loss_rounding": tolerance.LOSS_ROUNDING,
        "rules": rows,
        "all_hold": all(a.holds for a in agreements),
    }
    benchmark.extra_info.update(info)
    print("\n" + json.dumps(info, indent=2, default=str))
