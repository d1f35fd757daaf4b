"""Experiments built on the engine and the store: the lr sweep with its stability bound, the lr range
test, the init probe, the AMP benchmark and the scheduler curves. Each writes a results folder."""
