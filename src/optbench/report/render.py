"""Rendering the report's sections as one self-contained HTML page (Jinja2, templates/report.html) or as
Markdown."""

from __future__ import annotations

import base64
import contextlib
import functools
import math
from pathlib import Path

from optbench.report.document import Section, Table


def fmt_cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item") and not isinstance(value, str):
        with contextlib.suppress(ValueError, AttributeError):
            value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    return str(value)


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    frame = table.frame
    return [str(c) for c in frame.columns], [
        [fmt_cell(v) for v in row] for row in frame.itertuples(index=False)
    ]


def _numeric_columns(table: Table, head: list[str], rows: list[list[str]]) -> list[bool]:
    """Which columns are right-aligned: as the table says, else those whose every cell reads as a number."""
    if table.numeric is not None:
        return list(table.numeric)
    return [all(_is_numeric_text(r[i]) for r in rows) for i in range(len(head))]


def _is_numeric_text(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text == "–"


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".svg": "image/svg+xml"}[path.suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _paragraph(text: str):
    """Paragraph text as HTML: ```blocks``` become <pre>, `code` becomes <code>, the rest is escaped."""
    from markupsafe import Markup, escape

    if text.count("```") >= 2:
        before, _, rest = text.partition("```")
        block, _, after = rest.partition("```")
        return _paragraph(before) + Markup("<pre>{}</pre>").format(block.strip()) + _paragraph(after)
    if not text.strip():
        return Markup("")
    parts = text.split("`")
    inner = Markup("").join(
        Markup("<code>{}</code>").format(p) if i % 2 else escape(p) for i, p in enumerate(parts)
    )
    return Markup("<p>{}</p>").format(inner)


@functools.cache
def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("optbench.report", "templates"),
        autoescape=True,
        keep_trailing_newline=True,
    )
    env.filters["paragraph"] = _paragraph
    return env.get_template("report.html")


def _table_context(table: Table) -> dict:
    head, rows = _cells(table)
    numeric = _numeric_columns(table, head, rows)
    return {"title": table.title, "note": table.note, "head": head, "rows": rows, "numeric": numeric}


def render_html(sections: list[Section], title: str) -> str:
    """One self-contained page (templates/report.html, Jinja2 with autoescape): figures as data: URIs."""
    context = [
        {
            "title": section.title,
            "text": section.text,
            "tables": [_table_context(t) for t in section.tables],
            "figures": [
                {
                    "name": f.name,
                    "caption": f.caption,
                    "src": _data_uri(f.path) if f.path is not None else None,
                }
                for f in section.figures
            ],
        }
        for section in sections
    ]
    page = _template().render(title=title, sections=context)
    # Text may quote URLs (torch warnings do); write "://" as an entity so the file names no network address.
    return page.replace("://", "&#58;//")


def render_markdown(sections: list[Section], title: str, base: Path) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for text in section.text:
            lines += [text, ""]
        for table in section.tables:
            head, rows = _cells(table)
            lines += [f"**{table.title}**", ""]
            if table.note:
                lines += [f"_{table.note}_", ""]
            lines.append("| " + " | ".join(h.replace("|", "\\|") for h in head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += [
                "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in row) + " |"
                for row in rows
            ]
            lines.append("")
        for figure in section.figures:
            if figure.path is None:
                lines += [f"_{figure.caption}_", ""]
                continue
            lines += [
                f"![{figure.name}]({figure.path.relative_to(base).as_posix()})",
                "",
                f"_{figure.caption}_",
                "",
            ]
    return "\n".join(lines)
