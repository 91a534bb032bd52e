"""A self-contained HTML report: sections of numbers and tables, with plots embedded as base64 PNGs."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from snn.atomic import write_text_atomic

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
figure{margin:.8em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.kv td:first-child{font-weight:600}
.ok{color:#176b2c}.bad{color:#a11}
"""


@dataclass
class Section:
    """One report section: a title, key/value numbers, tables and figures (PNG paths)."""

    title: str
    numbers: dict = field(default_factory=dict)
    tables: list[tuple[str, list[str], list[list]]] = field(default_factory=list)  # (caption, header, rows)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, png path)
    text: str = ""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return html.escape(json.dumps(v))
    return html.escape(str(v))


def _img(path: Path) -> str:
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG"):
        raise ValueError(f"report figure {path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def render_html(title: str, sections: list[Section], subtitle: str = "") -> str:
    """The whole page as one string; every figure is inlined, nothing is loaded from elsewhere."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    if subtitle:
        out.append(f"<p>{html.escape(subtitle)}</p>")
    for s in sections:
        out.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.text:
            out.append(f"<p>{html.escape(s.text)}</p>")
        if s.numbers:
            out.append('<table class="kv"><tbody>')
            out.extend(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in s.numbers.items())
            out.append("</tbody></table>")
        for caption, header, rows in s.tables:
            out.append(f"<table><caption>{html.escape(caption)}</caption><thead><tr>")
            out.extend(f"<th>{html.escape(str(h))}</th>" for h in header)
            out.append("</tr></thead><tbody>")
            for row in rows:
                out.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>")
            out.append("</tbody></table>")
        for caption, path in s.figures:
            out.append(f'<figure><img alt="{html.escape(caption)}" src="{_img(path)}">'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(path, title: str, sections: list[Section], subtitle: str = "") -> Path:
    return write_text_atomic(path, render_html(title, sections, subtitle))
