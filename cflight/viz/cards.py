"""Counterfactual *cards* laid out in a grid: one card per explained image, several cards per row.

A card is one :class:`~cflight.viz.gallery.GalleryRow`: a title line (the prediction change, coloured by
success), a small label above each panel (the column names), the panels side by side and a caption under
each, then the row's note. The grid gets as many cards per row as keep the page close to ``aspect``
(width / height) and within ``max_width`` pixels, so a gallery reads on a screen and in W&B. Drawn with PIL
(pixel-exact, fast) in DejaVu Sans, the font matplotlib ships, which has the arrows and ✓ ✗ glyphs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cflight.viz.gallery import GalleryRow, to_uint8

TITLE_LINES = 2  # a card's title wraps onto at most this many lines

OK, FAIL, GREY, INK = (30, 130, 60), (190, 40, 40), (110, 110, 110), (20, 20, 20)


@dataclass(frozen=True)
class CardStyle:
    """Sizes in pixels; ``panel``: the longest side a panel is scaled to (small images by whole factors)."""

    panel: int = 112
    gap: int = 6
    pad: int = 8
    margin: int = 10
    title_size: int = 15
    label_size: int = 11
    caption_size: int = 12
    note_size: int = 11

    def line(self, size: int) -> int:
        return round(size * 1.3)


@lru_cache(maxsize=16)
def font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    """DejaVu Sans at ``size`` px (from matplotlib's fonts), else PIL's default font."""
    try:
        from matplotlib import font_manager

        path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans",
                                                                 weight="bold" if bold else "normal"),
                                     fallback_to_default=True)
        return ImageFont.truetype(path, size)
    except Exception:  # no matplotlib or no font file: still draw, in PIL's own font
        return ImageFont.load_default(size)


def fit(text: str, f: ImageFont.ImageFont, width: float) -> str:
    """``text`` cut with an ellipsis to at most ``width`` pixels."""
    if f.getlength(text) <= width:
        return text
    while text and f.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def wrap(text: str, f: ImageFont.ImageFont, width: float) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` pixels (a longer word is cut by :func:`fit`)."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            if line and f.getlength(trial) > width:
                lines.append(fit(line, f, width))
                line = word
            else:
                line = trial
        lines.append(fit(line, f, width))
    return lines


def panel_image(panel, size: int) -> Image.Image:
    """A panel ``[C, H, W]`` in [0, 1] scaled so its longest side is about ``size`` (nearest for upscaling)."""
    img = Image.fromarray(to_uint8(panel))
    side = max(img.size)
    if side < size:
        k = max(1, round(size / side))
        return img.resize((img.width * k, img.height * k), Image.NEAREST)
    if side > size:
        k = size / side
        return img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.LANCZOS)
    return img


def panel_lines(row: GalleryRow) -> list[list[int | None]]:
    """The card's lines of panel positions (``row.lines``, else all panels on one line)."""
    return row.lines if row.lines else [list(range(len(row.panels)))]


@dataclass(frozen=True)
class _Layout:
    n_panels: int  # panels on the longest line
    n_lines: int
    panel_w: int
    panel_h: int
    caption_lines: int
    note_lines: int
    style: CardStyle
    title_lines: int = 1

    @property
    def line_height(self) -> int:
        s = self.style
        return s.line(s.label_size) + self.panel_h + 4 + self.caption_lines * s.line(s.caption_size)

    @property
    def width(self) -> int:
        s = self.style
        return 2 * s.pad + self.n_panels * self.panel_w + (self.n_panels - 1) * s.gap

    @property
    def height(self) -> int:
        s = self.style
        return (2 * s.pad + self.title_lines * s.line(s.title_size) + self.n_lines * self.line_height
                + self.note_lines * s.line(s.note_size))


def title_lines(row: GalleryRow, style: CardStyle, inner: float, most: int = TITLE_LINES) -> list[str]:
    """The card's title broken into at most ``most`` lines of ``inner`` pixels, room left for the tag (long
    class names, "digit 3 → digit 8 (p 0.97)", stay readable); what does not fit ends in an ellipsis."""
    f = font(style.title_size, True)
    width = inner - (font(style.label_size).getlength(row.tag) + 8 if row.tag else 0)
    lines = wrap(row.title, f, width)
    if len(lines) > most:
        lines = lines[:most - 1] + [fit(" ".join(lines[most - 1:]), f, width)]
    return lines


def _layout(rows: Sequence[GalleryRow], style: CardStyle) -> _Layout:
    sizes = [panel_image(p, style.panel).size for r in rows for p in r.panels[:1]]
    lines = [panel_lines(r) for r in rows]
    layout = _Layout(max(len(line) for ls in lines for line in ls), max(len(ls) for ls in lines),
                     max(w for w, _ in sizes), max(h for _, h in sizes),
                     max((c.count("\n") + 1 for r in rows for c in r.captions if c), default=0),
                     max((r.note.count("\n") + 1 for r in rows if r.note), default=0), style)
    inner = layout.width - 2 * style.pad
    return replace(layout, title_lines=max(len(title_lines(r, style, inner)) for r in rows))


def grid_columns(n: int, card_w: int, card_h: int, header_h: int = 0, margin: int = 10, aspect: float = 4 / 3,
                 max_width: int = 2600) -> int:
    """Cards per grid row for ``n`` cards: the page closest to ``aspect`` (w / h) within ``max_width``,
    a little against half-empty last rows."""
    best, best_cost = 1, math.inf
    for c in range(1, max(n, 1) + 1):
        w = c * card_w + (c + 1) * margin
        if c > 1 and w > max_width:
            break
        r = math.ceil(n / c)
        h = header_h + r * card_h + (r + 1) * margin
        empty = (r * c - n) / c
        cost = abs(math.log(w / h / aspect)) + 0.15 * empty
        if cost < best_cost:
            best, best_cost = c, cost
    return best


def draw_card(row: GalleryRow, columns: Sequence[str], layout: _Layout) -> Image.Image:
    """One card as an RGB image of ``layout``'s size."""
    s = layout.style
    card = Image.new("RGB", (layout.width, layout.height), "white")
    d = ImageDraw.Draw(card)
    border = OK if row.ok else FAIL if row.ok is not None else (200, 200, 200)
    d.rectangle([0, 0, layout.width - 1, layout.height - 1], outline=border, width=2 if row.ok is not None else 1)
    inner = layout.width - 2 * s.pad
    y = s.pad
    title_colour = OK if row.ok else FAIL if row.ok is not None else INK
    if row.tag:
        d.text((layout.width - s.pad, y + 2), row.tag, fill=GREY, font=font(s.label_size), anchor="ra")
    for j, line in enumerate(title_lines(row, s, inner)):
        d.text((s.pad, y + j * s.line(s.title_size)), line, fill=title_colour, font=font(s.title_size, True))
    y += layout.title_lines * s.line(s.title_size)  # the layout's title height: panels line up across cards
    for line in panel_lines(row):
        for slot, k in enumerate(line):
            if k is not None:
                _draw_panel(card, d, row, columns, k, s.pad + slot * (layout.panel_w + s.gap), y, layout)
        y += layout.line_height
    for line in row.note.split("\n") if row.note else []:
        d.text((s.pad, y), fit(line, font(s.note_size), inner), fill=GREY, font=font(s.note_size))
        y += s.line(s.note_size)
    return card


def _draw_panel(card: Image.Image, d: ImageDraw.ImageDraw, row: GalleryRow, columns: Sequence[str], k: int,
                x: int, y: int, layout: _Layout) -> None:
    """Panel ``k`` of ``row`` with its column label above and its caption below, its top-left at (x, y)."""
    s = layout.style
    label = columns[k] if k < len(columns) else ""
    d.text((x, y), fit(label, font(s.label_size), layout.panel_w), fill=GREY, font=font(s.label_size))
    img = panel_image(row.panels[k], s.panel)
    top = y + s.line(s.label_size)
    card.paste(img, (x + (layout.panel_w - img.width) // 2, top + (layout.panel_h - img.height) // 2))
    cy = top + layout.panel_h + 4
    caption = row.captions[k] if k < len(row.captions) else ""
    for line in caption.split("\n") if caption else []:
        d.text((x, cy), fit(line, font(s.caption_size), layout.panel_w + s.gap - 2), fill=INK, font=font(s.caption_size))
        cy += s.line(s.caption_size)


def render_cards(rows: Sequence[GalleryRow], columns: Sequence[str], header: str = "",
                 style: CardStyle = CardStyle(), aspect: float = 4 / 3, max_width: int = 2600) -> np.ndarray:
    """All ``rows`` as cards on one page (a grid, ``header`` lines on top); the RGB uint8 array."""
    if not rows:
        return np.full((1, 1, 3), 255, dtype=np.uint8)
    layout = _layout(rows, style)
    head_font, line_h, m = font(style.caption_size + 1), style.line(style.caption_size + 1), style.margin
    lines = header.split("\n") if header else []
    header_h = len(lines) * line_h + (m if lines else 0)
    c = grid_columns(len(rows), layout.width, layout.height, header_h, m, aspect, max_width)
    r = math.ceil(len(rows) / c)
    width = c * layout.width + (c + 1) * m
    lines = [(k, part) for k, line in enumerate(lines) for part in wrap(line, head_font, width - 2 * m)]
    header_h = len(lines) * line_h + (m if lines else 0)  # a narrow page wraps the header
    page = Image.new("RGB", (width, header_h + r * layout.height + (r + 1) * m), "white")
    d = ImageDraw.Draw(page)
    for n, (k, line) in enumerate(lines):
        d.text((m, m + n * line_h), line, fill=INK, font=font(style.caption_size + 1, bold=k == 0))
    for n, row in enumerate(rows):
        i, j = divmod(n, c)
        page.paste(draw_card(row, columns, layout), (m + j * (layout.width + m), header_h + m + i * (layout.height + m)))
    return np.asarray(page)
