import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cflight.data import COLOURS, SHAPES, ShapesDataset


def test_sample_contract():
    ds = ShapesDataset(20, seed=1, marker_class=0)
    for i in (0, 7, 19):
        s = ds[i]
        assert set(s) == {"image", "index", "label", "descriptors"}
        assert s["index"] == i and isinstance(s["label"], int) and 0 <= s["label"] < ds.num_classes
        assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        assert (
            s["descriptors"].shape == (len(ds.descriptor_names),) and s["descriptors"].dtype == torch.float32
        )
    assert ds.descriptor_names[:3] == ["shape_circle", "shape_square", "shape_triangle"]
    assert ds.descriptor_names[-1] == "marker"
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (3, 3, (32, 32))
    assert ds.class_names == ["circle", "square", "triangle"]


def test_options():
    ds = ShapesDataset(
        5,
        image_size=48,
        channels=1,
        shapes=SHAPES,
        colours=["red", "yellow"],
        label_factor="colour",
        target_factor="size",
        noise_std=0.05,
    )
    s = ds[3]
    assert s["image"].shape == (1, 48, 48)
    assert ds.num_classes == 2 and ds.class_names == ["red", "yellow"] and "marker" not in ds.descriptor_names
    assert s["target"] == pytest.approx(float(s["descriptors"][ds.descriptor_names.index("size")]))
    assert s["label"] == int(s["descriptors"][len(SHAPES) : len(SHAPES) + 2].argmax())
    assert torch.equal(ds[3]["image"], s["image"])  # noise is seeded too


def test_deterministic_by_seed_and_index():
    a, b = ShapesDataset(50, seed=3), ShapesDataset(1000, seed=3)
    for i in (0, 13, 49):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(
            a[i]["descriptors"], b[i]["descriptors"]
        )
    assert not torch.equal(a[0]["image"], ShapesDataset(50, seed=4)[0]["image"])
    assert not torch.equal(a[0]["image"], ShapesDataset(50, seed=3, split="test")[0]["image"])


