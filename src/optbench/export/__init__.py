"""Results out of optbench: ``bench export DIR --to csv|tensorboard|mlflow`` (``export``).

Every exporter reads the folder through ``optbench.load`` (the store's checked readers) and writes into a
destination folder, by default ``DIR/<format>`` (``DIR/tensorboard``: ``tensorboard --logdir`` it). A
destination is ours when it holds our marker file (``.optbench-export.json``, which lists what we wrote):
a new or empty folder, or one of ours of the same format, is accepted (the files we wrote there before
are replaced; anything else there is left alone); any other non-empty folder is refused with one line.

* ``csv`` (no extra): ``runs.csv`` and ``traces.csv`` (one row per run and step).
* ``tensorboard`` (extra ``tensorboard``): one run folder per cell, its trace columns as scalars over the
  steps, its config as hparams (with the grid's values as each hparam's domain) and its summary numbers as
  the hparams' metrics; written with ``torch.utils.tensorboard.SummaryWriter``.
* ``mlflow`` (extra ``mlflow``): one experiment named after DIR, one MLflow run per cell (config as params,
  summary as tags, trace columns as metrics over the steps) in a local SQLite store ``DEST/mlflow.db``
  (``mlflow ui --backend-store-uri sqlite:///DEST/mlflow.db``); no server. (MLflow 3 refuses its
  ``file:`` store unless told otherwise, so the local store is SQLite.) Exported again, the experiment's
  earlier runs are deleted (MLflow's soft delete) and the new ones logged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from optbench.errors import OptbenchError

FORMATS = ("csv", "tensorboard", "mlflow")
MARKER = ".optbench-export.json"
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # format -> the module its extra installs


def export(folder: str | Path, to: str, out: str | Path | None = None) -> Path:
    """Export the results folder ``folder`` as ``to`` into ``out`` (default ``folder/<to>``); returns
    ``out``. The extra's module is checked, then the destination, before anything is read or written."""
    from optbench.store.results import load

    if to not in FORMATS:
        raise OptbenchError(f"unknown export format {to!r}; valid: {', '.join(FORMATS)}")
    _check_extra(to)
    folder = Path(folder)
    dest = Path(out) if out is not None else folder / to
    previous = check_destination(dest, to)
    tables = load(folder)
    dest.mkdir(parents=True, exist_ok=True)
    writer = _writer(to)
    _forget(dest, [name for name in previous if name not in getattr(writer, "UPDATED_IN_PLACE", ())])
    written = writer.write(tables, dest)
    _write_marker(dest, to, folder, written)
    return dest


def _check_extra(to: str) -> None:
    import importlib.util

    module = EXTRAS.get(to)
    if module is not None and importlib.util.find_spec(module) is None:
        raise OptbenchError(f"--to {to} needs {module}: pip install 'optbench[{to}]'")


def _writer(to: str):
    """The module that writes ``to``: its ``write(tables, dest)`` returns the files it wrote; files it
    names in ``UPDATED_IN_PLACE`` are not removed before it writes again (it replaces their content)."""
    import importlib

    return importlib.import_module(f"optbench.export.to_{to}")


def check_destination(dest: Path, to: str) -> list[str]:
    """The files an earlier export of ``to`` wrote into ``dest`` (to be replaced); OptbenchError (one line)
    for a destination that is not ours. Writes nothing."""
    for parent in dest.parents:
        if parent.exists() and not parent.is_dir():
            raise OptbenchError(f"--out {dest}: {parent} is a file, not a folder")
    if not dest.exists():
        return []
    if not dest.is_dir():
        raise OptbenchError(f"--out {dest} is a file, not a folder")
    marker = _read_marker(dest)
    if marker is None:
        if any(dest.iterdir()):
            raise OptbenchError(
                f"--out {dest} is not empty and holds no optbench export; optbench writes only into a new "
                "or empty folder or one of its own exports (choose another --out)"
            )
        return []
    if marker.get("format") != to:
        raise OptbenchError(
            f"--out {dest} holds an optbench {marker.get('format')} export; choose another --out for {to}"
        )
    return [str(name) for name in marker.get("files", [])]


def _read_marker(dest: Path) -> dict | None:
    try:
        marker = json.loads((dest / MARKER).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return marker if isinstance(marker, dict) and "optbench" in marker else None


def _forget(dest: Path, previous: list[str]) -> None:
    """Remove what our earlier export wrote (named in its marker, inside ``dest`` only), and folders of
    ours left empty."""
    root = dest.resolve()
    for name in previous:
        path = (dest / name).resolve()
        if root in path.parents and path.is_file():
            path.unlink()
            for parent in path.parents:
                if parent == root or any(parent.iterdir()):
                    break
                parent.rmdir()


def _write_marker(dest: Path, to: str, folder: Path, written: list[Path]) -> None:
    from optbench import __version__
    from optbench.store import write_text_atomic

    files = sorted(str(p.relative_to(dest)) for p in written)
    marker = {"optbench": __version__, "format": to, "source": str(folder), "files": files}
    write_text_atomic(json.dumps(marker, indent=1) + "\n", dest / MARKER)


_UNSAFE = re.compile(r"[^A-Za-z0-9._,=()+\-]+")


def run_labels(runs) -> dict[str, str]:
    """run_id -> a readable, file-system-safe name: the config values that vary between the folder's runs
    (``optimizer=adam,lr=0.01,seed=1``), the run id alone when nothing varies, the run id appended to a
    name cut at 120 characters."""
    from optbench.spec import CONFIG_FIELDS

    varying = [c for c in CONFIG_FIELDS if c in runs and runs[c].astype(str).nunique() > 1]
    labels = {}
    for row in runs.itertuples(index=False):
        run_id = row.run_id
        text = ",".join(f"{c}={_value(getattr(row, c))}" for c in varying) or run_id
        text = _UNSAFE.sub("_", text)
        labels[run_id] = text if len(text) <= 120 else f"{text[:111]}_{run_id[:8]}"
    return labels


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
