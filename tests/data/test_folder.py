import numpy as np
import pytest
import torch
from PIL import Image

from cflight.data import CelebA, CelebADataModule, FolderDataModule, ImageFolderDataset, read_table


def write_png(path, value, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    Image.fromarray(array).save(path)


def test_class_subfolders(tmp_path):
    for k, name in enumerate(["cat", "dog"]):
        for j in range(3):
            write_png(tmp_path / name / f"{j}.png", 40 * k + j)
    ds = ImageFolderDataset(str(tmp_path), image_size=8)
    assert len(ds) == 6 and ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert [ds[i]["label"] for i in range(6)] == [0, 0, 0, 1, 1, 1]
    s = ds[4]
    assert s["index"] == 4 and s["image"].shape == (3, 8, 8) and ds.image_size == (8, 8)
    assert float(s["image"][0, 0, 0]) == pytest.approx(41 / 255)
    grey = ImageFolderDataset(str(tmp_path), channels=1)
    assert grey[0]["image"].shape == (1, 10, 12) and grey.image_size == (10, 12) and grey.in_channels == 1


def test_flat_folder_is_unlabelled(tmp_path):
    for j in range(3):
        write_png(tmp_path / ("sub" if j else "") / f"{j}.jpg", 10)
    ds = ImageFolderDataset(str(tmp_path))
    assert len(ds) == 3 and "label" not in ds[0] and ds.num_classes is None


def test_csv_label_target_descriptors(tmp_path):
    rows = ["filename,Smiling,Male,age,note"]
    for j in range(4):
        write_png(tmp_path / "imgs" / f"{j}.png", 60 * j)
        rows.append(f"imgs/{j}.png,{1 if j % 2 else -1},{-1 if j < 2 else 1},{20 + j},x{j}")
    (tmp_path / "attrs.csv").write_text("\n".join(rows) + "\n")
    ds = ImageFolderDataset(
        str(tmp_path), annotations="attrs.csv", label_column="Smiling", target_column="age"
    )
    assert ds.class_names == ["not Smiling", "Smiling"] and ds.descriptor_names == ["Male"]
    s = ds[3]
    assert s["label"] == 1 and ds[0]["label"] == 0 and s["target"] == 23.0
    assert torch.equal(s["descriptors"], torch.tensor([1.0])) and float(ds[0]["descriptors"][0]) == 0.0
    named = ImageFolderDataset(
        str(tmp_path), annotations="attrs.csv", label_column="note", descriptor_columns=["Male", "age"]
    )
    assert named.class_names == ["x0", "x1", "x2", "x3"] and named[2]["label"] == 2
    assert named.descriptor_names == ["Male", "age"] and named[2]["descriptors"].tolist() == [1.0, 22.0]


def make_celeba(root, n=10):
    names = ["Male", "Smiling", "Young"]
    lines = [str(n), " ".join(names)]
    for j in range(n):
        write_png(root / "img_align_celeba" / f"{j + 1:06d}.jpg", 20 * j, size=(20, 24))
        lines.append(f"{j + 1:06d}.jpg " + " ".join("1" if (j + k) % 2 else "-1" for k in range(3)))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "\n".join(f"{j + 1:06d}.jpg {0 if j < 6 else 1 if j < 8 else 2}" for j in range(n)) + "\n"
    )


def test_celeba_format(tmp_path):
    make_celeba(tmp_path)
    header, rows = read_table(tmp_path / "list_attr_celeba.txt")
    assert header == ["filename", "Male", "Smiling", "Young"] and len(rows) == 10
    train = CelebA(str(tmp_path), split="train", label_column="Smiling", image_size=16, crop_size=18)
    assert len(train) == 6 and train.descriptor_names == ["Male", "Young"]
    s = train[1]
    assert s["label"] == 0 and s["descriptors"].tolist() == [1.0, 1.0] and s["image"].shape == (3, 16, 16)
    assert len(CelebA(str(tmp_path), split="test", image_size=16)) == 2
    dm = CelebADataModule(str(tmp_path), image_size=16, batch_size=4, predict_limit=3, predict_split="val")
    batch = next(iter(dm.predict_dataloader()))
    assert (
        batch["index"].tolist() == [0, 1] and dm.num_classes == 2 and dm.descriptor_names == ["Male", "Young"]
    )


def test_folder_datamodule_random_split(tmp_path):
    for k in range(2):
        for j in range(10):
            write_png(tmp_path / f"c{k}" / f"{j}.png", j)
    dm = FolderDataModule(str(tmp_path), image_size=8, val_size=4, test_size=0.2, batch_size=5, seed=1)
    parts = {s: dm.dataset(s).indices for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(20))
    batch = next(iter(dm.test_dataloader()))
    assert batch["index"].tolist() == parts["test"]  # indices into the whole folder
    assert dm.in_channels == 3 and dm.image_size == (8, 8) and dm.class_names == ["c0", "c1"]
    again = FolderDataModule(str(tmp_path), image_size=8, val_size=4, test_size=0.2, seed=1)
    assert again.dataset("val").indices == parts["val"]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder '.*nowhere' does not exist"):
        ImageFolderDataset(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="image folder .* does not exist"):
        FolderDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no images found"):
        ImageFolderDataset(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="CelebA attribute file .* not found; download CelebA"):
        CelebA(str(tmp_path))
    write_png(tmp_path / "a.png", 1)
    (tmp_path / "t.csv").write_text("filename,y\na.png,1\nb.png,0\n")
    with pytest.raises(FileNotFoundError, match="image 'b.png' listed in .* not found"):
        ImageFolderDataset(str(tmp_path), annotations="t.csv", label_column="y")
    (tmp_path / "t.csv").write_text("filename,y\na.png,1\n")
    with pytest.raises(ValueError, match="label_column 'smile' is not a column"):
        ImageFolderDataset(str(tmp_path), annotations="t.csv", label_column="smile")
    with pytest.raises(FileNotFoundError, match="annotations file .*missing.csv' not found"):
        ImageFolderDataset(str(tmp_path), annotations="missing.csv")
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataset(str(tmp_path), image_size=0)
    (tmp_path / "bad.csv").write_text("filename,y\na.png,1,2\n")
    with pytest.raises(ValueError, match="row 2 has 3 fields"):
        ImageFolderDataset(str(tmp_path), annotations="bad.csv")
