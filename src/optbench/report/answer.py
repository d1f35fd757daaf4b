"""The compact answer of a grid as plain text tables (a title, columns, rows of strings): the best setting
per optimizer and the top settings, from ``grid.summary.settings_table``. The CLI prints them with rich
(`bench summary`, the end of `bench grid`), the report renders them as HTML or Markdown: one wording."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TextTable:
    title: str
    columns: list[tuple[str, bool]]  # (header, numeric: right-aligned, never cut)
    rows: list[list[str]]

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=[name for name, _ in self.columns])

    def without(self, names: list[str]) -> TextTable:
        """The table less the columns named ``names`` (to fit a narrow terminal)."""
        keep = [i for i, (name, _) in enumerate(self.columns) if name not in names]
        return TextTable(
            self.title, [self.columns[i] for i in keep], [[r[i] for i in keep] for r in self.rows]
        )


def num(value, digits: int = 3) -> str:
    """A number in at most ``digits`` significant digits; "-" for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}g}"
    return str(value)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "default"
    return num(value) if isinstance(value, float) else str(value)


def loss_text(row) -> str:
    text = num(row["final_loss"])
    if row["final_loss_std"] == row["final_loss_std"]:  # not NaN: 2+ ok seeds
        text += f" ± {num(row['final_loss_std'], 2)}"
    return text


def shape_line(runs, table) -> str:
    """``500 runs: 4 optimizer x 25 lr x 5 momentum, 1 seed; 482 ok, 18 diverged``."""
    axes = [c for c in table.attrs["axes"] if table[c].astype(object).map(str).nunique() > 1]
    sizes = " x ".join(f"{table[c].astype(object).map(str).nunique()} {c}" for c in axes) or "1 setting"
    seeds = int(runs["seed"].nunique())
    counts = runs["status"].value_counts()
    statuses = ", ".join(
        f"{int(counts[s])} {s}" for s in ("ok", "diverged", "invalid", "failed") if s in counts
    )
    return f"{len(runs)} run{'s' * (len(runs) != 1)}: {sizes}, {seeds} seed{'s' * (seeds != 1)}; {statuses}"


def _varying(table) -> list[str]:
    return [c for c in table.attrs["axes"] if table[c].astype(object).map(str).nunique() > 1]


def _is_numeric(table, column: str) -> bool:
    return table[column].dtype.kind in "fiu"


def best_table(table) -> TextTable:
    """Per ``by`` group: its best setting, loss, stable lr range, diverged (and invalid) runs, val accuracy."""
    by = table.attrs["by"]
    setting = [c for c in _varying(table) if c not in by]
    acc = bool(table["final_val_acc"].notna().any())
    bad = bool((table["invalid"] + table["failed"]).any())
    columns = [(c, False) for c in by] + [(c, _is_numeric(table, c)) for c in setting]
    columns += [("final loss", True), ("stable lr", True), ("diverged", True)]
    columns += [("invalid", True)] * bad + [("val acc", True)] * acc
    rows = []
    for _, group in table.groupby([table[c].astype(object).map(str) for c in by], sort=False):
        best = group[group["best"]]
        row = best.iloc[0] if len(best) else group.iloc[0]
        cells = [_cell(row[c]) for c in by]
        if len(best):
            stable = f"{num(row['stable_lr_min'])}–{num(row['stable_lr_max'])}"
            cells += [_cell(row[c]) for c in setting] + [loss_text(row), stable]
        else:
            cells += ["-"] * len(setting) + ["none finished", "-"]
        cells.append(f"{int(group['diverged'].sum())}/{int(group['seeds'].sum())}")
        cells += [str(int(group[["invalid", "failed"]].sum().sum()))] * bad
        cells += [num(row["final_val_acc"]) if len(best) else "-"] * acc
        rows.append(cells)
    title = f"best per {', '.join(by)} (lowest mean final loss, all seeds ok)"
    return TextTable(title, columns, rows)


# The header of each sort column the top table shows only when it ranks on it (the others are always there).
SORT_HEADERS = {"best_loss": "best loss", "final_val_loss": "val loss", "wall_time_s": "time (s)"}


def top_table(table, top: int, sort: str) -> TextTable:
    """The first ``top`` settings of the sorted table: rank, the varying axes, loss (and the column it is
    sorted on), diverged seeds, val accuracy. Where problems (or loss functions) differ, whose losses are
    not comparable, the first ceil(top / n) of each of the n, problem (and loss) first, ranked within."""
    from optbench.grid.summary import comparable_axes

    groups = comparable_axes(table)
    varying = [c for c in _varying(table) if c not in groups]
    acc = bool(table["final_val_acc"].notna().any())
    ranked_on = [sort] if sort in SORT_HEADERS else []
    columns = [(c, _is_numeric(table, c)) for c in groups] + [("#", True)]
    columns += [(c, _is_numeric(table, c)) for c in varying] + [("final loss", True)]
    columns += [(SORT_HEADERS[c], True) for c in ranked_on]
    columns += [("diverged", True)] + [("val acc", True)] * acc
    parts = [table]
    if groups:
        parts = [
            part for _, part in table.groupby([table[c].astype(object).map(str) for c in groups], sort=False)
        ]
    each = math.ceil(top / len(parts))
    rows = []
    for part in parts:
        for rank, (_, row) in enumerate(part.head(each).iterrows(), 1):
            cells = [_cell(row[c]) for c in groups] + [str(rank)] + [_cell(row[c]) for c in varying]
            cells += [loss_text(row)] + [num(row[c]) for c in ranked_on]
            cells += [f"{int(row['diverged'])}/{int(row['seeds'])}"]
            rows.append(cells + [num(row["final_val_acc"])] * acc)
    if groups:
        title = f"top {each} per {', '.join(groups)} of {len(table)} settings by {sort}"
    else:
        title = f"top {len(rows)} of {len(table)} settings by {sort}"
    return TextTable(title, columns, rows)
