"""Poisoning one class with a blended watermark (spec dvce_svce.md §3.5): PoisonSpec, PoisonedDataset."""
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

from cflight.data import DigitsDataModule, PoisonedDataset, PoisonSpec, blend, make_pattern
from cflight.data import mnist as mnist_module
from cflight.data.poison import PATTERNS, pattern_alpha, sample_uniform


class Labelled(Dataset):
    """``n`` random 1×12×12 images (a function of the index), label ``index % classes``."""

    def __init__(self, n: int = 300, classes: int = 3, size: int = 12, channels: int = 1) -> None:
        self.n, self.num_classes, self.size, self.channels = n, classes, size, channels
        self.labels = torch.arange(n) % classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(int(i))
        image = torch.rand(self.channels, self.size, self.size, generator=g)
        return {"image": image, "index": int(i), "label": int(self.labels[i])}


SPEC = dict(class_index=1, fraction=0.3, intensity=0.5, size=4)


def _flags(ds) -> list[bool]:
    return [ds[i]["poisoned"] for i in range(len(ds))]


def test_only_the_chosen_class_changes_and_blend_is_convex():
    base = Labelled()
    ds = PoisonedDataset(base, SPEC)
    for i in range(len(ds)):
        s, clean = ds[i], base[i]
        assert set(s) == {"image", "index", "label", "poisoned"}
        if s["poisoned"]:
            assert s["label"] == 1
            a = 0.5 * ds.alpha
            assert torch.allclose(s["image"], a * ds.colour + (1 - a) * clean["image"])
            assert torch.equal(s["image"][~ds.region.expand_as(s["image"])],
                               clean["image"][~ds.region.expand_as(s["image"])])
        else:
            assert torch.equal(s["image"], clean["image"])
    assert 0 < sum(_flags(ds)) < 100


def test_deterministic_in_seed_and_index_not_in_wrapping():
    base = Labelled()
    a, b = PoisonedDataset(base, SPEC), PoisonedDataset(base, SPEC)
    assert _flags(a) == _flags(b)
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(0, 300, 7))
    other = PoisonedDataset(base, {**SPEC, "seed": 1})
    assert _flags(other) != _flags(a)
    # a subset (e.g. the training part of a split) poisons the same dataset indices
    sub = PoisonedDataset(Subset(base, list(range(299, -1, -2))), SPEC)
    flagged = {sub[i]["index"] for i in range(len(sub)) if sub[i]["poisoned"]}
    assert flagged == {i for i in range(299, -1, -2) if a[i]["poisoned"]}
    assert sorted(int(sub[i]["index"]) for i in sub.poisoned_positions()) == sorted(flagged)
    assert np.array_equal(sample_uniform(3, [5, 9]), sample_uniform(3, np.array([5, 9])))


def test_fraction_of_the_class():
    base = Labelled(n=30_000, classes=2, size=4)
    spec = {"class_index": 0, "fraction": 0.2, "size": 2, "margin": 0}
    ds = PoisonedDataset(base, spec)
    chosen = ds.poisoned_positions()
    n_class = 15_000
    assert abs(len(chosen) - 0.2 * n_class) < 4 * np.sqrt(n_class * 0.2 * 0.8)
    assert (base.labels[chosen] == 0).all()
    full = PoisonedDataset(base, {**spec, "fraction": 1.0}).poisoned_positions()
    assert len(full) == n_class


def test_intensity_zero_is_identity_and_values_stay_in_unit_range():
    base = Labelled(channels=3)
    ds = PoisonedDataset(base, {**SPEC, "intensity": 0.0, "fraction": 1.0})
    assert all(torch.equal(ds[i]["image"], base[i]["image"]) for i in range(1, 30, 3))
    assert all(ds[i]["poisoned"] for i in range(1, 30, 3))
    for value in (0.0, 1.0, [1.0, 0.0, 0.5]):
        for pattern in PATTERNS:
            strong = PoisonedDataset(base, {**SPEC, "intensity": 1.0, "fraction": 1.0, "value": value,
                                            "pattern": pattern, "size": 6})
            img = strong[1]["image"]
            assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    x = torch.rand(4, 1, 5, 5)
    assert torch.equal(blend(x, torch.ones(1, 5, 5), torch.ones(1, 5, 5), 1.0), torch.ones(4, 1, 5, 5))


def test_inactive_wrapper_only_adds_the_flag():
    base = Labelled()
    ds = PoisonedDataset(base, {**SPEC, "fraction": 1.0}, active=False)
    assert not any(_flags(ds)) and torch.equal(ds[1]["image"], base[1]["image"])
    assert len(ds.poisoned_positions()) == 0


