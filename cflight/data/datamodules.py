"""LightningDataModules yielding cflight dict batches (``image``, ``index``, and ``label`` / ``target`` /
``descriptors`` where the dataset has them); default collation stacks the dicts.

``index`` is always the index into the split's underlying dataset (a validation split carved out of the
training set keeps the training set's indices; ``predict_limit`` takes the first items of a split without
renumbering them). Splits are deterministic functions of ``seed``. All init arguments are simple types so
the modules work from LightningCLI YAML (``data: class_path: cflight.data.MNISTDataModule``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from cflight.data import _checks
from cflight.data.digits import Digits
from cflight.data.folder import CELEBA_URL, ImageFolderDataset
from cflight.data.mnist import _FOLDER, _HINT, MNIST, FashionMNIST, find_idx_files
from cflight.data.poison import PoisonedDataset, PoisonSpec, poison_split
from cflight.data.shapes import ShapesDataset
from cflight.data.squares import SquaresDataset
from cflight.validation import BadInputError

SPLITS = ("train", "val", "test")


def base_dataset(dataset: Dataset) -> Dataset:
    """The dataset under any nesting of ``Subset``s and :class:`PoisonedDataset` wrappers."""
    while isinstance(dataset, (Subset, PoisonedDataset)):
        dataset = dataset.dataset
    return dataset


def seeded_split(n: int, sizes: list[int], seed: int) -> list[list[int]]:
    """Partition ``range(n)`` into parts of ``sizes`` (the rest last) by a seeded permutation; each part
    sorted."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    parts, start = [], 0
    for size in sizes:
        parts.append(sorted(perm[start : start + size]))
        start += size
    return parts + [sorted(perm[start:])]


class ImageDataModule(LightningDataModule):
    """Base class: subclasses implement ``_make(split)`` returning the ``"train"``, ``"val"`` or ``"test"``
    dataset; returning ``None`` for ``"val"`` carves ``val_size`` items out of the training set.

    Args:
        batch_size: batch size of every loader.
        num_workers: DataLoader worker processes.
        val_size: fraction (< 1) or count of the training set held out for validation, where the dataset
            has no validation split of its own.
        seed: seed of the splits and of the training shuffle.
        predict_split: split served by ``predict_dataloader``: "train", "val" or "test".
        predict_limit: serve only the first ``predict_limit`` items of that split.
        poison: blend a watermark / text into a share of one class (:class:`cflight.data.PoisonSpec` keys,
            e.g. ``{class_index: 0, fraction: 0.2, intensity: 0.5}``); only ``poison.splits`` (default the
            training split) are poisoned, and every split's samples gain a bool ``poisoned``.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int | float = 0.1,
        seed: int = 0,
        predict_split: str = "test",
        predict_limit: int | None = None,
        poison: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = _checks.positive_int("batch_size", batch_size)
        self.num_workers = _checks.non_negative_int("num_workers", num_workers)
        if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or val_size < 0:
            raise ValueError(f"val_size must be a fraction in [0, 1) or a count >= 1, got {val_size!r}")
        self.val_size, self.seed = val_size, int(seed)
        self.predict_split = _checks.choice("predict_split", predict_split, SPLITS)
        self.predict_limit = (
            None if predict_limit is None else _checks.positive_int("predict_limit", predict_limit)
        )
        self.poison = None if poison is None else PoisonSpec.from_config(poison)
        self._datasets: dict[str, Dataset] = {}

    def _make(self, split: str) -> Dataset | None:
        raise NotImplementedError

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` ("train", "val" or "test"), built on first use."""
        _checks.choice("split", split, SPLITS)
        if split not in self._datasets:
            if split == "test":
                self._datasets["test"] = poison_split(self._make("test"), self.poison, "test")
            else:
                val = self._make("val")
                train = self._make("train")
                if val is None:
                    n_val = _checks.split_count("val_size", self.val_size, len(train))
                    val_idx, train_idx = seeded_split(len(train), [n_val], self.seed)
                    train, val = Subset(train, train_idx), Subset(train, val_idx)
                # poisoned after carving, so a validation split taken from the training set stays clean
                self._datasets.update(train=poison_split(train, self.poison, "train"),
                                      val=poison_split(val, self.poison, "val"))
        return self._datasets[split]

    @property
    def poison_mask(self) -> Tensor | None:
        """``[1, H, W]`` alpha mask of the poison pattern (``None`` without ``poison``)."""
        if self.poison is None:
            return None
        return self.dataset("train").alpha  # every split is a PoisonedDataset when poison is set

    def setup(self, stage: str | None = None) -> None:
        needed = {
            "fit": ["train", "val"],
            "validate": ["val"],
            "test": ["test"],
            "predict": [self.predict_split],
        }
        for split in needed.get(stage, list(SPLITS)):
            self.dataset(split)
        if stage == "predict" and len(self.dataset(self.predict_split)) == 0:
            raise BadInputError(f"the {self.predict_split!r} split of {type(self).__name__} holds no images, "
                                "nothing to explain; choose another predict_split or give that split images")

    def _loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        dataset = self.dataset(self.predict_split)
        if self.predict_limit is not None and self.predict_limit < len(dataset):
            dataset = Subset(dataset, self._predict_indices(len(dataset)))
        return self._loader(dataset)

    def _predict_indices(self, n: int) -> list[int]:
        """Which ``predict_limit`` of the split's ``n`` items to serve: the first ones."""
        return list(range(self.predict_limit))

    # what models and methods need to know about the data, read off the underlying dataset
    @property
    def _reference(self) -> Dataset:
        return base_dataset(self.dataset(self.predict_split))

    @property
    def num_classes(self) -> int | None:
        return getattr(self._reference, "num_classes", None)

    @property
    def in_channels(self) -> int:
        return self._reference.in_channels

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self._reference.image_size)

    @property
    def descriptor_names(self) -> list[str]:
        return list(getattr(self._reference, "descriptor_names", []))

    @property
    def class_names(self) -> list[str] | None:
        return getattr(self._reference, "class_names", None)


