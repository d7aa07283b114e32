import math

import pytest
import torch

from cflight.data import MORPHOMETRIC_NAMES, Digits, DigitsDataModule, morphometrics


def test_digits_split_and_contract():
    train, test = Digits("train", seed=0), Digits("test", seed=0)
    assert len(train) + len(test) == 1797 and len(test) == round(0.2 * 1797)
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert torch.equal(Digits("test", seed=0).indices, test.indices)
    assert not torch.equal(Digits("test", seed=1).indices, test.indices)
    s = train[4]
    assert s["index"] == 4 and s["image"].shape == (1, 8, 8) and 0 <= s["label"] <= 9
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    assert s["descriptors"].shape == (len(MORPHOMETRIC_NAMES),)
    assert Digits("all", image_size=16)[0]["image"].shape == (1, 16, 16)


def test_digits_datamodule():
    dm = DigitsDataModule(batch_size=32, val_size=100, seed=0)
    assert len(dm.dataset("val")) == 100 and len(dm.dataset("train")) == 1797 - 359 - 100
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (32, 1, 8, 8) and dm.num_classes == 10
    with pytest.raises(ValueError, match="test_size"):
        DigitsDataModule(test_size=-0.5)


def test_morphometrics_of_known_strokes():
    """Closed forms of Morpho-MNIST's measurements (in pixels) on a 20 × 3 bar; details in test_morphometrics.py."""
    bar = torch.zeros(1, 28, 28)
    bar[0, 12:15, 4:24] = 1.0  # horizontal bar: 3 px thick, 20 px wide
    m = dict(zip(MORPHOMETRIC_NAMES, morphometrics(bar).tolist()))
    assert m["area"] == pytest.approx(60, rel=0.02) and m["thickness"] == pytest.approx(3, abs=0.15)
    assert m["width"] == pytest.approx(20, abs=0.5) and m["slant"] == pytest.approx(0, abs=1e-6)
    assert m["holes"] == 0

    lean = torch.zeros(1, 28, 28)
    for row in range(4, 24):  # leaning right: the top is further right
        col = 20 - (row - 4) // 2
        lean[0, row, col - 1 : col + 2] = 1.0
    slant = MORPHOMETRIC_NAMES.index("slant")
    assert morphometrics(lean)[slant] > 0.3
    assert morphometrics(lean.flip(-1))[slant] < -0.3
    batch = morphometrics(torch.stack([bar, lean, torch.zeros(1, 28, 28)]))
    assert batch.shape == (3, len(MORPHOMETRIC_NAMES)) and torch.equal(batch[2], torch.zeros(len(MORPHOMETRIC_NAMES)))
    assert math.isfinite(float(batch.sum()))


def _ring(img, top, left, size, thick=2):
    img[0, top:top + size, left:left + size] = 1.0
    img[0, top + thick:top + size - thick, left + thick:left + size - thick] = 0.0


def test_holes_count_enclosed_regions():
    zero, eight, open_c = torch.zeros(1, 28, 28), torch.zeros(1, 28, 28), torch.zeros(1, 28, 28)
    _ring(zero, 4, 8, 14)
    _ring(eight, 2, 8, 12)
    _ring(eight, 12, 8, 12)  # shares an edge: two enclosed regions
    _ring(open_c, 4, 8, 14)
    open_c[0, 10:14, 20:22] = 0.0  # cut the ring open: no hole
    holes = morphometrics(torch.stack([zero, eight, open_c, torch.ones(1, 28, 28)]))[:, -1]
    assert holes.tolist() == [1.0, 2.0, 0.0, 0.0]
    small = torch.zeros(1, 28, 28)
    _ring(small, 8, 8, 6)  # a 2 × 2 px hole: counted unless min_hole_px asks for more
    assert morphometrics(small)[-1] == 1 and morphometrics(small, min_hole_px=6)[-1] == 0
