"""A self-contained HTML page: tables and figures embedded, readable offline on its own."""

from __future__ import annotations

import base64
import html
from pathlib import Path

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3} .bad{color:#b00020;font-weight:600} .ok{color:#1b7f3b}
figure{margin:1rem 0} figure img{max-width:100%;border:1px solid #eee}
code{background:#f6f6f6;padding:0 .2rem}
.findings{background:#f7f9fc;border-left:4px solid #3b6fb6;padding:.4rem 1rem;margin:1rem 0}
.findings li{margin:.25rem 0}
"""


def img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def table(header: list[str], rows: list[list], klass: list[list[str]] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"]
    for i, r in enumerate(rows):
        cells = []
        for j, c in enumerate(r):
            cl = f' class="{klass[i][j]}"' if klass and klass[i][j] else ""
            cells.append(f"<td{cl}>{html.escape(_fmt(c))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def page(title: str, sections: list[str]) -> str:
    body = "\n".join(sections)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
