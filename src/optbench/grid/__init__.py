"""Grid experiments: the cartesian product of a few axes of values, run resumably, summarised per group.

Rooms: ``axes`` (GridSpec, value parsing, TOML), ``expand`` (cells), ``runner`` (run_grid and task
planning), ``executors`` (local pool, Ray), ``summary`` (per-group table).
"""

from optbench.grid.axes import AXES, MAX_CELLS, GridSpec, load_spec_toml, make_spec, parse_lr_values
from optbench.grid.expand import expand
from optbench.grid.runner import ENGINES, GridProgress, plan_tasks, run_grid
from optbench.grid.summary import GROUP_COLUMNS, summarize

__all__ = [
    "AXES",
    "ENGINES",
    "GROUP_COLUMNS",
    "MAX_CELLS",
    "GridProgress",
    "GridSpec",
    "expand",
    "load_spec_toml",
    "make_spec",
    "parse_lr_values",
    "plan_tasks",
    "run_grid",
    "summarize",
]
