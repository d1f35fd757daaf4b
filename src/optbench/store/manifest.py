"""The manifest of a results folder (command line, versions, device, start/end time) and where new
folders go."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from optbench.store.files import write_text_atomic
from optbench.store.layout import MANIFEST_FILE


def environment() -> dict[str, Any]:
    """Versions and device names: the evidence a result carries."""
    import torch

    from optbench import __version__

    env = {
        "optbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def cpu_model() -> str:
    """The CPU model ("AMD EPYC 9554 64-Core Processor"); ``platform.processor()`` is often empty on Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def start_manifest(out: Path, command: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the manifest at the start of a command (ended_at filled by ``finish_manifest``).

    Refuses (``store.folder.check_out``) a folder that is not ours or holds another kind of results: the
    last line of defence for Python callers that did not go through ``store.results_folder``.
    """
    from optbench.store.folder import check_out

    check_out(out, (extra or {}).get("experiment") or command)
    # The bench command line when run from the CLI; None from the Python API (argv is the host script's).
    from_cli = Path(sys.argv[0]).name in ("bench", "__main__.py")
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest = {
        "command": command,
        "command_line": shlex.join(["bench", *sys.argv[1:]]) if from_cli else None,
        "argv": sys.argv,
        "started_at": started_at,
        "ended_at": None,
        **_resumed_totals(out, command, started_at),
        **environment(),
        **(extra or {}),
    }
    write_text_atomic(json.dumps(manifest, indent=2, default=str), Path(out) / MANIFEST_FILE)
    _clock[id(manifest)] = time.monotonic()
    return manifest


# When each manifest's invocation started (monotonic clock), for its elapsed time; not written to the file.
_clock: dict[int, float] = {}


def _resumed_totals(out: Path, command: str, started_at: str) -> dict[str, Any]:
    """Times across invocations: a resumed grid's manifest keeps when its folder's first invocation started
    and how long the earlier ones took, so ``total_elapsed_s`` is the whole grid's time, not the last
    invocation's."""
    previous = read_manifest(out) if (Path(out) / MANIFEST_FILE).exists() else {}
    if previous.get("command") != command:
        return {"first_started_at": started_at, "invocations": 1, "earlier_elapsed_s": 0.0}
    return {
        "first_started_at": previous.get("first_started_at") or previous.get("started_at") or started_at,
        "invocations": int(previous.get("invocations") or 1) + 1,
        "earlier_elapsed_s": float(previous.get("total_elapsed_s") or 0.0),
    }


def finish_manifest(out: Path, manifest: dict[str, Any], **extra: Any) -> None:
    """The manifest at the end of a command: ended_at, this invocation's ``elapsed_s`` and, over every
    invocation into this folder (a resumed grid), ``total_elapsed_s``."""
    started = _clock.pop(id(manifest), None)
    timing = {}
    if started is not None:
        elapsed = time.monotonic() - started
        timing = {
            "elapsed_s": elapsed,
            "total_elapsed_s": float(manifest.get("earlier_elapsed_s", 0.0)) + elapsed,
        }
    manifest = {**manifest, **timing, **extra, "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_text_atomic(json.dumps(manifest, indent=2, default=str), Path(out) / MANIFEST_FILE)


def read_manifest(out: Path) -> dict[str, Any]:
    """The manifest of a results folder; {} if it has none or it is unreadable (``folder.our_manifest``
    says why)."""
    from optbench.store.folder import our_manifest

    path = Path(out) / MANIFEST_FILE
    if not path.exists():
        return {}
    manifest, _ = our_manifest(out)
    return manifest or {}


def default_out(kind: str, root: str | Path = "results") -> Path:
    """A new folder under ``results/`` named after the command and the time, e.g. lr-sweep-20261122-101500."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(root) / f"{kind}-{stamp}"
    n = 1
    while out.exists():
        n += 1
        out = Path(root) / f"{kind}-{stamp}-{n}"
    return out


def append_to_manifest(out: Path, key: str, entry: dict[str, Any]) -> None:
    """Add ``entry`` to the list ``key`` of the manifest (e.g. the repairs ``bench verify --repair`` made)."""
    manifest = read_manifest(out)
    manifest.setdefault(key, []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry})
    write_text_atomic(json.dumps(manifest, indent=2, default=str), Path(out) / MANIFEST_FILE)
