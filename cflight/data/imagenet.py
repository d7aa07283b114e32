"""The ImageNet (ILSVRC2012) validation set as DVCE and SVCE prepare it (spec dvce_svce.md §1.1).

Layouts: class subfolders (``val/n01440764/*.JPEG``, torchvision's ``ImageFolder`` layout), or one flat
folder of ``ILSVRC2012_val_*.JPEG`` with a labels table: Kaggle's ``LOC_val_solution.csv`` (``ImageId,
PredictionString``, the first token a wnid), any ``file,label`` table (wnid or class index), or the devkit's
``ILSVRC2012_validation_ground_truth.txt`` with its ``meta.mat`` next to it (read with scipy). Labels are the
standard 1000 class indices: the rank of the wnid among the 1000 sorted wnids (torchvision's ``ImageFolder``
order over the full val folder, the order DVCE / SVCE / timm use), also when only some classes are present.
Class names are the first WordNet lemma of each wnid, from the ImageNet metadata timm ships (offline).

Preprocessings (images in [0, 1], float32 ``[3, H, W]``):

* ``"dvce"`` (DVCE ``imagenet_VCEs.py``, augmentation type ``crop_0.875``): bicubic resize of the short side
  to ``⌊image_size / 0.875⌋`` (292 for 256), centre crop ``image_size`` (256).
* ``"svce"`` (SVCE ``imagenet_visual_transfer_hierachy.py``, type ``none``): bicubic resize straight to
  ``image_size``² (224), no crop, so the aspect ratio changes.

``index`` is the image's position in the whole sorted val list (for a complete class-folder layout: its
``ImageFolder`` / DVCE val index, e.g. 14655), also when a ``classes`` filter keeps only some images.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from cflight.data import _checks
from cflight.data.datamodules import ImageDataModule
from cflight.data.folder import IMAGE_EXTENSIONS, list_images, read_or_placeholder
from cflight.types import READABLE
from cflight.validation import BadInputError

__all__ = ["CHEETAH", "COUGAR", "DVCE_CROP_PCT", "EGYPTIAN_CAT", "IMAGENET_PAIRS", "PAIR_CLASSES",
           "PAIR_TARGETS", "PERSIAN_CAT", "PREPROCESSINGS", "SORREL", "ZEBRA", "ImageNetVal",
           "ImageNetValDataModule", "imagenet_class_names", "imagenet_wnids", "preprocess"]

# The class pairs the field reports on (DVCE / SVCE figures), standard ImageNet-1k indices (timm's metadata:
# n02391049 zebra, n02389026 sorrel, n02130308 cheetah, n02125311 cougar, n02124075 Egyptian cat,
# n02123394 Persian cat).
ZEBRA, SORREL = 340, 339
CHEETAH, COUGAR = 293, 286
EGYPTIAN_CAT, PERSIAN_CAT = 285, 283
IMAGENET_PAIRS: dict[str, tuple[int, int]] = {"zebra-sorrel": (ZEBRA, SORREL), "cheetah-cougar": (CHEETAH, COUGAR),
                                              "egyptian_cat-persian_cat": (EGYPTIAN_CAT, PERSIAN_CAT)}
# every image of a pair's class toward the other class of its pair: PairTargets(pairs=PAIR_TARGETS)
PAIR_TARGETS: list[list[int]] = [list(p) for a, b in IMAGENET_PAIRS.values() for p in ((a, b), (b, a))]
PAIR_CLASSES: list[int] = sorted({c for pair in IMAGENET_PAIRS.values() for c in pair})

DVCE_CROP_PCT = 0.875
PREPROCESSINGS = {"dvce": 256, "svce": 224}  # name -> default image_size


def missing(path: str, what: str) -> BadInputError:
    """The missing-file error naming where to get a known published file or data folder (imported on use:
    the table lives with the published-weight loaders)."""
    from cflight.models.pretrained.published import missing as published_missing

    return published_missing(path, what)


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in class-index order (sorted), from timm's bundled metadata."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def imagenet_class_names() -> list[str]:
    """The first WordNet lemma of each class (``"zebra"``, ``"Persian cat"``), in class-index order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(k).split(",")[0].strip() for k in range(1000)]


