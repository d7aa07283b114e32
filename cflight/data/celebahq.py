"""CelebA-HQ with CelebA's official partitions, as ACE / DiME / AC-RE prepare it (ACE
``guided_diffusion/image_datasets.py::CelebAHQDataset``, spec latent_and_regression.md §2.2).

Files under ``root`` (CelebAMask-HQ's release plus one file of CelebA's):

* ``CelebA-HQ-img/<idx>.jpg`` — the 30 000 images (1024²);
* ``CelebAMask-HQ-attribute-anno.txt`` — the 40 CelebA attributes per image (count line, names line, rows
  ``0.jpg 1 -1 …``; ±1 → {1, 0});
* ``CelebA-HQ-to-CelebA-mapping.txt`` — ``idx orig_idx orig_file``: each CelebA-HQ image's CelebA original;
* ``list_eval_partition.txt`` (CelebA's; or Kaggle's ``list_eval_partition.csv``) — CelebA file → 0 train,
  1 val, 2 test. An image is in the split of its CelebA original (ACE and AC-RE explain ``"test"``).

Images: resized (shorter side, bilinear with antialiasing: torchvision's ``Resize`` on a PIL image) to
``image_size`` and centre-cropped (ACE: ``Resize(256), CenterCrop(256)``; DiME's CelebA setting is 128), in
[0, 1]. ``label`` is the attribute ``label_column`` (ACE: ``Smiling``, query 31; ``Young``, 39), ``index``
the CelebA-HQ number (``12.jpg`` → 12). AC-RE's age targets (``Young = 1 → 0.8``, else ``0.1``) come from
the labels: :class:`cflight.targets.LabelValues` with ``label_column="Young"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from cflight.data import _checks
from cflight.data.datamodules import ImageDataModule
from cflight.data.folder import read_or_placeholder, read_partition, read_table
from cflight.data.transforms import load_image
from cflight.types import READABLE
from cflight.validation import BadInputError

__all__ = ["ATTRIBUTES_FILE", "IMAGE_FOLDER", "MAPPING_FILE", "CelebAHQ", "CelebAHQDataModule"]

IMAGE_FOLDER = "CelebA-HQ-img"
ATTRIBUTES_FILE = "CelebAMask-HQ-attribute-anno.txt"
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
SPLITS = {"train": 0, "val": 1, "test": 2}


def _missing(path: Path, what: str) -> BadInputError:
    from cflight.models.pretrained.published import missing  # the known-file table (imported on use)

    return missing(str(path), what)


def check_files(root: Path) -> Path:
    """Stop with one line naming the first missing CelebA-HQ file (and where to get it); returns the
    partition file's path."""
    if not root.is_dir():
        raise _missing(root, "CelebA-HQ folder")
    for path in (root / IMAGE_FOLDER, root / ATTRIBUTES_FILE, root / MAPPING_FILE):
        if not path.exists():
            raise _missing(path, "CelebA-HQ file")
    partition = next((root / p for p in PARTITION_FILES if (root / p).is_file()), None)
    if partition is None:
        raise _missing(root / PARTITION_FILES[0], "CelebA partition file")
    return partition


