"""Rendering the report's sections as one self-contained HTML page or as Markdown."""

from __future__ import annotations

import base64
import contextlib
import html
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


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1180px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #eee; }
h3 { font-size: 1.05em; margin-bottom: .3em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; } code, pre { background: #f6f6f6; font-size: .85em; }
pre { padding: .6em; overflow-x: auto; } nav ul { columns: 2; } .note { color: #666; font-size: .85em; }
"""


def _html_text(text: str) -> str:
    """Paragraph text: ```blocks``` become <pre>, `code` becomes <code>, the rest is escaped."""
    if text.count("```") >= 2:
        before, _, rest = text.partition("```")
        block, _, after = rest.partition("```")
        return _html_text(before) + f"<pre>{html.escape(block.strip())}</pre>" + _html_text(after)
    if not text.strip():
        return ""
    parts = text.split("`")
    out = "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))
    return f"<p>{out}</p>"


def _html_table(table: Table) -> str:
    head, rows = _cells(table)
    numeric = [all(_is_numeric_text(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"<h3>{html.escape(table.title)}</h3>"]
    if table.note:
        lines.append(f'<p class="note">{html.escape(table.note)}</p>')
    lines.append(
        "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
    )
    for row in rows:
        cells = "".join(
            f"<td{' class=num' if numeric[i] else ''}>{html.escape(v)}</td>" for i, v in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _is_numeric_text(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text == "–"


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".svg": "image/svg+xml"}[path.suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def render_html(sections: list[Section], title: str) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", "<nav><ul>"]
    body += [f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections)]
    body.append("</ul></nav>")
    for i, section in enumerate(sections):
        body.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>')
        body += [_html_text(t) for t in section.text]
        body += [_html_table(t) for t in section.tables]
        for figure in section.figures:
            if figure.path is None:
                body.append(f'<p class="note">{html.escape(figure.caption)}</p>')
                continue
            body.append(
                f'<figure><img src="{_data_uri(figure.path)}" alt="{html.escape(figure.name)}">'
                f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
            )
        body.append("</section>")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
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
