"""Bar charts of global attributions (pure function of the summary dict)."""
from __future__ import annotations

from typing import Any

import numpy as np


def attribution_bar_chart(summary: dict[str, Any], path: str | None = None, top: int = 10, pairs: int = 3,
                          title: str = "Global attribution") -> np.ndarray:
    """Signed mean descriptor change overall (left) and for the most frequent source → target pairs.

    Bars right of zero: moving toward the target increases the descriptor. Returns the RGB uint8 image.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    panels = [("all counterfactuals", summary["overall"][:top], summary["n"])]
    by_pair = sorted(summary.get("by_pair", []), key=lambda e: -e["n"])[:pairs]
    for e in by_pair:
        panels.append((f"{e['source']} → {e['target']}", [{"descriptor": n, "score": v} for n, v in e["top"]], e["n"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.45 * top + 1.5), squeeze=False)
    for ax, (name, entries, n) in zip(axes[0], panels):
        entries = list(reversed(entries))
        values = [e["score"] for e in entries]
        ax.barh([e["descriptor"] for e in entries], values, color=["#c0392b" if v > 0 else "#2e86c1" for v in values])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{name} (n={n})", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    buf.seek(0)
    array = np.asarray(Image.open(buf).convert("RGB"))
    if path is not None:
        Image.fromarray(array).save(path)
    return array