class MNISTDataModule(ImageDataModule):
    """MNIST (60,000 train minus ``val_size`` for validation; 10,000 test); see :class:`cflight.data.MNIST`
    for where the files are found. ``poison``: see :class:`ImageDataModule` (spurious-feature experiments,
    ``configs/train/classifier_mnist_poisoned.yaml``)."""

    dataset_class = MNIST

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        image_size: int | None = None,
        morphometrics: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int | float = 0.1,
        seed: int = 0,
        predict_split: str = "test",
        predict_limit: int | None = None,
        poison: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, val_size, seed, predict_split, predict_limit, poison)
        self.root, self.download = str(root), bool(download)
        self.image_size_arg = _checks.optional_size("image_size", image_size)
        self.morphometrics = bool(morphometrics)
        n_classes = len(self.dataset_class.class_names)
        if self.poison is not None and self.poison.class_index >= n_classes:  # fail before any loading
            raise ValueError(f"poison class_index must be < {n_classes} (the number of classes), "
                             f"got {self.poison.class_index}")
        name = self.dataset_class.name
        if not self.download and find_idx_files(self.root, name, "test") is None:
            raise FileNotFoundError(
                f"{_FOLDER[name]} not found in '{Path(self.root) / _FOLDER[name] / 'raw'}' "
                f"nor offline; {_HINT[name]}, or pass download=True"
            )

    def prepare_data(self) -> None:
        if self.download:
            for split in ("train", "test"):
                self.dataset_class(self.root, split, download=True, morphometrics=False)

    def _make(self, split: str) -> Dataset | None:
        if split == "val":
            return None
        return self.dataset_class(self.root, split, self.download, self.image_size_arg, self.morphometrics)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST, same interface as :class:`MNISTDataModule`."""

    dataset_class = FashionMNIST


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8×8 digits: a seeded ``test_size`` test split, then ``val_size`` of the rest."""

    def __init__(
        self,
        image_size: int | None = None,
        test_size: float = 0.2,
        morphometrics: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int | float = 0.1,
        seed: int = 0,
        predict_split: str = "test",
        predict_limit: int | None = None,
        poison: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, val_size, seed, predict_split, predict_limit, poison)
        self.kwargs = dict(
            test_size=test_size, seed=self.seed, image_size=image_size, morphometrics=morphometrics
        )
        Digits("test", **self.kwargs)  # validate the arguments now

    def _make(self, split: str) -> Dataset | None:
        return None if split == "val" else Digits(split, **self.kwargs)


