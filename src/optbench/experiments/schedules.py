"""``bench schedules``: the lr per step of every scheduler, from the real scheduler objects."""

from __future__ import annotations

from pathlib import Path

from optbench.errors import OptbenchError
from optbench.figures.style import check_format
from optbench.registry.limits import check_steps
from optbench.registry.validate import check_lr
from optbench.store.layout import SCHEDULES_FILE


def schedule_curves(
    steps: int = 100, lr: float = 0.01, schedulers: list[str] | None = None, metric: float = 1.0
):
    """lr per step from the real scheduler objects (``optbench.schedulers.build_scheduler``).

    Each scheduler drives an SGD optimizer over one dummy parameter; per step we record
    ``param_groups[0]['lr']`` (the lr that step's update uses), then call ``optimizer.step()`` and
    ``scheduler.step()`` in PyTorch's order. ReduceLROnPlateau needs a metric: it is fed the constant
    ``metric``, so it sees no improvement and cuts the lr by ``factor`` every ``patience + 1`` steps.
    Returns (DataFrame[scheduler, step, lr], notes: {scheduler: text}); a scheduler that cannot be built
    gets no rows and a note with the reason.
    """
    import warnings

    import pandas as pd
    import torch

    from optbench.registry.schedulers import build_scheduler, canonical_scheduler
    from optbench.registry.schedulers import schedulers as registry

    names = schedulers if schedulers is not None else registry.names()
    rows, notes = [], {}
    for text in names:
        name = canonical_scheduler(text)
        param = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.SGD([param], lr=lr)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                handle = build_scheduler(name, optimizer, steps, lr)
                values = []
                for _ in range(steps):
                    values.append(optimizer.param_groups[0]["lr"])
                    optimizer.step()
                    handle.step(torch.tensor(metric))
        except Exception as err:  # noqa: BLE001 - a scheduler that cannot run is shown as a note
            notes[name] = f"could not build: {err}"
            continue
        if handle.needs_metric:
            notes[name] = f"fed a constant loss {metric:g}"
        rows += [{"scheduler": name, "step": t, "lr": v} for t, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["scheduler", "step", "lr"]), notes


def schedules_experiment(
    steps: int = 100,
    lr: float = 0.01,
    schedulers: list[str] | None = None,
    out: Path | str | None = None,
    fmt: str = "png",
    command: str = "schedules",
) -> Path:
    """``bench schedules``: write DIR/schedules.parquet (scheduler, step, lr), the figure and the manifest."""
    from optbench import store

    check_format(fmt)
    if steps < 1:
        raise OptbenchError(f"--steps must be >= 1, got {steps}")
    check_steps(steps)  # --steps 10000000000000 is one line, not a loop that fills the memory
    check_lr(lr, "--lr")
    if schedulers is not None:  # unknown names are user errors, before anything is written
        from optbench.registry.schedulers import canonical_scheduler

        schedulers = [canonical_scheduler(s) for s in schedulers]
    out = store.check_out(out, "schedules") if out is not None else store.default_out("schedules")
    with store.results_folder(out, "schedules"):
        manifest = store.start_manifest(
            out, command, {"experiment": "schedules", "schedules": {"steps": steps, "lr": lr}}
        )
        curves, notes = schedule_curves(steps, lr, schedulers)
        import pyarrow as pa

        store.write_parquet_atomic(pa.Table.from_pandas(curves, preserve_index=False), out / SCHEDULES_FILE)
        from optbench.figures.schedules import schedules

        path = schedules(
            curves,
            out / f"schedules.{fmt}",
            notes,
            title=f"lr per step of every scheduler (base lr {lr:g}, {steps} steps)",
        )
        store.finish_manifest(out, manifest, schedule_notes=notes, files=[SCHEDULES_FILE, path.name])
    return path
