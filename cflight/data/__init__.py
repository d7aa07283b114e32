"""Datasets and LightningDataModules; every sample is a dict with ``image`` ([C, H, W] in [0, 1]) and
``index``, plus ``label`` / ``target`` / ``descriptors`` where the dataset has them (DESIGN.md §3–4)."""

from cflight.data.datamodules import (
    CelebADataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    FolderDataModule,
    ImageDataModule,
    MNISTDataModule,
    ShapesDataModule,
    SquaresDataModule,
)
from cflight.data.celebahq import CelebAHQ, CelebAHQDataModule
from cflight.data.digits import Digits
from cflight.data.folder import CelebA, ImageFolderDataset, read_table
from cflight.data.imagenet import IMAGENET_PAIRS, PAIR_TARGETS, ImageNetVal, ImageNetValDataModule
from cflight.data.mnist import MNIST, FashionMNIST, prepare_mnist_raw, read_idx
from cflight.data.morphometrics import MORPHOMETRIC_NAMES, morphometrics
from cflight.data.poison import PATTERNS, PoisonedDataset, PoisonSpec, blend, make_pattern
from cflight.data.shapes import COLOURS, SHAPES, ShapeFactors, ShapesDataset
from cflight.data.squares import SquaresDataset

__all__ = [
    "COLOURS",
    "IMAGENET_PAIRS",
    "PAIR_TARGETS",
    "CelebAHQ",
    "CelebAHQDataModule",
    "ImageNetVal",
    "ImageNetValDataModule",
    "MNIST",
    "MORPHOMETRIC_NAMES",
    "PATTERNS",
    "SHAPES",
    "CelebA",
    "CelebADataModule",
    "Digits",
    "DigitsDataModule",
    "FashionMNIST",
    "FashionMNISTDataModule",
    "FolderDataModule",
    "ImageDataModule",
    "ImageFolderDataset",
    "MNISTDataModule",
    "PoisonSpec",
    "PoisonedDataset",
    "ShapeFactors",
    "ShapesDataModule",
    "ShapesDataset",
    "SquaresDataModule",
    "SquaresDataset",
    "blend",
    "make_pattern",
    "morphometrics",
    "prepare_mnist_raw",
    "read_idx",
    "read_table",
]