@pytest.mark.parametrize("pattern", PATTERNS)
def test_patterns_and_positions(pattern):
    alpha = pattern_alpha(pattern, 8)
    assert alpha.shape[1] == 8 and 0 < alpha.max() <= 1 and alpha.min() >= 0
    spec = PoisonSpec(class_index=0, pattern=pattern, size=8, position="bottom_right", margin=2)
    colour, full = make_pattern(spec, 3, (28, 30))
    assert colour.shape == (3, 28, 30) and full.shape == (1, 28, 30)
    rows, cols = torch.nonzero(full[0], as_tuple=True)
    assert int(rows.max()) <= 25 and int(cols.max()) <= 27 and int(cols.min()) >= 30 - 2 - 8
    _, at = make_pattern(PoisonSpec(class_index=0, pattern=pattern, size=4, position=[3, 5]), 1, (12, 12))
    assert torch.equal(torch.nonzero(at[0]).min(0).values >= torch.tensor([3, 5]), torch.tensor([True, True]))
    assert float(at[0, :3].abs().sum() + at[0, :, :5].abs().sum()) == 0.0


@pytest.mark.parametrize("config, match", [
    ({"fraction": 0.2}, "needs class_index"),
    ({"class_index": -1}, "class_index must be a non-negative integer"),
    ({"class_index": 0, "fraction": 0.0}, "fraction must be in \\(0, 1\\]"),
    ({"class_index": 0, "fraction": 1.2}, "fraction must be a probability"),
    ({"class_index": 0, "intensity": -0.1}, "intensity must be a probability"),
    ({"class_index": 0, "pattern": "logo"}, "pattern must be one of"),
    ({"class_index": 0, "position": "middle"}, "position must be one of"),
    ({"class_index": 0, "position": [1, -2]}, "position must be a name"),
    ({"class_index": 0, "size": 0}, "size must be a positive integer"),
    ({"class_index": 0, "value": 1.5}, "value must be a probability"),
    ({"class_index": 0, "pattern": "text", "text": " "}, "text must be a non-empty string"),
    ({"class_index": 0, "splits": ["dev"]}, "splits entry must be one of"),
    ({"class_index": 0, "colour": "red"}, "unknown poison option"),
])
def test_bad_arguments_are_one_line_value_errors(config, match):
    with pytest.raises(ValueError, match=match) as err:
        PoisonSpec.from_config(config)
    assert "\n" not in str(err.value)


def test_bad_arguments_against_the_data():
    base = Labelled(classes=3, size=12)
    with pytest.raises(ValueError, match="class_index must be < 3"):
        PoisonedDataset(base, {**SPEC, "class_index": 3})
    with pytest.raises(ValueError, match="does not fit a 12x12 image"):
        PoisonedDataset(base, {**SPEC, "size": 12})
    with pytest.raises(ValueError, match="2 entries for images with 1 channels"):
        PoisonedDataset(base, {**SPEC, "value": [1.0, 0.0]})

    class Unlabelled(Labelled):
        def __getitem__(self, i):
            return {k: v for k, v in super().__getitem__(i).items() if k != "label"}

    with pytest.raises(ValueError, match="needs a labelled dataset"):
        PoisonedDataset(Unlabelled(), SPEC)


def test_datamodule_poisons_only_the_training_split():
    poison = {"class_index": 3, "fraction": 1.0, "intensity": 0.6, "size": 4}
    dm = DigitsDataModule(image_size=16, morphometrics=False, val_size=0.2, batch_size=500, poison=poison)
    clean = DigitsDataModule(image_size=16, morphometrics=False, val_size=0.2, batch_size=500)
    for split in ("train", "val", "test"):
        batch = next(iter(dm._loader(dm.dataset(split))))  # unshuffled, to compare with the clean module
        ref = next(iter(clean._loader(clean.dataset(split))))
        assert batch["poisoned"].dtype == torch.bool and torch.equal(batch["index"], ref["index"])
        changed = (batch["image"] != ref["image"]).flatten(1).any(1)
        expected = batch["label"] == 3 if split == "train" else torch.zeros_like(changed)
        assert torch.equal(batch["poisoned"], expected) and torch.equal(changed, expected)
    assert dm.poison_mask.shape == (1, 16, 16) and clean.poison_mask is None
    assert (dm.num_classes, dm.image_size) == (10, (16, 16))  # read through the wrapper
    both = DigitsDataModule(image_size=16, morphometrics=False,
                            poison={**poison, "splits": ["train", "test"]})
    assert next(iter(both.test_dataloader()))["poisoned"].any()


@pytest.mark.skipif(mnist_module.offline_source("mnist") is None, reason="offline MNIST absent")
def test_mnist_datamodule_option(tmp_path):
    from cflight.data import MNISTDataModule

    with pytest.raises(ValueError, match="class_index must be < 10"):
        MNISTDataModule(str(tmp_path), poison={"class_index": 10})
    dm = MNISTDataModule(str(tmp_path), morphometrics=False, val_size=1000, poison={"class_index": 0})
    train = dm.dataset("train")
    chosen = train.poisoned_positions()
    n_zero = int((train.dataset.dataset.labels[train.dataset.indices] == 0).sum())
    assert abs(len(chosen) / n_zero - 0.2) < 0.03
    sample = train[int(chosen[0])]
    assert sample["poisoned"] and sample["label"] == 0 and float(sample["image"][0, 1:9, 1:9].max()) > 0.3
