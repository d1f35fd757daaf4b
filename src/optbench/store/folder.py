"""Which folder a command may write into, and holding it for the length of the command.

A folder is *ours* (an optbench results folder) when its manifest.json parses and names optbench; its
*kind* is the command that made it (the manifest's ``experiment``, else its ``command``): grid, lr-sweep,
lr-find, schedules, init-report, amp. A command writes only into a new folder, an empty one, or one of its
own kind:

- a blank ``--out`` is refused, and so is a path that is, or runs through, a file;
- a non-empty folder without a manifest of ours is refused before anything is written: optbench never
  deletes or rewrites a file it did not write;
- a folder of another kind is refused (a grid's runs mixed into an lr sweep's table would be wrong data).

``results_folder`` checks, creates, locks (``store.lock``), clears our own stale temp files, and, when the
command fails or is interrupted before it committed a run, removes the folders it created (``results/``
included), so an early error leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.store import lock
from optbench.store.files import TEMP_NAME, remove_stale_temps
from optbench.store.layout import COMMITS_DIR, MANIFEST_FILE, RUN_FILE_NAME, TRACES_DIR

OWN_DOT_FILES = (lock.GRID_LOCK, lock.WRITERS_LOCK)  # what a folder holds before its command wrote anything


def folder_kind(manifest: dict) -> str | None:
    """The command that made a results folder: grid, lr-sweep, lr-find, schedules, init-report, amp."""
    return manifest.get("experiment") or manifest.get("command")


def our_manifest(folder: Path) -> tuple[dict | None, str | None]:
    """(manifest, None) for a folder of ours; (None, why not) otherwise ("no manifest.json", ...)."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None, f"no {MANIFEST_FILE}"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, f"its {MANIFEST_FILE} is unreadable ({type(err).__name__})"
    if not isinstance(manifest, dict) or "optbench" not in manifest:
        return None, f"its {MANIFEST_FILE} was not written by optbench"
    return manifest, None


def _has_content(folder: Path) -> bool:
    """Anything but our lock files and temp files (what a command killed before its first write leaves)."""
    return any(p.name not in OWN_DOT_FILES and not TEMP_NAME.match(p.name) for p in folder.iterdir())


def check_out(out: str | Path | None, kind: str) -> Path:
    """``out`` as a Path if ``kind`` may write into it; else OptbenchError with one line. Writes nothing."""
    if out is None or not str(out).strip():
        raise OptbenchError("--out is empty; give a folder name (or leave --out out for a new folder)")
    out = Path(out)
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise OptbenchError(f"--out {out}: {parent} is a file, not a folder")
    if not out.exists():
        return out
    if not out.is_dir():
        raise OptbenchError(f"--out {out} is a file, not a folder")
    manifest, why_not = our_manifest(out)
    if manifest is None:
        if _has_content(out):
            raise OptbenchError(
                f"--out {out} is not empty and is not an optbench results folder ({why_not}); optbench "
                "writes only into a new or empty folder or one of its own results folders"
            )
        return out
    found = folder_kind(manifest)
    if found != kind:
        raise OptbenchError(
            f"--out {out} holds the results of bench {found}; bench {kind} writes only into a new folder "
            f"or one of its own (choose another --out)"
        )
    return out


def require_folder(out: str | Path) -> None:
    """A results folder may not exist yet, but it must not be a file (a one-line error, not a traceback)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptbenchError(f"--out {out} is a file, not a folder")


def has_commits(out: Path) -> bool:
    folder = Path(out) / COMMITS_DIR
    return folder.is_dir() and any(RUN_FILE_NAME.match(p.name) for p in folder.iterdir())


@contextlib.contextmanager
def results_folder(out: str | Path, kind: str) -> Iterator[Path]:
    """Hold ``out`` for one command of ``kind``: check it (``check_out``), create it, take its lock, remove
    our stale temp files; on an error or interrupt before any run was committed, remove what was created."""
    out = check_out(out, kind)
    created = _create(out)
    try:
        with lock.exclusive(out, kind):
            check_out(out, kind)  # again under the lock: another command may have written it meanwhile
            remove_stale_temps(out, (TRACES_DIR, COMMITS_DIR))
            yield out
    except BaseException:
        if created is not None and not has_commits(out):
            _remove_created(out, created)
        raise


def _create(out: Path) -> Path | None:
    """Make ``out`` and its missing parents; return the topmost folder made (None if ``out`` existed)."""
    topmost = None
    for path in (out, *out.parents):
        if path.exists():
            break
        topmost = path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OptbenchError(f"cannot create --out {out}: {err.strerror}") from None
    return topmost


def _remove_created(out: Path, topmost: Path) -> None:
    """Remove ``out`` (made by this command) and the parents it made, as long as they are empty."""
    shutil.rmtree(out, ignore_errors=True)
    if topmost == out:
        return
    for parent in out.parents:
        with contextlib.suppress(OSError):  # not empty: someone else put something there meanwhile
            parent.rmdir()
        if parent == topmost:
            return
