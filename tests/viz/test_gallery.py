"""Gallery rendering and result assembly."""
import numpy as np
import torch

from cflight.lit.results import SUMMARY_COLUMNS, method_columns, results_rows, summary_metrics
from cflight.lit.shards import shard_name
from cflight.metrics.summary import CounterfactualSummary
from cflight.viz.gallery import GalleryRow, difference_map, render_html, render_png, to_uint8


def test_to_uint8_grey_and_rgb():
    assert to_uint8(torch.ones(1, 3, 2)).shape == (3, 2, 3)
    arr = to_uint8(torch.tensor([[[0.0, 1.0]]]).expand(3, 1, 2))
    assert arr.dtype == np.uint8 and arr[0, 0].tolist() == [0, 0, 0] and arr[0, 1].tolist() == [255, 255, 255]


def test_difference_map_colours():
    x = torch.full((1, 1, 2), 0.5)
    y = torch.tensor([[[0.9, 0.1]]])
    d = difference_map(x, y)
    assert d.shape == (3, 1, 2)
    torch.testing.assert_close(d[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # brighter -> red
    torch.testing.assert_close(d[:, 0, 1], torch.tensor([0.0, 0.0, 1.0]))  # darker -> blue
    assert (difference_map(x, x) == 1).all()  # unchanged -> white


def test_render_png_and_html(tmp_path):
    rows = [GalleryRow([torch.rand(1, 8, 8), torch.rand(3, 8, 8)], ["a <b>", "c"], title="#0") for _ in range(3)]
    arr = render_png(rows, ["original", "counterfactual"], str(tmp_path / "g.png"))
    assert arr.ndim == 3 and (tmp_path / "g.png").stat().st_size > 0
    render_html(rows, ["original", "counterfactual"], str(tmp_path / "g.html"))
    page = (tmp_path / "g.html").read_text()
    assert page.count("<img") == 6 and "a &lt;b&gt;" in page


def _cards(n, panels=4, size=28):
    return [GalleryRow([torch.rand(1, size, size) for _ in range(panels)], ["pred 7  0.91"] * (panels - 1) + ["l1 3.2\n40 steps"],
                       title="7 → 9  p(9) 0.91 ✓", ok=k % 2 == 0, tag=f"#{k}", note="Δ slant +1.2 · area -0.3")
            for k in range(n)]


def test_gallery_is_a_grid_of_cards_not_a_column():
    columns = ["original", "reconstruction", "counterfactual", "difference"]
    arr = render_png(_cards(16), columns)
    h, w = arr.shape[:2]
    assert h <= 2 * w and w <= 2 * h  # the main job's 16 images: about square, not 16 rows
    wide = render_png(_cards(16, panels=7, size=64), ["original"] + ["x"] * 6)  # several target values
    assert wide.shape[0] <= 2 * wide.shape[1]


def test_long_titles_wrap_onto_two_lines_instead_of_losing_the_class_names():
    from cflight.viz.cards import CardStyle, title_lines

    style, inner = CardStyle(), 300
    long = GalleryRow([torch.rand(1, 8, 8)], [""], title="Pembroke Welsh corgi → Cardigan Welsh corgi p 0.93",
                      tag="#12")
    lines = title_lines(long, style, inner)
    assert len(lines) == 2 and "…" not in "".join(lines) and " ".join(lines) == long.title
    short = GalleryRow([torch.rand(1, 8, 8)], [""], title="7 → 9", tag="#1")
    assert title_lines(short, style, inner) == ["7 → 9"]
    huge = GalleryRow([torch.rand(1, 8, 8)], [""], title=" ".join(["longclassname"] * 12))
    cut = title_lines(huge, style, inner)
    assert len(cut) == 2 and cut[1].endswith("…")
    # the card grows by one title line only when some title needs it, and the panels stay aligned
    one = render_png([short] * 2, ["x"])
    two = render_png([short, long], ["x"])
    assert two.shape[0] > one.shape[0]


def test_grid_columns_prefer_a_landscape_page():
    from cflight.viz.cards import grid_columns

    assert grid_columns(1, 480, 210) == 1
    assert grid_columns(16, 480, 210) == 3
    assert grid_columns(100, 480, 210, max_width=2600) <= 5  # never wider than max_width


def test_big_gallery_gets_pages(tmp_path):
    from cflight.viz.gallery import render_png_pages

    pages = render_png_pages(_cards(10), ["a", "b", "c", "d"], str(tmp_path / "gallery.png"), "head", per_page=4)
    assert len(pages) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.png", "gallery_2.png", "gallery_3.png"]


def test_shard_name_depends_on_index_set_only():
    assert shard_name(torch.tensor([3, 1, 2])) == shard_name(torch.tensor([1, 2, 3]))
    assert shard_name(torch.tensor([1, 2, 3])) != shard_name(torch.tensor([1, 2, 4]))


def _records():
    return {
        "index": torch.tensor([0, 1]), "label": torch.tensor([3, 5]),
        "logits": torch.tensor([[0.0, 2.0], [2.0, 0.0]]), "logits_cf": torch.tensor([[2.0, 0.0], [0.0, 0.0]]),
        "target_class": torch.tensor([0, 1]), "direction": torch.tensor([1, 1]), "threshold": torch.tensor([0.5, 0.5]),
        "success": torch.tensor([True, False]), "valid": torch.tensor([True, False]), "steps": torch.tensor([4, 10]),
        "l1": torch.tensor([1.0, 3.0]), "l2": torch.tensor([0.5, 1.5]),
    }


def test_results_rows_and_metrics():
    rows = results_rows(_records(), class_names=["zero", "one"])
    assert rows[0]["prediction"] == "one" and rows[0]["target"] == "zero" and rows[0]["cf_prediction"] == "zero"
    assert rows[1]["cf_target_prob"] == 0.5
    columns = SUMMARY_COLUMNS["classification"]
    summary = CounterfactualSummary(columns)
    summary.update(method_columns(_records(), (), columns), _records()["target_class"])
    m = summary_metrics(summary.compute(), columns, [7.0], seconds=2.0, computed=2)
    assert m["n"] == 2 and m["validity"] == 0.5 and m["median_steps"] == 7.0 and m["mean_steps"] == 7.0
    assert m["mean_l1"] == 2.0 and m["mean_l2"] == 1.0 and m["seconds_per_image"] == 1.0
    assert "oracle_validity" not in m  # no row had an oracle verdict
    assert summary_metrics(None, columns, [], 0.0, 0)["n"] == 0


def test_summary_skips_undefined_values_per_column():
    summary = CounterfactualSummary(["l1", "background_mae"])
    summary.update([{"l1": torch.tensor([1.0, 3.0]), "background_mae": torch.tensor([0.5, float("nan")])}],
                   torch.tensor([0, 0]))
    summary.update([{"l1": torch.tensor([5.0])}], torch.tensor([1]))
    mean = summary.compute()["mean"]
    assert mean.tolist() == [[3.0, 0.5]]