class ShapesDataModule(ImageDataModule):
    """The procedural ``shapes`` dataset (see :class:`cflight.data.ShapesDataset` for the factors); train,
    val and test are independent streams of the same ``seed``. ``test_marker_prob`` /
    ``test_marker_prob_other`` override the marker frequencies of the test split (e.g. 0.5 / 0.5 to
    decorrelate the marker from the class)."""

    def __init__(
        self,
        n_train: int = 10_000,
        n_val: int = 1_000,
        n_test: int = 1_000,
        image_size: int = 32,
        channels: int = 3,
        shapes: list[str] = ["circle", "square", "triangle"],
        colours: list[str] = ["red", "green", "blue"],
        label_factor: str = "shape",
        target_factor: str | None = None,
        size_range: tuple[float, float] = (0.12, 0.25),
        background_range: tuple[float, float] = (0.0, 0.5),
        rotate: bool = True,
        noise_std: float = 0.0,
        marker_class: int | None = None,
        marker_prob: float = 0.9,
        marker_prob_other: float = 0.0,
        marker_size: int = 5,
        marker_colour: str = "white",
        marker_position: str | list[str] = "top_left",
        marker_shape: str | list[str] = "cross",
        test_marker_prob: float | None = None,
        test_marker_prob_other: float | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        predict_split: str = "test",
        predict_limit: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, 0, seed, predict_split, predict_limit)
        self.lengths = {
            "train": _checks.positive_int("n_train", n_train),
            "val": _checks.non_negative_int("n_val", n_val),
            "test": _checks.non_negative_int("n_test", n_test),
        }
        self.kwargs = dict(
            seed=self.seed,
            image_size=image_size,
            channels=channels,
            shapes=list(shapes),
            colours=list(colours),
            label_factor=label_factor,
            target_factor=target_factor,
            size_range=tuple(size_range),
            background_range=tuple(background_range),
            rotate=rotate,
            noise_std=noise_std,
            marker_class=marker_class,
            marker_prob=marker_prob,
            marker_prob_other=marker_prob_other,
            marker_size=marker_size,
            marker_colour=marker_colour,
            marker_position=marker_position if isinstance(marker_position, str) else list(marker_position),
            marker_shape=marker_shape if isinstance(marker_shape, str) else list(marker_shape),
        )
        self.test_overrides = {
            k: v
            for k, v in (("marker_prob", test_marker_prob), ("marker_prob_other", test_marker_prob_other))
            if v is not None
        }
        self._make("test")  # validate the arguments now (building a dataset renders nothing)

    def _make(self, split: str) -> Dataset:
        kwargs = {**self.kwargs, **(self.test_overrides if split == "test" else {})}
        return ShapesDataset(self.lengths[split], split=split, **kwargs)


