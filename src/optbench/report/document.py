"""The report as a document: sections of text, tables and figures, independent of HTML or Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    name: str
    path: Path | None  # None: the figure could not be drawn, ``caption`` says why
    caption: str
    refused: bool = False  # not drawn because it does not suit this data (too many panels), not an error


@dataclass
class Table:
    title: str
    frame: Any  # pandas DataFrame
    note: str | None = None
    numeric: list[bool] | None = None  # right-aligned columns; None: those whose cells all read as numbers


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
