"""What a folder of class sub-folders hands to the jobs: file paths, class names, a class-count check and a
logging interval that fits small folders."""
import inspect
import re
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from cflight.data import FolderDataModule, ImageFolderDataset
from cflight.lit.results import add_paths
from cflight.validation import BadInputError


def make_folder(root, classes=("cat", "dog", "emu"), per_class=5):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            Image.fromarray(np.full((6, 6), 30 * k + j, np.uint8), "L").save(root / name / f"{j}.png")


def attach(dm, module, log_every_n_steps=50, limit_train_batches=1.0):
    dm.trainer = SimpleNamespace(lightning_module=module, log_every_n_steps=log_every_n_steps,
                                 limit_train_batches=limit_train_batches)
    return dm.trainer


def test_relative_paths_follow_the_index(tmp_path):
    make_folder(tmp_path)
    ds = ImageFolderDataset(str(tmp_path), channels=1)
    assert ds.relative_paths[:2] == ["cat/0.png", "cat/1.png"] and ds.relative_paths[14] == "emu/4.png"
    dm = FolderDataModule(str(tmp_path), channels=1, test_size=0.2, val_size=0.2, seed=0)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    for index, label in zip(batch["index"].tolist(), batch["label"].tolist()):
        assert dm.sample_paths[index].split("/")[0] == dm.class_names[label]  # index → the file read


def test_explanation_module_gets_class_names_and_paths(tmp_path):
    make_folder(tmp_path)
    dm = FolderDataModule(str(tmp_path), channels=1, test_size=0.2, val_size=0.2)
    module = SimpleNamespace(class_names=None, model=SimpleNamespace(num_classes=3), task="classification")
    attach(dm, module)
    dm.setup("predict")
    assert module.class_names == ["cat", "dog", "emu"] and module.sample_paths == dm.sample_paths
    named = SimpleNamespace(class_names=["a", "b", "c"], model=SimpleNamespace(num_classes=3))
    attach(dm, named)
    dm.setup("predict")
    assert named.class_names == ["a", "b", "c"]  # a job's own class_names win


def test_class_count_mismatch_is_one_line(tmp_path):
    make_folder(tmp_path)
    dm = FolderDataModule(str(tmp_path), channels=1, test_size=0.2, val_size=0.2)
    attach(dm, SimpleNamespace(num_classes=10))
    with pytest.raises(BadInputError, match=r"has 3 classes \(cat, dog, emu\) but the classifier has 10 "
                                            "outputs; set num_classes: 3"):
        dm.setup("fit")
    other = SimpleNamespace(class_names=None, model=SimpleNamespace(num_classes=10))
    attach(dm, other)
    dm.setup("predict")  # explaining a 10-class model on this folder is fine; its outputs keep their numbers
    assert other.class_names is None and other.sample_paths == dm.sample_paths
    two = tmp_path / "two"
    make_folder(two, ("a", "b"))
    binary = FolderDataModule(str(two), channels=1, test_size=0.2, val_size=0.2)
    attach(binary, SimpleNamespace(num_classes=1))  # one logit for two classes is a binary classifier
    binary.setup("fit")
    attach(dm, SimpleNamespace(latent_dim=8))  # not a classifier: nothing to check
    dm.setup("fit")


def test_small_folder_lowers_the_logging_interval(tmp_path):
    make_folder(tmp_path)  # 15 images: 9 train
    dm = FolderDataModule(str(tmp_path), channels=1, test_size=0.2, val_size=0.2, batch_size=4)
    trainer = attach(dm, SimpleNamespace())
    dm.setup("fit")
    assert trainer.log_every_n_steps == 3  # ceil(9 / 4) batches an epoch
    trainer = attach(dm, SimpleNamespace(), limit_train_batches=2)
    dm.setup("fit")
    assert trainer.log_every_n_steps == 2
    trainer = attach(dm, SimpleNamespace(), log_every_n_steps=1)
    dm.setup("fit")
    assert trainer.log_every_n_steps == 1  # never raised


def test_add_paths_puts_the_path_after_the_index():
    rows = [{"index": 2, "label": "dog"}, {"index": 0, "label": "cat"}]
    assert add_paths(rows, ["cat/0.png", "cat/1.png", "dog/0.png"]) == [
        {"index": 2, "path": "dog/0.png", "label": "dog"}, {"index": 0, "path": "cat/0.png", "label": "cat"}]
    assert add_paths(rows, None) is rows


def test_help_text_says_sub_folders_become_classes():
    doc = " ".join(FolderDataModule.__doc__.split())
    assert "each sub-folder is one class" in doc and "names are the class names" in doc
    entries = re.findall(r"(\w+): ([A-Z].*?)(?= \w+: [A-Z]|$)", doc.split("Args:")[1])
    params = [n for n in inspect.signature(FolderDataModule).parameters]
    assert [name for name, _ in entries] == params  # every argument documented, in order
    assert all(text.endswith(".") for _, text in entries), entries  # complete sentences
