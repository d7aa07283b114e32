"""The job's HTML gallery: every explained image with its numbers, in tables sortable by a click on a column.

Self-contained and offline: images are embedded as PNG data URIs, the sorting is a few lines of inline
JavaScript, no external assets. Rows are streamed: :class:`HtmlGallery` keeps at most one page of rows in
memory; a job with more rows than one page gets ``<stem>_html/page_0001.html`` … and an index page at
``path`` linking them. All text is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from typing import Any

from cflight.viz.gallery import GalleryRow

PAGE_ROWS = 500
PAGE_BYTES = 64 * 2**20  # a page of large images starts a new page sooner, so a browser still opens it

_STYLE = """body{font-family:sans-serif;margin:16px;color:#222}
table{border-collapse:collapse} th,td{padding:4px 6px;vertical-align:top;text-align:center}
thead th{position:sticky;top:0;background:#eee;font-size:12px}
th.s{cursor:pointer;white-space:nowrap} th.s:hover{background:#ddd}
tbody tr:nth-child(even){background:#f7f7f7}
td.n{font-size:12px;font-variant-numeric:tabular-nums} td.x{font-size:11px;max-width:260px;text-align:left}
.cap{font-size:11px;max-width:180px;margin:auto} .tag{font-size:11px;color:#777}
.t{font-size:13px;text-align:left;min-width:170px;max-width:240px} .t>span{font-weight:bold;overflow-wrap:anywhere} .ok{color:#1e823c} .no{color:#be2828}
img{image-rendering:pixelated} .notes span{display:inline-block;font-size:12px;margin:0 14px 4px 0}"""

# Click a sortable header: rows ordered by the cells' data-v (numbers as numbers); a second click reverses.
# A link to ``page.html#sort=steps`` (or ``#sort=-steps``, descending) opens the page sorted.
_SCRIPT = """function cfSort(th,d){var b=th.closest('table').tBodies[0],i=th.cellIndex;th.dataset.d=d;
var rows=Array.prototype.slice.call(b.rows);rows.sort(function(p,q){var x=p.cells[i].dataset.v,y=q.cells[i].dataset.v,
a=parseFloat(x),c=parseFloat(y);return d*(isNaN(a)||isNaN(c)?x.localeCompare(y):a-c);});
rows.forEach(function(r){b.appendChild(r);});}
document.querySelectorAll('th.s').forEach(function(th){th.onclick=function(){cfSort(th,th.dataset.d==='1'?-1:1);};});
var m=/sort=(-?)([^&]+)/.exec(decodeURIComponent(location.hash));if(m){document.querySelectorAll('th.s').forEach(
function(th){if(th.textContent===m[2])cfSort(th,m[1]?-1:1);});}"""


def data_uri(panel: Any, size: int = 112) -> str:
    """A panel ``[C, H, W]`` in [0, 1] as a PNG data URI, scaled like a card's panel."""
    from cflight.viz.cards import panel_image

    buf = io.BytesIO()
    panel_image(panel, size).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def cell(value: Any) -> str:
    """One sortable table cell: the shown text and its sort key ``data-v``, both escaped."""
    if isinstance(value, bool):
        shown, key = ("✓" if value else "✗"), str(int(value))
    elif isinstance(value, float):
        shown, key = f"{value:.4g}", repr(value)
    else:
        shown = key = str(value)
    kind = "x" if isinstance(value, str) and len(value) > 16 else "n"  # long text wraps, left-aligned
    return f'<td class="{kind}" data-v="{html.escape(key)}">{html.escape(shown)}</td>'


def _text(s: str) -> str:
    return html.escape(s).replace("\n", "<br>")


def page(title: str, body: str, notes: Sequence[str] = ()) -> str:
    """A whole HTML document with the gallery's style and sorting script."""
    note_html = "".join(f"<span>{html.escape(n)}</span>" for n in notes)
    notes_div = f'<div class="notes">{note_html}</div>' if notes else ""
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h2>{html.escape(title)}</h2>{notes_div}{body}"
            f"<script>{_SCRIPT}</script></body></html>")


class HtmlGallery:
    """Streams gallery rows into sortable HTML tables, ``page_rows`` rows a page.

    ``columns``: the panels' column names; the numeric columns are the first row's ``values`` keys.
    :meth:`close` writes ``path``: the table itself when everything fits one page, else an index linking
    the pages. Rows are written in the order they are added (the writer adds them in index order).
    """

    def __init__(self, path: str, columns: Sequence[str], title: str = "cflight gallery", notes: Sequence[str] = (),
                 panel: int = 112, page_rows: int = PAGE_ROWS, page_bytes: int = PAGE_BYTES) -> None:
        self.path, self.columns, self.title, self.notes = path, list(columns), title, list(notes)
        self.panel, self.page_rows, self.page_bytes = panel, max(1, page_rows), page_bytes
        stem = os.path.splitext(os.path.basename(path))[0]
        self.pages_dir = os.path.join(os.path.dirname(path), f"{stem}_html")
        self.value_columns: list[str] | None = None
        self._rows: list[str] = []
        self._first = self._last = ""
        self._bytes = 0
        self._pages: list[tuple[str, str, str, int]] = []  # file name, first and last row's title, rows

    def add(self, row: GalleryRow) -> None:
        if self.value_columns is None:
            self.value_columns = list(row.values)
        if len(self._rows) >= self.page_rows or self._bytes >= self.page_bytes:
            self._flush()
        text = self._row(row)
        label = row.tag or row.title
        self._first = self._first if self._rows else label
        self._last = label
        self._rows.append(text)
        self._bytes += len(text)

    def _row(self, row: GalleryRow) -> str:
        status = "" if row.ok is None else (' class="ok"' if row.ok else ' class="no"')
        tag = f'<div class="tag">{_text(row.tag)}</div>' if row.tag else ""
        note = f'<div class="cap">{_text(row.note)}</div>' if row.note else ""
        head = f'<td class="t"><span{status}>{_text(row.title)}</span>{tag}{note}</td>'
        panels = "".join(f'<td><img src="{data_uri(p, self.panel)}"><div class="cap">{_text(c)}</div></td>'
                         for p, c in zip(row.panels, row.captions))
        values = "".join(cell(row.values.get(k, "")) for k in self.value_columns or [])
        return f"<tr>{head}{panels}{values}</tr>"

    def _table(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["image", *self.columns])
        head += "".join(f'<th class="s" title="click to sort">{html.escape(c)}</th>' for c in self.value_columns or [])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(self._rows)}</tbody></table>"

    def _flush(self) -> None:
        """Write the rows held so far as the next page file."""
        os.makedirs(self.pages_dir, exist_ok=True)
        name = f"page_{len(self._pages) + 1:04d}.html"
        n = len(self._rows)
        title = f"{self.title}: page {len(self._pages) + 1} ({n} rows, {self._first} … {self._last})"
        back = f'<p><a href="../{html.escape(os.path.basename(self.path))}">all pages</a></p>'
        _write(os.path.join(self.pages_dir, name), page(title, back + self._table()))
        self._pages.append((name, self._first, self._last, n))
        self._rows, self._bytes = [], 0

    def close(self) -> list[str]:
        """Write what is left and ``path``; returns the written files (``path`` first)."""
        if not self._pages:
            hint = "<p>Click a column header to sort; again to reverse.</p>"
            _write(self.path, page(self.title, hint + self._table(), self.notes))
            return [self.path]
        if self._rows:
            self._flush()
        folder = os.path.basename(self.pages_dir)
        links = "".join(f'<li><a href="{html.escape(folder)}/{name}">page {k + 1}</a>: {n} rows, '
                        f"{html.escape(first)} … {html.escape(last)}</li>"
                        for k, (name, first, last, n) in enumerate(self._pages))
        total = sum(p[3] for p in self._pages)
        body = f"<p>{total} rows in {len(self._pages)} pages, in dataset-index order; each sorts by a click on a " \
               f"column header.</p><ol>{links}</ol>"
        _write(self.path, page(self.title, body, self.notes))
        return [self.path, *(os.path.join(self.pages_dir, p[0]) for p in self._pages)]


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
