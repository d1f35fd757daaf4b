"""Grid experiments: the cartesian product of a few axes of values, run resumably, summarised per group.

Rooms: ``axes`` (GridSpec, value parsing, TOML), ``expand`` (cells), ``plan`` (engines, batches, tasks),
``runner`` (run_grid), ``executors`` (local pool, Ray), ``progress`` (the ETA over tasks in flight),
``summary`` (per-group table).
"""

from optbench.grid.axes import AXES, MAX_CELLS, GridSpec, load_spec_toml, make_spec, parse_lr_values
from optbench.grid.expand import expand
from optbench.grid.plan import ENGINES, plan_tasks
from optbench.grid.runner import GridProgress, run_grid
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
