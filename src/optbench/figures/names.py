"""The names of the standard figures (`bench plot --figure NAME`, the report): their one home, light
enough for the CLI's --help to import (no matplotlib)."""

STANDARD_FIGURES = (
    "loss-vs-step",
    "sensitivity",
    "heatmap",
    "trajectories",
    "lr-schedules",
    "schedules",
    "lr-find",
    "init-std",
    "init-gains",
    "amp",
    "amp-scaling",
    "sharpness",
)
