"""Images from a folder on disk, optionally with an annotation table (CSV or CelebA's attribute format).

Without annotations, a folder of class subfolders gives labelled images (classes = sorted subfolder names);
a folder with image files in it gives unlabelled images found recursively. With an annotation table
(``filename, col1, col2, ...``), one column may be the ``label`` (±1 attributes map to {0, 1}; strings map to
sorted class indices), one the regression ``target``, and numeric columns become ``descriptors``. Both a
comma-separated file with a header and CelebA's ``list_attr_celeba.txt`` (count line, names line,
whitespace-separated rows) are read. Filenames are resolved relative to ``root``, else by basename anywhere
below it (so CelebA's ``img_align_celeba/`` subfolder needs no configuration).

A file that cannot be decoded either stops the job with a one-line error naming it
(``on_unreadable="raise"``, the default, and what training / validation / testing use) or is skipped
(``"skip"``, what :class:`~cflight.data.FolderDataModule` uses for ``predict``): the sample then holds a zero
placeholder image and ``readable=False`` (every sample carries ``readable``), a warning names the file once,
and :class:`~cflight.lit.ExplainModule` records its index as unreadable instead of explaining it.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from cflight.data import _checks
from cflight.data.transforms import load_image
from cflight.types import READABLE
from cflight.validation import BadInputError, MissingInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
# what PIL raises for a file it cannot decode (damaged, truncated, not an image, vanished, unreadable)
UNREADABLE_ERRORS = (OSError, EOFError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_or_placeholder(path: str | os.PathLike, read: Callable[[], torch.Tensor], shape: tuple[int, ...],
                        on_unreadable: str, warned: set[str], advice: str = "replace or delete it",
                        ) -> tuple[torch.Tensor, bool]:
    """``(read(), True)``, or for a file that cannot be decoded: with ``on_unreadable="raise"`` one line naming
    it and ``advice``; otherwise a zero placeholder of ``shape`` and ``False`` (an explanation job records the
    image as unreadable), warning once per file (``warned`` holds the files already named)."""
    try:
        return read(), True
    except UNREADABLE_ERRORS as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else "no details"
        what = f"image file '{path}' cannot be read ({type(err).__name__}: {detail})"
        if on_unreadable == "raise":
            raise BadInputError(f"{what}; {advice}") from None
        if str(path) not in warned:
            warned.add(str(path))
            warnings.warn(f"{what}: skipped (recorded as unreadable, not explained)", stacklevel=4)
        return torch.zeros(*shape), False


def read_table(path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """Header and rows of an annotation table; the first column holds file names. Reads CSV with a header
    and CelebA's format (optional count line; a header line without the filename column)."""
    with open(path, newline="") as f:
        lines = [line.strip() for line in f if line.strip()]
    if lines and lines[0].isdigit():
        lines = lines[1:]
    if not lines:
        raise ValueError(f"annotation file {path} is empty")
    comma = "," in lines[0]
    table = (
        [[cell.strip() for cell in row] for row in csv.reader(lines)]
        if comma
        else [ln.split() for ln in lines]
    )
    header, rows = table[0], table[1:]
    if not comma and rows and len(rows[0]) == len(header) + 1:  # CelebA: names only, no filename column
        header = ["filename"] + header
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: row {n} has {len(row)} fields, the header has {len(header)}")
    return header, rows


