"""Running: the reference engine (one RunConfig -> one trace through the real torch.optim objects) and the
batched engine (many cells as one tensor program, ``optbench.engine.batched``)."""

from optbench.engine.reference import CHECK_EVERY, DIVERGENCE_FACTOR, RunResult, run

__all__ = ["CHECK_EVERY", "DIVERGENCE_FACTOR", "RunResult", "run"]