def test_independent_of_batch_order_and_workers():
    ds = ShapesDataset(40, seed=5, marker_class=1)
    loader = DataLoader(ds, batch_size=7, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        for image, index, desc in zip(batch["image"], batch["index"], batch["descriptors"]):
            direct = ds[int(index)]
            assert torch.equal(image, direct["image"]) and torch.equal(desc, direct["descriptors"])
            seen.append(int(index))
    assert sorted(seen) == list(range(40))


def test_marker_frequency():
    ds = ShapesDataset(3000, seed=0, marker_class=1, marker_prob=0.9, marker_prob_other=0.1)
    factors = [ds.factors(i) for i in range(len(ds))]
    in_class = np.array([f.marker for f in factors if f.shape == 1])
    other = np.array([f.marker for f in factors if f.shape != 1])
    assert abs(in_class.mean() - 0.9) < 0.04 and abs(other.mean() - 0.1) < 0.03
    none = ShapesDataset(500, seed=0, marker_class=1, marker_prob=0.9)
    assert not any(none.factors(i).marker for i in range(500) if none.factors(i).shape != 1)


def test_marker_is_drawn_and_changes_nothing_else():
    plain = ShapesDataset(30, seed=2, background_range=(0.0, 0.0))
    marked = ShapesDataset(
        30,
        seed=2,
        background_range=(0.0, 0.0),
        marker_class=0,
        marker_prob=1.0,
        marker_prob_other=1.0,
        marker_colour="white",
        marker_position="bottom_right",
        marker_shape="square",
        marker_size=4,
    )
    mask = torch.from_numpy(marked.marker_mask())
    assert int(mask.sum()) == 16 and bool(mask[-5:-1, -5:-1].all())
    for i in range(30):
        a, b = plain[i], marked[i]
        assert float(b["descriptors"][-1]) == 1.0
        assert torch.equal(a["descriptors"], b["descriptors"][:-1])
        assert torch.all(b["image"][:, mask] == 1.0)
        assert torch.equal(a["image"][:, ~mask], b["image"][:, ~mask])


@pytest.mark.parametrize("kind", SHAPES)
def test_descriptors_match_rendering(kind):
    ds = ShapesDataset(
        60, seed=7, image_size=64, shapes=[kind], colours=["white"], background_range=(0.0, 0.0)
    )
    names = ds.descriptor_names
    areas, expected = [], []
    for i in range(len(ds)):
        s = ds[i]
        alpha = s["image"][0]
        d = dict(zip(names, s["descriptors"].tolist()))
        areas.append(float(alpha.mean()))
        expected.append(math.pi * d["size"] ** 2)
        total = float(alpha.sum())
        cy = float((alpha.sum(1) * (torch.arange(64) + 0.5)).sum()) / total
        cx = float((alpha.sum(0) * (torch.arange(64) + 0.5)).sum()) / total
        assert abs(cx - d["pos_x"] * 64) < 0.5 and abs(cy - d["pos_y"] * 64) < 0.5
    areas, expected = np.array(areas), np.array(expected)
    assert np.corrcoef(areas, expected)[0, 1] > 0.98
    assert np.all(np.abs(areas / expected - 1) < 0.1)  # equal-area sizing, anti-aliased edges


def test_rotation_descriptor_rotates_the_shape():
    ds = ShapesDataset(1, image_size=64, shapes=["square"], colours=["white"], background_range=(0.0, 0.0))
    f = ds.factors(0)
    upright = ds.render(f.__class__(**{**f.__dict__, "rotation": 0.0, "cx": 32.0, "cy": 32.0}))[0]
    tilted = ds.render(f.__class__(**{**f.__dict__, "rotation": 0.5, "cx": 32.0, "cy": 32.0}))[0]
    full = ds.render(f.__class__(**{**f.__dict__, "rotation": 0.9999, "cx": 32.0, "cy": 32.0}))[0]
    assert (upright - tilted).abs().sum() > 10 and torch.allclose(upright, full, atol=0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"length": -1}, "length"),
        ({"image_size": -3}, "image_size"),
        ({"channels": 2}, "channels"),
        ({"shapes": ["hexagon"]}, "shapes"),
        ({"colours": []}, "colours"),
        ({"label_factor": "rotation"}, "label_factor"),
        ({"marker_position": []}, "marker_position"),
        ({"marker_shape": ["cross", "cross"]}, "marker_shape"),
        ({"marker_shape": "circle"}, "marker_shape"),
        ({"marker_class": 3}, "marker_class"),
        ({"marker_prob": 1.5}, "marker_prob"),
        ({"marker_prob_other": -0.1}, "marker_prob_other"),
        ({"marker_size": 0}, "marker_size"),
        ({"marker_position": "middle"}, "marker_position"),
        ({"size_range": (0.3, 0.45)}, "size_range"),
        ({"size_range": (0.3, 0.1)}, "size_range"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"target_factor": "shape"}, "target_factor"),
        ({"marker_colour": "mauve"}, "marker_colour"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesDataset(**kwargs)


def test_size_label():
    ds = ShapesDataset(200, seed=1, size_range=(0.18, 0.28), label_factor="size")
    assert ds.class_names == ["small", "large"] and ds.num_classes == 2
    labels = torch.tensor([ds[i]["label"] for i in range(200)])
    sizes = torch.stack([ds[i]["descriptors"][ds.descriptor_names.index("size")] for i in range(200)])
    assert torch.equal(labels, (sizes >= 0.23).long())
    assert 0.3 < float(labels.float().mean()) < 0.7


def test_several_marker_variants():
    """Each marked image carries one of the given variants, drawn uniformly; every other factor is the one of
    the single-variant dataset, and the marked pixels are that variant's mask."""
    kw = dict(seed=4, background_range=(0.0, 0.0), marker_prob_other=1.0, marker_colour="white")
    one = ShapesDataset(120, **kw)
    many = ShapesDataset(120, marker_position=["top_left", "bottom_right"], marker_shape=["cross", "square"], **kw)
    seen = set()
    for i in range(120):
        f1, f2 = one.factors(i), many.factors(i)
        assert (f1.shape, f1.colour, f1.size, f1.cx, f1.cy, f1.marker) == (f2.shape, f2.colour, f2.size, f2.cx,
                                                                            f2.cy, f2.marker)
        seen.add((f2.marker_position, f2.marker_shape))
        mask = torch.from_numpy(many.marker_mask(f2.marker_position, f2.marker_shape))
        assert torch.all(many[i]["image"][:, mask] == 1.0)
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert many.marker_position == "top_left" and many.marker_shape == "cross"
    corners = many.marker_mask(1, 1)
    assert corners[-2, -2] and not corners[1, 1] and int(corners.sum()) == 25


def test_index_out_of_range():
    with pytest.raises(IndexError, match="out of range"):
        ShapesDataset(3)[3]


def test_palette_is_valid():
    assert all(len(c) == 3 and all(0 <= v <= 1 for v in c) for c in COLOURS.values())