def _as_floats(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def _binary(values: list[float]) -> list[float]:
    """Map CelebA's ±1 attributes to {0, 1}; other values are kept."""
    return [(v + 1) / 2 for v in values] if values and set(values) <= {-1.0, 1.0} else values


def read_partition(path: str | os.PathLike) -> dict[str, int]:
    """File name → partition (0 train, 1 val, 2 test) from a CelebA-style ``list_eval_partition`` file
    (whitespace- or comma-separated; header lines are skipped)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        fields = line.replace(",", " ").split()
        if len(fields) >= 2 and fields[1].isdigit():
            out[Path(fields[0]).name] = int(fields[1])
    return out


def list_images(root: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files below ``root``, sorted (deterministic order)."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())


class ImageFolderDataset(Dataset):
    """Images from disk as cflight dict samples.

    Args:
        root: image folder.
        annotations: optional table (path relative to ``root`` unless absolute): file name → columns.
        label_column: annotation column used as ``label``.
        target_column: annotation column used as the regression ``target``.
        descriptor_columns: annotation columns used as ``descriptors`` (default: every other numeric column).
        partition_file: optional CelebA-style ``list_eval_partition.txt`` (file name → 0/1/2 for
            train/val/test); with it only ``split``'s rows are kept.
        split: "train", "val" or "test" (used with ``partition_file``).
        image_size: square side: shorter side resized, then centre-cropped (``None``: keep the file's size).
        crop_size: optional centre crop applied first (178 for aligned CelebA).
        channels: 3 (RGB) or 1 (grey).
        on_unreadable: ``"raise"`` (stop at a file that cannot be decoded, naming it) or ``"skip"``
            (placeholder image with ``readable=False``, one warning per file); see the module docstring.
    """

    def __init__(
        self,
        root: str,
        annotations: str | None = None,
        label_column: str | None = None,
        target_column: str | None = None,
        descriptor_columns: list[str] | None = None,
        partition_file: str | None = None,
        split: str = "train",
        image_size: int | None = None,
        crop_size: int | None = None,
        channels: int = 3,
        on_unreadable: str = "raise",
    ) -> None:
        self.root = Path(root)
        self.on_unreadable = _checks.choice("on_unreadable", on_unreadable, ["raise", "skip"])
        self._warned: set[str] = set()
        if not self.root.is_dir():
            raise MissingInputError(
                f"image folder '{self.root}' does not exist; put your images there or pass root=<the folder "
                "that holds them>"
            )
        self.resize_to = _checks.optional_size("image_size", image_size)
        self.crop_size = _checks.optional_size("crop_size", crop_size)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.in_channels = channels
        self.labels: list[int] | None = None
        self.targets: list[float] | None = None
        self.descriptor_names: list[str] = []
        self.descriptor_values: torch.Tensor | None = None
        self.class_names: list[str] | None = None
        if annotations is None:
            if label_column or target_column or descriptor_columns:
                raise ValueError("label_column / target_column / descriptor_columns need an annotations file")
            self._from_folders()
        else:
            self._from_table(
                self._path(annotations, "annotations"), label_column, target_column, descriptor_columns
            )
        if partition_file is not None:
            self._keep_partition(
                self._path(partition_file, "partition_file"),
                _checks.choice("split", split, ["train", "val", "test"]),
            )
        if not self.files:
            raise MissingInputError(
                f"no images found in '{self.root}' (extensions {', '.join(IMAGE_EXTENSIONS)}); put image "
                "files there or point root at the folder that holds them"
            )
        self.num_classes = len(self.class_names) if self.class_names is not None else None
        side = self.resize_to or self.crop_size
        self.image_size = (side, side) if side is not None else self._first_size()

    def _first_size(self) -> tuple[int, int]:
        """``(H, W)`` of the first file that can be read (all images must share it without ``image_size``)."""
        for path in self.files:
            try:
                with Image.open(path) as im:
                    return im.height, im.width
            except UNREADABLE_ERRORS:
                continue
        raise BadInputError(f"none of the {len(self.files)} image files below '{self.root}' can be read "
                            f"(e.g. '{self.files[0]}'); check that they are images of "
                            f"{', '.join(IMAGE_EXTENSIONS)}")

    def _path(self, name: str, what: str) -> Path:
        path = Path(name) if Path(name).is_absolute() else self.root / name
        if not path.is_file():
            raise MissingInputError(f"{what} file '{path}' not found; check the path (relative to root "
                                    f"'{self.root}')")
        return path

    def _from_folders(self) -> None:
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        direct = [p for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if subdirs and not direct:
            per_class = [(d.name, list_images(d)) for d in subdirs]
            per_class = [(name, files) for name, files in per_class if files]
            self.class_names = [name for name, _ in per_class]
            self.files = [f for _, files in per_class for f in files]
            self.labels = [k for k, (_, files) in enumerate(per_class) for _ in files]
        else:
            self.files = list_images(self.root)

    def _from_table(
        self,
        path: Path,
        label_column: str | None,
        target_column: str | None,
        descriptor_columns: list[str] | None,
    ) -> None:
        header, rows = read_table(path)
        columns = {name: [row[k] for row in rows] for k, name in enumerate(header[1:], start=1)}
        for arg, name in (("label_column", label_column), ("target_column", target_column)):
            if name is not None and name not in columns:
                raise ValueError(f"{arg} {name!r} is not a column of {path} (columns: {', '.join(columns)})")
        self.files = self._resolve([row[0] for row in rows], path)
        if label_column is not None:
            values = _as_floats(columns[label_column])
            if values is None:
                self.class_names = sorted(set(columns[label_column]))
                self.labels = [self.class_names.index(v) for v in columns[label_column]]
            else:
                binary = set(values) <= {-1.0, 1.0}
                values = _binary(values)
                if any(v != int(v) or v < 0 for v in values):
                    raise ValueError(f"label_column {label_column!r} must hold class indices, ±1 or names")
                self.labels = [int(v) for v in values]
                self.class_names = (
                    [f"not {label_column}", label_column]
                    if binary
                    else [str(k) for k in range(max(self.labels, default=-1) + 1)]
                )
        if target_column is not None:
            values = _as_floats(columns[target_column])
            if values is None:
                raise ValueError(f"target_column {target_column!r} must be numeric")
            self.targets = values
        if descriptor_columns is None:
            used = {label_column, target_column}
            descriptor_columns = [c for c in columns if c not in used and _as_floats(columns[c]) is not None]
        descriptor_values = []
        for name in descriptor_columns:
            values = _as_floats(columns[name]) if name in columns else None
            if values is None:
                raise ValueError(f"descriptor column {name!r} is missing from {path} or not numeric")
            descriptor_values.append(_binary(values))
        self.descriptor_names = list(descriptor_columns)
        if descriptor_values:
            self.descriptor_values = torch.tensor(descriptor_values, dtype=torch.float32).T.contiguous()

    def _resolve(self, names: list[str], table: Path) -> list[Path]:
        by_name: dict[str, Path] | None = None
        files = []
        for name in names:
            path = self.root / name
            if not path.is_file():
                if by_name is None:
                    by_name = {p.name: p for p in list_images(self.root)}
                path = by_name.get(Path(name).name)
                if path is None:
                    raise MissingInputError(f"image '{name}' listed in {table} not found below "
                                            f"'{self.root}'; add the file or remove its row")
            files.append(path)
        return files

    def _keep_partition(self, path: Path, split: str) -> None:
        part = read_partition(path)
        wanted = {"train": 0, "val": 1, "test": 2}[split]
        keep = [k for k, f in enumerate(self.files) if part.get(f.name) == wanted]
        self.files = [self.files[k] for k in keep]
        if self.labels is not None:
            self.labels = [self.labels[k] for k in keep]
        if self.targets is not None:
            self.targets = [self.targets[k] for k in keep]
        if self.descriptor_values is not None:
            self.descriptor_values = self.descriptor_values[keep]

    @property
    def relative_paths(self) -> list[str]:
        """Each image's file path relative to ``root`` (``/``-separated), in index order: what results.csv
        records in its ``path`` column."""
        return [p.relative_to(self.root).as_posix() if p.is_relative_to(self.root) else str(p)
                for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> tuple[torch.Tensor, bool]:
        """Image ``i`` and whether its file could be read (else, with ``on_unreadable="skip"``, a zero
        placeholder)."""
        path = self.files[i]
        image, readable = read_or_placeholder(
            path, lambda: load_image(str(path), self.in_channels, self.crop_size, self.resize_to),
            (self.in_channels, *self.image_size), self.on_unreadable, self._warned,
            "replace or delete it (explanation jobs skip such files and record them; training stops so no "
            "placeholder is learned)")
        if not readable:
            return image, False
        if tuple(image.shape[1:]) != tuple(self.image_size):
            h, w = self.image_size
            raise BadInputError(f"image file '{path}' is {image.shape[1]}×{image.shape[2]}, the folder's "
                                f"first image {h}×{w}; set image_size to bring all images to one size")
        return image, True

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        image, readable = self._load(i)
        sample = {"image": image, "index": i, READABLE: readable}
        if self.labels is not None:
            sample["label"] = self.labels[i]
        if self.targets is not None:
            sample["target"] = self.targets[i]
        if self.descriptor_values is not None:
            sample["descriptors"] = self.descriptor_values[i].clone()
        return sample


class CelebA(ImageFolderDataset):
    """CelebA from its official files under ``root``: ``list_attr_celeba.txt``, ``list_eval_partition.txt``
    (optional: without it all images form one split) and the aligned images (any subfolder). ``label`` is
    the attribute ``label_column`` in {0, 1}; the other 39 attributes are ``descriptors``."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        label_column: str = "Smiling",
        image_size: int = 64,
        crop_size: int | None = 178,
        channels: int = 3,
    ) -> None:
        attrs = Path(root) / "list_attr_celeba.txt"
        if not attrs.is_file():
            raise FileNotFoundError(
                f"CelebA attribute file '{attrs}' not found; download CelebA from {CELEBA_URL} "
                f"and unpack it into '{root}'"
            )
        partition = Path(root) / "list_eval_partition.txt"
        super().__init__(
            root,
            annotations="list_attr_celeba.txt",
            label_column=label_column,
            partition_file=partition.name if partition.is_file() else None,
            split=split,
            image_size=image_size,
            crop_size=crop_size,
            channels=channels,
        )
