"""Counterfactual galleries as PNG (matplotlib) and self-contained HTML; pure functions of tensors."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor


@dataclass
class GalleryRow:
    """One explained image: panels ``[C, H, W]`` in [0, 1] and a caption per panel.

    ``title``: the card's headline (the prediction change); ``ok``: success (colours the card; ``None``:
    neutral); ``tag``: small text beside the title (dataset index, label); ``note``: lines under the panels;
    ``values``: the image's numbers by column name, for the sortable HTML table; ``lines``: how a PNG card
    arranges the panels, as lines of panel positions (``None``: an empty slot; default: one line).
    """

    panels: list[Tensor]
    captions: list[str]
    title: str = ""
    note: str = ""
    ok: bool | None = None
    tag: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    lines: list[list[int | None]] | None = None


def to_uint8(image: Tensor) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] → ``[H, W, 3]`` uint8 (grey images are repeated over RGB)."""
    img = image.detach().float().clamp(0, 1).cpu()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return (rearrange(img, "c h w -> h w c").numpy() * 255).round().astype(np.uint8)


def difference_map(x: Tensor, x_cf: Tensor) -> Tensor:
    """Signed change averaged over channels as an RGB image: red where the image got brighter, blue darker.

    Scaled per image by the largest absolute change so small edits stay visible; returns ``[3, H, W]``.
    """
    d = (x_cf - x).mean(0)
    scale = d.abs().max().clamp_min(1e-8)
    d = d / scale
    pos, neg = d.clamp_min(0), (-d).clamp_min(0)
    return torch.stack([1 - neg, 1 - pos - neg, 1 - pos]).clamp(0, 1)


def gallery_columns(with_reconstruction: bool) -> list[str]:
    cols = ["original"] + (["reconstruction"] if with_reconstruction else []) + ["counterfactual", "difference"]
    return cols


CARDS_PER_PAGE = 60  # cards in one PNG page: about 2600 × 2200 px for four-panel cards


def png_page_paths(path: str, n_pages: int) -> list[str]:
    """``gallery.png``, then ``gallery_2.png``, ``gallery_3.png`` … for the further pages."""
    stem, ext = os.path.splitext(path)
    return [path] + [f"{stem}_{k}{ext}" for k in range(2, n_pages + 1)]


def render_png_pages(rows: Sequence[GalleryRow], columns: Sequence[str], path: str | None = None,
                     header: str = "", per_page: int = CARDS_PER_PAGE) -> list[np.ndarray]:
    """The gallery as grids of cards (:mod:`cflight.viz.cards`), ``per_page`` cards a page; writes the pages
    to ``path`` (and ``<stem>_2.png`` …) if given and returns their RGB uint8 arrays."""
    from cflight.viz.cards import render_cards

    chunks = [rows[k:k + per_page] for k in range(0, len(rows), per_page)] or [rows]
    pages = []
    for k, chunk in enumerate(chunks):
        head = header if len(chunks) == 1 or not header else f"{header}\npage {k + 1} of {len(chunks)}"
        pages.append(render_cards(chunk, columns, head))
    if path is not None:
        for array, p in zip(pages, png_page_paths(path, len(pages))):
            Image.fromarray(array).save(p)
    return pages


def render_png(rows: Sequence[GalleryRow], columns: Sequence[str], path: str | None = None,
               header: str = "") -> np.ndarray:
    """The gallery as one grid of cards; writes ``path`` if given and returns the RGB uint8 array."""
    return render_png_pages(rows, columns, path, header, per_page=max(len(rows), 1))[0]


def render_html(rows: Sequence[GalleryRow], columns: Sequence[str], path: str, title: str = "cflight gallery",
                notes: Sequence[str] = (), panel: int = 112) -> None:
    """A self-contained, sortable HTML page of ``rows`` (see :class:`cflight.viz.html.HtmlGallery`)."""
    from cflight.viz.html import HtmlGallery

    page = HtmlGallery(path, columns, title=title, notes=notes, panel=panel)
    for row in rows:
        page.add(row)
    page.close()