class SquaresDataModule(ImageDataModule):
    """Ha & Bender's squares regression set (:class:`cflight.data.SquaresDataset`); train/val/test are
    independent factorial streams, or the test split is a 315-image mirror grid (``test_design``);
    ``predict_spread`` serves ``predict_limit`` evenly spaced items instead of the first ones."""

    def __init__(
        self,
        n_train: int = 16_000,
        n_val: int = 1_000,
        n_test: int = 1_000,
        noise_std: float = 20.0,
        test_design: str = "factorial",
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        predict_split: str = "test",
        predict_limit: int | None = None,
        predict_spread: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, 0, seed, predict_split, predict_limit)
        self.lengths = {
            "train": _checks.positive_int("n_train", n_train),
            "val": _checks.non_negative_int("n_val", n_val),
            "test": None if test_design != "factorial" else _checks.non_negative_int("n_test", n_test),
        }
        self.noise_std, self.test_design = noise_std, test_design
        # a mirror grid is ordered (position, inner colour, background): its first items are one frame position
        self.predict_spread = bool(predict_spread)
        self._make("test")

    def _predict_indices(self, n: int) -> list[int]:
        """The first ``predict_limit`` items, or with ``predict_spread`` that many evenly spaced over all ``n``
        (every frame position, inner colour and background of a mirror grid)."""
        if not self.predict_spread:
            return super()._predict_indices(n)
        return [(i * n) // self.predict_limit for i in range(self.predict_limit)]

    def _make(self, split: str) -> Dataset:
        design = self.test_design if split == "test" else "factorial"
        return SquaresDataset(self.lengths[split], self.seed, split, design, self.noise_std)


class FolderDataModule(ImageDataModule):
    """Your own images from a folder on disk; each sub-folder (root/<class name>/) becomes one class.

    The images are read by :class:`cflight.data.ImageFolderDataset`.

    A folder of class sub-folders (``root/<class name>/*.png``) gives labelled images: each sub-folder is one
    class, numbered in sorted order of the sub-folder names, and those names are the class names that every
    output of an explanation job shows (results.csv, gallery captions, global_attribution.json), when the
    explained classifier has one output per sub-folder and the job sets no ``class_names``. A folder of
    image files without sub-folders gives unlabelled images. With ``partition_file`` the splits come from that
    file; otherwise seeded ``test_size`` and ``val_size`` parts of the whole folder are held out, and a
    sample's ``index`` is its position in the whole folder (sorted by class, then file name). An explanation
    job's results.csv also gets a ``path`` column: each image's file path relative to ``root``.

    For small folders, training lowers the trainer's ``log_every_n_steps`` to the number of training batches
    (so each epoch logs at least once, without Lightning's warning about the logging interval).

    Args:
        root: The image folder (class sub-folders, or image files).
        annotations: Optional table of per-file columns (CSV or CelebA's format), relative to ``root``; see
            :class:`cflight.data.ImageFolderDataset`.
        label_column: The annotation column holding the class (instead of the sub-folders).
        target_column: The annotation column holding a regression target.
        descriptor_columns: The annotation columns used as descriptors (default: every other numeric one).
        partition_file: Optional CelebA-style file assigning each image to train (0), val (1) or test (2).
        image_size: The square side images are resized and centre-cropped to (``None`` keeps the files' size;
            all images must then share it).
        crop_size: An optional centre crop applied before resizing.
        channels: The channels the images are read with: 1 (grey) or 3 (RGB).
        test_size: The fraction (< 1) or count of the folder held out for testing (the default split that an
            explanation job explains).
        batch_size: The batch size of every loader.
        num_workers: The number of DataLoader worker processes.
        val_size: The fraction (< 1) or count of the rest held out for validation.
        seed: The seed of the split (keep it the same for every model trained on one folder, so no model has
            trained on the images that are explained) and of the training shuffle.
        predict_split: The split an explanation job explains: "train", "val" or "test".
        predict_limit: Explain only the first ``predict_limit`` images of that split.
        poison: Blend a watermark into a share of one class (see :class:`ImageDataModule`).
    """

    def __init__(
        self,
        root: str,
        annotations: str | None = None,
        label_column: str | None = None,
        target_column: str | None = None,
        descriptor_columns: list[str] | None = None,
        partition_file: str | None = None,
        image_size: int | None = None,
        crop_size: int | None = None,
        channels: int = 3,
        test_size: int | float = 0.1,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int | float = 0.1,
        seed: int = 0,
        predict_split: str = "test",
        predict_limit: int | None = None,
        poison: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, val_size, seed, predict_split, predict_limit, poison)
        if not Path(root).is_dir():
            raise FileNotFoundError(
                f"image folder '{root}' does not exist; put your images there or pass root=<the folder "
                "that holds them> (data.init_args.root in the config)"
            )
        if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or test_size < 0:
            raise ValueError(f"test_size must be a fraction in [0, 1) or a count >= 1, got {test_size!r}")
        self.test_size, self.partition_file = test_size, partition_file
        self.kwargs = dict(
            root=str(root),
            annotations=annotations,
            label_column=label_column,
            target_column=target_column,
            descriptor_columns=descriptor_columns,
            image_size=image_size,
            crop_size=crop_size,
            channels=channels,
        )
        self._split_parts: dict[str, Dataset] | None = None

    def setup(self, stage: str | None = None) -> None:
        """Builds the splits; an explanation job (``predict``) skips image files that cannot be decoded and
        records them (``readable=False``), every other stage stops at such a file, naming it."""
        super().setup(stage)
        for dataset in self._datasets.values():
            base_dataset(dataset).on_unreadable = "skip" if stage == "predict" else "raise"
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        if module is not None and stage == "fit":
            self._check_classes(module)
            self._fit_log_interval(trainer)
        if module is not None and stage == "predict":
            self._hand_over(module)

    @property
    def sample_paths(self) -> list[str]:
        """File path relative to ``root`` of each image of the predict split's dataset, by ``index``."""
        return self._reference.relative_paths

    @staticmethod
    def _matches(outputs: Any, names: list[str] | None) -> bool | None:
        """Whether a classifier's ``outputs`` fit the folder's classes (one logit fits two); ``None``: not
        known."""
        if not names or not isinstance(outputs, int) or isinstance(outputs, bool) or outputs < 1:
            return None
        return outputs == len(names) or (outputs == 1 and len(names) == 2)

    def _check_classes(self, module: Any) -> None:
        """Training a classifier with another number of outputs than the folder has classes fails here, in one
        line (not with an index error deep in the loss)."""
        names = getattr(base_dataset(self.dataset("train")), "class_names", None)
        outputs = getattr(module, "num_classes", None)
        if self._matches(outputs, names) is False:
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise BadInputError(f"the folder '{self.kwargs['root']}' has {len(names)} classes ({shown}) but the "
                                f"classifier has {outputs} outputs; set num_classes: {len(names)} in the model's "
                                "net_kwargs")

    def _hand_over(self, module: Any) -> None:
        """An explanation job's outputs name the folder's classes (where the job sets no ``class_names``) and
        record each image's file path (``sample_paths``, read by the writer for results.csv)."""
        if not hasattr(module, "class_names"):
            return
        # only when the explained model's outputs are the folder's classes (a 1000-class model explained on a
        # folder of two sub-folders keeps its class numbers)
        outputs = getattr(getattr(module, "model", None), "num_classes", None)
        if module.class_names is None and self._matches(outputs, self.class_names) \
                and getattr(module, "task", "classification") == "classification":
            module.class_names = list(self.class_names)
        module.sample_paths = self.sample_paths

    def _fit_log_interval(self, trainer: Any) -> None:
        """Lower ``log_every_n_steps`` to the number of training batches when an epoch has fewer."""
        n_batches = -(-len(self.dataset("train")) // self.batch_size)
        limit = trainer.limit_train_batches
        if isinstance(limit, int) and not isinstance(limit, bool):
            n_batches = min(n_batches, limit)
        elif isinstance(limit, float) and limit < 1:
            n_batches = max(1, int(n_batches * limit))
        if 0 < n_batches < trainer.log_every_n_steps:
            trainer.log_every_n_steps = n_batches

    def _make(self, split: str) -> Dataset | None:
        if self.partition_file is not None:
            return ImageFolderDataset(**self.kwargs, partition_file=self.partition_file, split=split)
        if self._split_parts is None:
            full = ImageFolderDataset(**self.kwargs)
            n_test = _checks.split_count("test_size", self.test_size, len(full))
            n_val = _checks.split_count("val_size", self.val_size, len(full) - n_test)
            test, val, train = seeded_split(len(full), [n_test, n_val], self.seed)
            self._split_parts = {
                "train": Subset(full, train),
                "val": Subset(full, val),
                "test": Subset(full, test),
            }
        return self._split_parts[split]


class CelebADataModule(FolderDataModule):
    """CelebA from its official files under ``root`` (see :class:`cflight.data.CelebA`): ``label`` is the
    attribute ``label_column``, the other attributes are ``descriptors``; official partitions when
    ``list_eval_partition.txt`` is present."""

    def __init__(
        self,
        root: str = "data/celeba",
        label_column: str = "Smiling",
        image_size: int = 64,
        crop_size: int | None = 178,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int | float = 0.1,
        test_size: int | float = 0.1,
        seed: int = 0,
        predict_split: str = "test",
        predict_limit: int | None = None,
    ) -> None:
        attrs = Path(root) / "list_attr_celeba.txt"
        if not attrs.is_file():
            raise FileNotFoundError(
                f"CelebA attribute file '{attrs}' not found; download CelebA from {CELEBA_URL} "
                f"and unpack it into '{root}'"
            )
        partition = "list_eval_partition.txt" if (Path(root) / "list_eval_partition.txt").is_file() else None
        super().__init__(
            root,
            annotations=attrs.name,
            label_column=label_column,
            partition_file=partition,
            image_size=image_size,
            crop_size=crop_size,
            test_size=test_size,
            batch_size=batch_size,
            num_workers=num_workers,
            val_size=val_size,
            seed=seed,
            predict_split=predict_split,
            predict_limit=predict_limit,
        )