def preprocess(image: Image.Image, preprocessing: str = "dvce", image_size: int | None = None) -> torch.Tensor:
    """A PIL image → float32 ``[3, S, S]`` in [0, 1] with DVCE's or SVCE's preprocessing (module docstring)."""
    size = PREPROCESSINGS[preprocessing] if image_size is None else image_size
    image = image.convert("RGB")
    if preprocessing == "dvce":
        image = TF.resize(image, math.floor(size / DVCE_CROP_PCT), interpolation=TF.InterpolationMode.BICUBIC)
        image = TF.center_crop(image, [size, size])
    else:
        image = TF.resize(image, [size, size], interpolation=TF.InterpolationMode.BICUBIC)
    return TF.pil_to_tensor(image).to(torch.float32).div_(255.0)


def _class_index(value: str | int, wnids: dict[str, int], where: str) -> int:
    """A wnid or a class index (as text or int) → the class index."""
    text = str(value).strip()
    if text in wnids:
        return wnids[text]
    if text.isdigit() and 0 <= int(text) < 1000:
        return int(text)
    raise BadInputError(f"{where}: {text!r} is neither an ImageNet wnid (n01440764, …) nor a class index "
                        "0..999; fix the labels file")


def _read_labels(path: Path, wnids: dict[str, int]) -> dict[str, int]:
    """File stem → class index from a flat layout's labels table (see the module docstring)."""
    if path.name == "ILSVRC2012_validation_ground_truth.txt":
        return _read_devkit(path, wnids)
    out: dict[str, int] = {}
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and not rows[0][0].strip().startswith("ILSVRC") and not Path(rows[0][0]).suffix \
            and not rows[0][-1].strip().split()[0].isdigit() and rows[0][-1].strip().split()[0] not in wnids:
        rows = rows[1:]  # a header line (ImageId,PredictionString)
    for n, row in enumerate(rows, start=1):
        if len(row) == 1:  # whitespace-separated "file label"
            row = row[0].split()
        if len(row) < 2:
            raise BadInputError(f"{path} line {n}: expected 'file,label' (or LOC_val_solution.csv's ImageId,"
                                f"PredictionString), got {row!r}")
        out[Path(row[0].strip()).stem] = _class_index(row[1].split()[0], wnids, f"{path} line {n}")
    return out


def _read_devkit(path: Path, wnids: dict[str, int]) -> dict[str, int]:
    """The devkit's ground truth (ILSVRC2012_IDs, one per val image in file order) via its ``meta.mat``."""
    meta = path.with_name("meta.mat")
    if not meta.is_file():
        raise missing(str(meta), "ImageNet devkit file")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise BadInputError(f"reading {meta} needs scipy (pip install scipy), or give LOC_val_solution.csv "
                            "instead") from None
    synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
    id_to_wnid = {int(s[0]): str(s[1]) for s in synsets if int(s[4]) == 0}  # leaf synsets: the 1000 classes
    ids = [int(line) for line in path.read_text().split()]
    return {f"ILSVRC2012_val_{k + 1:08d}": wnids[id_to_wnid[i]] for k, i in enumerate(ids)}


