"""Counterfactual galleries as PNG (matplotlib) and self-contained HTML; pure functions of tensors."""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor


@dataclass
class GalleryRow:
    """One explained image: panels ``[C, H, W]`` in [0, 1] and a caption per panel."""

    panels: list[Tensor]
    captions: list[str]
    title: str = ""
    note: str = ""


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


def render_png(rows: Sequence[GalleryRow], columns: Sequence[str], path: str | None = None,
               cell_inches: float = 1.6) -> np.ndarray:
    """Draw the gallery with one row per image; writes ``path`` if given and returns the RGB uint8 array."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = max(len(rows), 1), len(columns)
    lines = 1 + max((r.note.count("\n") + 1 if r.note else 0) for r in rows) if rows else 1
    height = cell_inches * (1.15 + 0.12 * lines)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_inches * n_cols, height * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c, (panel, caption) in enumerate(zip(row.panels, row.captions)):
            ax = axes[r][c]
            ax.imshow(to_uint8(panel), interpolation="nearest")
            ax.set_title(caption, fontsize=7)
            if c == 0 and row.title:
                ax.set_ylabel(row.title, fontsize=7)
        if row.note:
            axes[r][len(row.panels) - 1].set_xlabel(row.note, fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for c, name in enumerate(columns):
        axes[0][c].annotate(name, (0.5, 1.35), xycoords="axes fraction", ha="center", fontsize=8, weight="bold")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    buf.seek(0)
    array = np.asarray(Image.open(buf).convert("RGB"))
    if path is not None:
        Image.fromarray(array).save(path)
    return array


def _png_data_uri(image: Tensor, scale: int) -> str:
    arr = to_uint8(image)
    img = Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_html(rows: Sequence[GalleryRow], columns: Sequence[str], path: str, title: str = "cflight gallery",
                notes: Sequence[str] = (), scale: int = 4) -> None:
    """A self-contained HTML page (images embedded as data URIs): one table row per explained image."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["image", *columns])
    body = []
    for row in rows:
        cells = "".join(
            f'<td><img src="{_png_data_uri(p, scale)}"><div class="cap">{html.escape(cap)}</div></td>'
            for p, cap in zip(row.panels, row.captions)
        )
        note = f"<div class='cap'>{html.escape(row.note)}</div>" if row.note else ""
        body.append(f"<tr><td class='t'>{html.escape(row.title)}{note}</td>{cells}</tr>")
    note_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td{{text-align:center;padding:4px;vertical-align:top}}
.cap{{font-size:11px;max-width:180px}} .t{{font-size:12px;font-weight:bold}} img{{image-rendering:pixelated}}</style>
</head><body><h2>{html.escape(title)}</h2>{note_html}<table><tr>{head}</tr>{''.join(body)}</table></body></html>"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
