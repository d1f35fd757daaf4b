"""``bench amp``: how much faster is a mixed-precision training step than an fp32 one on this device, and
how close does it come to what the device's matmuls allow?

For every size (width, batch) and configuration (fp32 with TF32 off and on, fp16, bf16) it times one full
training step of an MLP (``step``), and in the same run the ceiling: large matmuls in each precision
(``ceiling``). Each row carries the wall time a training loop sees and, on CUDA, the device time of the
step's kernels (``timing``); the table (``table``) gives speed-ups over both fp32 baselines, the share of
the ceiling they reach, the crossover width where AMP starts to pay, and a warning for every row whose
number needs one. ``plan`` fixes the sizes: by default a sweep from launch-bound to compute-bound on CUDA,
bounded by free memory and a time budget, and small sizes on CPU.

Modules: plan (inputs, default sizes, memory cap, time budget) -> step (the training step, CUDA graph
capture) -> timing -> ceiling -> table (schema, ratios, warnings, summary) -> benchmark (``amp_benchmark``).
Precision semantics are ``optbench.registry.precision``'s.
"""

from optbench.experiments.amp.benchmark import PLOT_FILE, SCALING_PLOT_FILE, AmpResult, amp_benchmark
from optbench.experiments.amp.plan import OPTIMIZERS, TF32_CHOICES, AmpPlan, default_precisions
from optbench.experiments.amp.table import NOISY_IQR_SHARE, amp_schema, crossover

__all__ = [
    "NOISY_IQR_SHARE",
    "OPTIMIZERS",
    "PLOT_FILE",
    "SCALING_PLOT_FILE",
    "TF32_CHOICES",
    "AmpPlan",
    "AmpResult",
    "amp_benchmark",
    "amp_schema",
    "crossover",
    "default_precisions",
]
