"""The ImageNet validation reader: standard class indices from wnids (class folders, flat folders with a
labels table), DVCE's and SVCE's preprocessings (exact sizes, bicubic), the class filter, the pair constants,
and the missing-folder error naming where to get the data."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from cflight.data import ImageNetVal, ImageNetValDataModule
from cflight.data.imagenet import (IMAGENET_PAIRS, PAIR_CLASSES, PAIR_TARGETS, imagenet_class_names, imagenet_wnids,
                                   preprocess)
from cflight.targets import PairTargets
from cflight.validation import BadInputError, MissingInputError

ZEBRA, SORREL, PERSIAN = "n02391049", "n02389026", "n02123394"


def _jpeg(path, w, h, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)


@pytest.fixture
def val(tmp_path):
    """Class folders for three of the pair classes (not all 1000: indices must still be the standard ones)."""
    root = tmp_path / "val"
    for k, (wnid, size) in enumerate([(ZEBRA, (300, 200)), (SORREL, (200, 300)), (PERSIAN, (64, 48))]):
        (root / wnid).mkdir(parents=True)
        for j in range(2):
            _jpeg(root / wnid / f"ILSVRC2012_val_{k * 2 + j + 1:08d}.JPEG", *size, seed=k * 2 + j)
    return root


def test_wnids_and_pairs_are_the_standard_classes():
    wnids, names = imagenet_wnids(), imagenet_class_names()
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764"
    assert (wnids[340], names[340]) == (ZEBRA, "zebra") and (wnids[339], names[339]) == (SORREL, "sorrel")
    assert names[293] == "cheetah" and names[286] == "cougar"
    assert names[285] == "Egyptian cat" and names[283] == "Persian cat"
    assert IMAGENET_PAIRS == {"zebra-sorrel": (340, 339), "cheetah-cougar": (293, 286),
                              "egyptian_cat-persian_cat": (285, 283)}
    assert PAIR_CLASSES == [283, 285, 286, 293, 339, 340]
    policy = PairTargets(PAIR_TARGETS)  # each image of class a → b and b → a
    assert policy.pairs == {340: 339, 339: 340, 293: 286, 286: 293, 285: 283, 283: 285}


def test_class_folders_give_standard_labels_and_dvce_preprocessing(val):
    ds = ImageNetVal(str(val), "dvce")
    assert len(ds) == 6 and ds.num_classes == 1000 and ds.image_size == (256, 256)
    assert ds.labels == [283, 283, 339, 339, 340, 340]  # sorted wnid order = class index order
    assert ds.indices == list(range(6)) and ds.class_names[340] == "zebra"
    sample = ds[4]
    assert sample["label"] == 340 and sample["index"] == 4 and sample["readable"]
    x = sample["image"]
    assert x.shape == (3, 256, 256) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    with Image.open(ds.files[4]) as im:  # 300x200 landscape: short side → ⌊256/0.875⌋ = 292, bicubic
        big = im.convert("RGB").resize((math.floor(292 * 300 / 200), 292), Image.BICUBIC)
        bilinear = TF.pil_to_tensor(TF.center_crop(im.convert("RGB").resize((438, 292), Image.BILINEAR),
                                                   [256, 256])).float() / 255
    expected = TF.pil_to_tensor(TF.center_crop(big, [256, 256])).float() / 255
    assert torch.allclose(x, expected, atol=1 / 255 + 1e-6)
    assert not torch.allclose(x, bilinear, atol=1 / 255 + 1e-6)  # the interpolation is bicubic


def test_svce_preprocessing_is_a_plain_bicubic_resize(val):
    ds = ImageNetVal(str(val), "svce")
    x = ds[2]["image"]  # a 200x300 portrait: squeezed to 224x224, no crop
    assert x.shape == (3, 224, 224) and ds.image_size == (224, 224)
    with Image.open(ds.files[2]) as im:
        expected = TF.pil_to_tensor(im.convert("RGB").resize((224, 224), Image.BICUBIC)).float() / 255
    assert torch.allclose(x, expected, atol=1 / 255 + 1e-6)
    small = ImageNetVal(str(val), "dvce", image_size=32)[0]["image"]  # reduced sizes: ⌊32/0.875⌋ = 36, crop 32
    assert small.shape == (3, 32, 32)
    with Image.open(ds.files[0]) as im:
        ref = preprocess(im, "dvce", 32)
    assert torch.equal(small, ref)


def test_class_filter_keeps_full_val_indices(val):
    ds = ImageNetVal(str(val), classes=[340, SORREL])
    assert ds.labels == [339, 339, 340, 340] and ds.indices == [2, 3, 4, 5]
    with pytest.raises(BadInputError, match="no ImageNet validation images of classes"):
        ImageNetVal(str(val), classes=[1])


def test_flat_folder_with_loc_val_solution(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for k in range(3):
        _jpeg(root / f"ILSVRC2012_val_{k + 1:08d}.JPEG", 40, 30, seed=k)
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        f"ILSVRC2012_val_00000002,{ZEBRA} 1 2 3 4 {ZEBRA} 5 6 7 8\n"
        f"ILSVRC2012_val_00000001,{PERSIAN} 1 2 3 4\n"
        f"ILSVRC2012_val_00000003,n01440764 1 2 3 4\n")
    ds = ImageNetVal(str(root), "svce", image_size=16, labels_file="LOC_val_solution.csv")
    assert ds.labels == [283, 340, 0] and ds[1]["image"].shape == (3, 16, 16)
    (root / "labels.txt").write_text("ILSVRC2012_val_00000001.JPEG 7\nILSVRC2012_val_00000002.JPEG 8\n")
    with pytest.raises(BadInputError, match="ILSVRC2012_val_00000003.JPEG' has no row"):
        ImageNetVal(str(root), labels_file="labels.txt")
    with pytest.raises(BadInputError, match="no wnid subfolders"):
        ImageNetVal(str(root))


def test_datamodule_predict_and_missing_root(val, tmp_path):
    dm = ImageNetValDataModule(str(val), "dvce", image_size=32, classes=[283, 340], batch_size=3, predict_limit=3)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["label"].tolist() == [283, 283, 340]
    assert batch["index"].tolist() == [0, 1, 4] and dm.num_classes == 1000
    with pytest.raises(BadInputError, match="only the validation images"):
        dm.dataset("train")
    with pytest.raises(MissingInputError, match=r"'.*data/imagenet/val' not found; it is the ImageNet .*image-net.org"):
        ImageNetValDataModule(str(tmp_path / "data" / "imagenet" / "val"))


def test_unreadable_file_is_skipped_in_predict(val):
    (val / ZEBRA / "ILSVRC2012_val_00000099.JPEG").write_bytes(b"not a jpeg")
    ds = ImageNetVal(str(val), on_unreadable="skip")
    with pytest.warns(UserWarning, match="cannot be read"):
        sample = ds[len(ds) - 1]
    assert not sample["readable"] and sample["image"].shape == (3, 256, 256)
    with pytest.raises(BadInputError, match="cannot be read"):
        ImageNetVal(str(val))[len(ds) - 1]
