"""The HTML gallery: escaped, sortable, self-contained, paged for big jobs."""
import re

import torch

from cflight.viz.gallery import GalleryRow
from cflight.viz.html import HtmlGallery


def _row(k, title="7 → 9 <b>"):
    return GalleryRow([torch.rand(1, 4, 4), torch.rand(1, 4, 4)], ["cap & <i>", "x"], title=title, ok=k % 2 == 0,
                      tag=f"#{k}", values={"index": k, "valid": k % 2 == 0, "l1": 0.5 * k, "label": "<seven>"})


def test_one_page_has_sortable_columns_and_escapes_text(tmp_path):
    path = tmp_path / "gallery.html"
    page = HtmlGallery(str(path), ["original", "counterfactual"], title="job <1>", notes=["n: 3 & more"])
    for k in range(3):
        page.add(_row(k))
    assert page.close() == [str(path)]
    text = path.read_text()
    assert text.count("<tr>") == 1 + 3 and text.count("<img") == 6
    assert "<th>image</th><th>original</th><th>counterfactual</th>" in text
    assert '<th class="s" title="click to sort">l1</th>' in text and "th.onclick" in text  # inline sorting
    assert 'data-v="1.0">1</td>' in text and 'data-v="1">✓</td>' in text  # numbers sort as numbers
    assert "7 → 9 &lt;b&gt;" in text and "cap &amp; &lt;i&gt;" in text and "&lt;seven&gt;" in text
    assert "job &lt;1&gt;" in text and "n: 3 &amp; more" in text
    assert "<b>" not in text.replace("<body>", "") and "<seven>" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing to fetch: works offline


def test_big_job_gets_pages_linked_from_the_index(tmp_path):
    path = tmp_path / "gallery.html"
    page = HtmlGallery(str(path), ["original", "counterfactual"], page_rows=2)
    for k in range(5):
        page.add(_row(k))
    files = page.close()
    names = sorted(p.name for p in (tmp_path / "gallery_html").iterdir())
    assert names == ["page_0001.html", "page_0002.html", "page_0003.html"] and len(files) == 4
    index = path.read_text()
    assert all(f'href="gallery_html/{n}"' in index for n in names) and "<img" not in index
    first = (tmp_path / "gallery_html" / "page_0001.html").read_text()
    assert first.count("<tr>") == 1 + 2 and "#0" in first and "#1" in first and "th.onclick" in first
    assert (tmp_path / "gallery_html" / "page_0003.html").read_text().count("<tr>") == 1 + 1
