"""A grid's cells: the product of its axes as canonical RunConfigs, duplicates dropped, in ``AXES`` order
(seed innermost, so the seeds of a group are adjacent). Every distinct spec is built once on a stand-in
(``registry.validate.check_buildable``) before the cells are handed out, so a value no cell accepts stops
the grid before its folder exists."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.grid.axes import AXES, MAX_CELLS, GridSpec, load_spec_toml, make_spec
from optbench.spec import RunConfig, Spec, parse_spec


def expand(spec: GridSpec, max_cells: int | None = None) -> list[RunConfig]:
    """The grid's canonical RunConfigs in expansion order, duplicates (equal after canonicalisation, e.g.
    ``steplr`` and its alias ``step``) dropped. Raises OptbenchError for unknown names and bad values, and
    for a grid of more than ``max_cells`` cells (default ``MAX_CELLS``), before building any of them; then
    for a value that no cell could accept (a stand-in build of each distinct spec)."""
    from optbench.registry.validate import canonical_config, check_buildable

    max_cells = MAX_CELLS if max_cells is None else max_cells
    if max_cells < 1:
        raise OptbenchError(f"--max-cells must be >= 1, got {max_cells}")
    cells = math.prod(len(getattr(spec, axis)) for axis in AXES)
    if cells > max_cells:
        raise OptbenchError(
            f"the grid has {cells:,} cells, more than {max_cells:,}; raise --max-cells to run it"
        )

    problems = [
        _fold_problem(*combo)
        for combo in itertools.product(spec.problem, spec.width, spec.depth, spec.activation)
    ]
    rest = [getattr(spec, axis) for axis in AXES[4:]]
    configs: list[RunConfig] = []
    seen: set[str] = set()
    for problem in dict.fromkeys(problems):
        for values in itertools.product(*rest):
            cell = dict(zip(AXES[4:], values, strict=True))
            config = canonical_config(RunConfig(problem=problem, **cell))
            run_id = config.run_id()
            if run_id not in seen:
                seen.add(run_id)
                configs.append(config)
    check_buildable(configs)
    return configs


def _fold_problem(problem: str, width: int | None, depth: int | None, activation: str | None) -> str:
    from optbench.registry.problems import canonical_problem, is_toy

    given = {
        k: v for k, v in (("width", width), ("depth", depth), ("activation", activation)) if v is not None
    }
    problem = canonical_problem(problem)
    if not given:
        return problem
    spec = parse_spec(problem, what="problem")
    if is_toy(problem):
        options = " ".join(f"--{k} {v}" for k, v in given.items())
        raise OptbenchError(
            f"{options}: applies to MLP problems; {spec.name!r} is a toy function without layers"
        )
    for key, value in given.items():
        if key in spec.kw and spec.kw[key] != value:
            raise OptbenchError(f"{key} given twice: --{key} {value} and in problem {problem!r}")
    return Spec(spec.name, tuple(sorted({**spec.kw, **given}.items()))).canonical()


def _as_configs(
    spec: GridSpec | Mapping | str | Path | Sequence[RunConfig], max_cells: int | None = None
) -> tuple[list[RunConfig], dict]:
    """(configs, a description for the manifest) from any accepted form of a grid."""
    if isinstance(spec, (str, Path)):
        spec = load_spec_toml(spec)
    elif isinstance(spec, Mapping):
        spec = make_spec(spec)
    if isinstance(spec, GridSpec):
        return expand(spec, max_cells), spec.to_dict()
    from optbench.registry.validate import canonical_config, check_buildable

    configs = list(dict.fromkeys(canonical_config(c) for c in spec))
    if not configs:
        raise OptbenchError("the grid has no runs")
    check_buildable(configs)
    return configs, {"configs": len(configs)}
