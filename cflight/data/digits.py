"""scikit-learn's 8×8 handwritten digits (1,797 images, ship with scikit-learn): real data for tests."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cflight.data import _checks
from cflight.data.morphometrics import MORPHOMETRIC_NAMES, morphometrics
from cflight.data.transforms import resize


@lru_cache(maxsize=1)
def _load() -> tuple[Tensor, Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits dataset needs scikit-learn: `pip install scikit-learn`") from None
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0  # values 0..16 -> [0, 1]
    return images, torch.as_tensor(bunch.target, dtype=torch.long)


def split_indices(n: int, test_size: float, seed: int, split: str) -> Tensor:
    """Indices of ``split`` ("train" / "test" / "all") in a seeded permutation of ``range(n)``; the first
    ``round(test_size · n)`` permuted items are the test split."""
    if split == "all":
        return torch.arange(n)
    n_test = _checks.split_count("test_size", test_size, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return torch.sort(perm[:n_test] if split == "test" else perm[n_test:]).values


class Digits(Dataset):
    """8×8 digits as cflight dict samples (``image`` ``[1, 8, 8]``, or ``[1, S, S]`` with ``image_size=S``;
    ``index`` into this split; ``label``; morphometric ``descriptors``).

    Args:
        split: "train", "test" or "all"; the split is a seeded permutation.
        test_size: fraction (< 1) or count of the test split.
        seed: seed of the split.
        image_size: optional square side to resize to.
        morphometrics: add morphometric ``descriptors``.
    """

    class_names = [str(d) for d in range(10)]

    def __init__(
        self,
        split: str = "train",
        test_size: float = 0.2,
        seed: int = 0,
        image_size: int | None = None,
        morphometrics: bool = True,
    ) -> None:
        _checks.choice("split", split, ["train", "test", "all"])
        self.resize_to = _checks.optional_size("image_size", image_size)
        images, labels = _load()
        self.indices = split_indices(len(labels), test_size, seed, split)
        self.images, self.labels = images[self.indices], labels[self.indices]
        self.with_descriptors = bool(morphometrics)
        self.num_classes, self.in_channels = 10, 1
        self.image_size = (image_size, image_size) if image_size else (8, 8)
        self.descriptor_names = list(MORPHOMETRIC_NAMES) if self.with_descriptors else []
        self._descriptors: dict[int, Tensor] = {}  # morphometrics per index, measured on first use

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        image = self.images[i][None].clone()
        if self.resize_to is not None:
            image = resize(image, self.resize_to)
        sample = {"image": image, "index": i, "label": int(self.labels[i])}
        if self.with_descriptors:
            # Morpho-MNIST's measurements cost ~20 ms an image (4x upscaling, medial axis): each once per index
            if i not in self._descriptors:
                self._descriptors[i] = morphometrics(image)
            sample["descriptors"] = self._descriptors[i].clone()
        return sample