def read_mapping(path: Path) -> dict[str, str]:
    """CelebA-HQ file name (``12.jpg``) → its CelebA original (``000123.jpg``), from the mapping file."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue  # the header "idx orig_idx orig_file"
        if len(fields) < 3:
            raise BadInputError(f"{path} line {n}: expected 'idx orig_idx orig_file', got {line.strip()!r}")
        out[f"{int(fields[0])}.jpg"] = fields[2]
    return out


class CelebAHQ(Dataset):
    """CelebA-HQ images of one CelebA partition with their attributes (see the module docstring).

    Args:
        root: folder with ``CelebA-HQ-img/`` and the three annotation files.
        split: ``"train"``, ``"val"`` or ``"test"`` (the CelebA partition of each image's original).
        label_column: the attribute given as ``label`` (``Smiling``, ``Young``, …).
        image_size: square side (256 for ACE / AC-RE, 128 for DiME's size).
        limit: keep the first ``limit`` images of the split (AC-RE caps the test split at 3000).
        on_unreadable: ``"raise"`` or ``"skip"`` (zero placeholder, ``readable=False``).
    """

    def __init__(self, root: str, split: str = "test", label_column: str = "Smiling", image_size: int = 256,
                 limit: int | None = None,
                 on_unreadable: str = "raise") -> None:
        self.root = Path(root)
        partition_path = check_files(self.root)
        self.split = _checks.choice("split", split, list(SPLITS))
        side = _checks.positive_int("image_size", image_size)
        self.image_size, self.in_channels = (side, side), 3
        self.on_unreadable = _checks.choice("on_unreadable", on_unreadable, ["raise", "skip"])
        self._warned: set[str] = set()
        images = self.root / IMAGE_FOLDER
        header, rows = read_table(self.root / ATTRIBUTES_FILE)
        if label_column not in header[1:]:
            raise BadInputError(f"label_column {label_column!r} is not an attribute of {ATTRIBUTES_FILE} "
                                f"(attributes: {', '.join(header[1:])})")
        mapping, partition = read_mapping(self.root / MAPPING_FILE), read_partition(partition_path)
        column = header.index(label_column)
        wanted = SPLITS[self.split]
        kept = []
        for row in rows:
            original = mapping.get(row[0])
            if original is None:
                raise BadInputError(f"{row[0]} has no row in {MAPPING_FILE}; use the unmodified CelebAMask-HQ "
                                    "files")
            if partition.get(original) == wanted:
                kept.append((row[0], int(float(row[column]) > 0)))
        if limit is not None:
            kept = kept[:_checks.positive_int("limit", limit)]
        self.files = [images / name for name, _ in kept]
        absent = next((f for f in self.files if not f.is_file()), None)
        if absent is not None:
            raise _missing(absent, "CelebA-HQ image")
        self.labels = [y for _, y in kept]
        self.indices = [int(Path(name).stem) if Path(name).stem.isdigit() else k for k, (name, _) in enumerate(kept)]
        self.class_names, self.num_classes = [f"not {label_column}", label_column], 2
        self.label_column = label_column

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        path = self.files[i]
        image, readable = read_or_placeholder(path, lambda: load_image(str(path), 3, None, self.image_size[0]),
                                              (3, *self.image_size), self.on_unreadable, self._warned,
                                              "replace it")
        return {"image": image, "index": self.indices[i], "label": self.labels[i], READABLE: readable}


class CelebAHQDataModule(ImageDataModule):
    """CelebA-HQ with CelebA's partitions (:class:`CelebAHQ`); ``predict_split`` ``"test"`` by default (ACE,
    AC-RE). ``split_limit`` caps every split at its first images (AC-RE: 3000); ``predict_limit`` the
    explained ones. An explanation job skips undecodable images (``readable=False``), other stages stop at
    them. The files are checked when the module is built, so a job with a missing file stops before it
    starts, naming the file and where to get it."""

    def __init__(self, root: str = "data/celebahq", label_column: str = "Smiling", image_size: int = 256,
                 split_limit: int | None = None,
                 batch_size: int = 8, num_workers: int = 0, seed: int = 0, predict_split: str = "test",
                 predict_limit: int | None = None) -> None:
        super().__init__(batch_size, num_workers, 0.1, seed, predict_split, predict_limit)
        check_files(Path(root))  # before anything runs: the job stops with where to get the data
        self.kwargs = dict(root=str(root), label_column=label_column, image_size=image_size,
                           limit=split_limit)
        self._stage: str | None = None

    def setup(self, stage: str | None = None) -> None:
        self._stage = stage
        super().setup(stage)

    def _make(self, split: str) -> Dataset | None:
        return CelebAHQ(**self.kwargs, split=split, on_unreadable="skip" if self._stage == "predict" else "raise")
