"""The mark every figure optbench draws carries in its file (PNG text chunk, SVG/PDF Creator), and the
check that reads it back: `bench plot` writes over an existing file only when optbench wrote it."""

from __future__ import annotations

from pathlib import Path

from optbench.errors import OptbenchError

MARK = "optbench"
HEAD_BYTES = 1 << 16  # PNG text chunks and SVG metadata come first in the file...
TAIL_BYTES = 1 << 16  # ...PDF's Info dictionary comes last


def metadata(path: Path) -> dict:
    """savefig metadata: the mark, and no creation date (SVG/PDF files are reproducible)."""
    suffix = Path(path).suffix.lstrip(".")
    if suffix == "svg":
        return {"Date": None, "Creator": f"{MARK} (matplotlib)"}
    if suffix == "pdf":
        return {"CreationDate": None, "Creator": f"{MARK} (matplotlib)"}
    return {"Software": f"{MARK} (matplotlib)"}


def written_by_optbench(path: Path) -> bool:
    """Whether the figure file at ``path`` carries the mark."""
    mark = MARK.encode()
    with open(path, "rb") as file:
        head = file.read(HEAD_BYTES)
        if path.suffix.lower() != ".pdf":
            return mark in head
        file.seek(max(file.seek(0, 2) - TAIL_BYTES, 0))
        return mark in head or mark in file.read()


def check_overwrite(path: Path, *, folder_of: str | None = None) -> None:
    """One line unless ``path`` is new or a figure optbench drew. ``folder_of`` names the command whose
    results folder ``path`` lies in: those files are that command's own, whoever drew them."""
    path = Path(path)
    if not path.exists():
        return
    if folder_of is not None:
        raise OptbenchError(
            f"{path} exists and belongs to the {folder_of} in {str(path.parent)!r}; give --out another file "
            "or folder"
        )
    if not path.is_file() or not written_by_optbench(path):
        raise OptbenchError(f"{path} exists and optbench did not draw it; give --out another file or folder")