class ImageNetVal(Dataset):
    """ImageNet validation images with their standard class index as ``label``.

    Args:
        root: the val folder (class subfolders, or flat with ``labels_file``).
        preprocessing: ``"dvce"`` (short side ⌊S/0.875⌋, centre crop S = 256) or ``"svce"`` (S² = 224², no crop).
        image_size: ``S`` (default 256 for ``"dvce"``, 224 for ``"svce"``; smaller for tests).
        classes: keep only these classes (indices or wnids), e.g. a pair's two classes.
        labels_file: labels of a flat folder (relative to ``root`` unless absolute).
        on_unreadable: ``"raise"`` or ``"skip"`` (placeholder image, ``readable=False``, one warning per file).
    """

    def __init__(self, root: str, preprocessing: str = "dvce", image_size: int | None = None,
                 classes: Sequence[int | str] | None = None, labels_file: str | None = None,
                 on_unreadable: str = "raise") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise missing(str(root), "ImageNet validation folder")
        self.preprocessing = _checks.choice("preprocessing", preprocessing, list(PREPROCESSINGS))
        size = PREPROCESSINGS[preprocessing] if image_size is None else _checks.positive_int("image_size",
                                                                                                image_size)
        self.image_size, self.in_channels, self.num_classes = (size, size), 3, 1000
        self.on_unreadable = _checks.choice("on_unreadable", on_unreadable, ["raise", "skip"])
        self._warned: set[str] = set()
        wnids = {w: k for k, w in enumerate(imagenet_wnids())}
        self.class_names = imagenet_class_names()
        files, labels = self._scan(wnids, labels_file)
        keep = None if classes is None else {_class_index(c, wnids, "classes") for c in classes}
        rows = [(k, f, y) for k, (f, y) in enumerate(zip(files, labels)) if keep is None or y in keep]
        if not rows:
            what = f" of classes {sorted(keep)}" if keep is not None else ""
            raise BadInputError(f"no ImageNet validation images{what} found in '{self.root}' (extensions "
                                f"{', '.join(IMAGE_EXTENSIONS)}); put them there in wnid subfolders or give "
                                "labels_file for a flat folder")
        self.indices = [k for k, _, _ in rows]
        self.files = [f for _, f, _ in rows]
        self.labels = [y for _, _, y in rows]

    def _scan(self, wnids: dict[str, int], labels_file: str | None) -> tuple[list[Path], list[int]]:
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        if labels_file is None and subdirs:
            unknown = [d.name for d in subdirs if d.name not in wnids]
            if unknown:
                raise BadInputError(f"subfolder '{self.root / unknown[0]}' is not an ImageNet-1k wnid; the val "
                                    "folder must hold wnid subfolders (n01440764, …) only")
            pairs = [(f, wnids[d.name]) for d in subdirs for f in list_images(d)]
            return [f for f, _ in pairs], [y for _, y in pairs]
        if labels_file is None:
            raise BadInputError(f"'{self.root}' holds no wnid subfolders; sort the images into them or give "
                                "labels_file (LOC_val_solution.csv, a 'file,label' table, or the devkit's "
                                "ILSVRC2012_validation_ground_truth.txt with meta.mat)")
        path = Path(labels_file) if Path(labels_file).is_absolute() else self.root / labels_file
        if not path.is_file():
            raise missing(str(path), "ImageNet labels file")
        table = _read_labels(path, wnids)
        files = [f for f in list_images(self.root) if f.parent == self.root]
        unlabelled = [f for f in files if f.stem not in table]
        if unlabelled:
            raise BadInputError(f"image '{unlabelled[0]}' has no row in {path}; give the labels of every "
                                "image in the folder")
        return files, [table[f.stem] for f in files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        path = self.files[i]

        def read() -> torch.Tensor:
            with Image.open(path) as im:
                return preprocess(im, self.preprocessing, self.image_size[0])

        image, readable = read_or_placeholder(path, read, (3, *self.image_size), self.on_unreadable, self._warned)
        return {"image": image, "index": self.indices[i], "label": self.labels[i], READABLE: readable}


class ImageNetValDataModule(ImageDataModule):
    """The ImageNet validation set for explanation jobs (``predict``; the only split, served as ``"test"``).

    Args:
        root: the val folder (default ``data/imagenet/val``).
        preprocessing, image_size, classes, labels_file: as :class:`ImageNetVal` (``classes``: e.g. a pair's
            two classes, so a job reads only them).
        batch_size: DVCE's is 6 per GPU; SVCE's 128.
        predict_limit: explain only the first ``predict_limit`` images (after the class filter).
    """

    def __init__(self, root: str = "data/imagenet/val", preprocessing: str = "dvce", image_size: int | None = None,
                 classes: list[int | str] | None = None, labels_file: str | None = None, batch_size: int = 6,
                 num_workers: int = 0, predict_limit: int | None = None, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, 0.1, seed, "test", predict_limit)
        if not Path(root).is_dir():  # before anything runs: the job stops with where to get the data
            raise missing(str(root), "ImageNet validation folder")
        self.kwargs = dict(root=str(root), preprocessing=preprocessing, image_size=image_size,
                           classes=None if classes is None else list(classes), labels_file=labels_file)

    def _make(self, split: str) -> Dataset | None:
        if split != "test":
            raise BadInputError("ImageNetValDataModule serves only the validation images, for explanation jobs "
                                "(cflight predict); train on ImageNet with another datamodule")
        return ImageNetVal(**self.kwargs, on_unreadable="skip")
