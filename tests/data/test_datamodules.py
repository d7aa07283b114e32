import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from torch.utils.data import Subset

from cflight.data import MNISTDataModule, ShapesDataModule, SquaresDataModule, SquaresDataset
from cflight.data import mnist as mnist_module


def test_shapes_datamodule_batches_and_properties():
    dm = ShapesDataModule(n_train=40, n_val=10, n_test=12, batch_size=8, marker_class=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "index", "label", "descriptors"}
    assert batch["image"].shape == (8, 3, 32, 32) and batch["descriptors"].shape == (
        8,
        len(dm.descriptor_names),
    )
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (3, 3, (32, 32))
    assert dm.descriptor_names[-1] == "marker" and dm.class_names == ["circle", "square", "triangle"]
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [40, 10, 12]
    val = torch.cat([b["image"] for b in dm.val_dataloader()])
    again = ShapesDataModule(n_train=40, n_val=10, n_test=12, batch_size=3, marker_class=0)
    assert torch.equal(val, torch.cat([b["image"] for b in again.val_dataloader()]))


def test_predict_limit_keeps_dataset_indices():
    dm = ShapesDataModule(n_train=20, n_val=5, n_test=30, batch_size=4, predict_limit=10)
    batches = list(dm.predict_dataloader())
    index = torch.cat([b["index"] for b in batches])
    assert index.tolist() == list(range(10))
    test = dm.dataset("test")
    assert torch.equal(batches[1]["image"][0], test[4]["image"])


def test_test_marker_override():
    dm = ShapesDataModule(n_train=200, n_test=200, marker_class=0, marker_prob=1.0, test_marker_prob=0.0)
    assert any(dm.dataset("train").factors(i).marker for i in range(200))
    assert not any(dm.dataset("test").factors(i).marker for i in range(200))


@pytest.mark.skipif(mnist_module.offline_source("mnist") is None, reason="offline MNIST absent")
def test_mnist_val_split_and_predict_on_val(tmp_path):
    dm = MNISTDataModule(
        str(tmp_path), val_size=1000, seed=3, predict_split="val", predict_limit=20, batch_size=8
    )
    val, train = dm.dataset("val"), dm.dataset("train")
    assert isinstance(val, Subset) and len(val) == 1000 and len(train) == 59_000
    assert set(val.indices).isdisjoint(train.indices)
    index = torch.cat([b["index"] for b in dm.predict_dataloader()])
    assert index.tolist() == val.indices[:20]  # indices of the underlying training set
    full = val.dataset
    batch = next(iter(dm.predict_dataloader()))
    assert torch.equal(batch["image"][2], full[int(batch["index"][2])]["image"])
    same = MNISTDataModule(str(tmp_path), val_size=1000, seed=3)
    other = MNISTDataModule(str(tmp_path), val_size=1000, seed=4)
    assert same.dataset("val").indices == val.indices and other.dataset("val").indices != val.indices
    assert dm.num_classes == 10 and dm.image_size == (28, 28) and dm.in_channels == 1


def test_squares_regression_set():
    ds = SquaresDataset(16)
    s = ds[0]
    assert s["image"].shape == (3, 64, 64) and s["target"] >= 128 / 255 and s["label"] == 1
    assert ds[1]["target"] < 128 / 255
    colour_a, _, px, py = ds.factors(5)
    assert (
        26 <= px < 52 and 0 <= py < 26 and colour_a < 128
    )  # 5: odd -> lower colour; (5 // 4) % 2 == 1 -> upper x
    red = SquaresDataset(16, noise_std=0.0)[5]["image"]
    assert (
        float(red[0, py + 2, px + 2]) == pytest.approx(colour_a / 255)
        and float(red[1, py + 2, px + 2]) == 0.0
    )
    lower, upper = SquaresDataset(design="grid_lower", noise_std=0.0), SquaresDataset(design="grid_upper")
    assert len(lower) == len(upper) == 315
    assert [lower.factors(7)[k] + (128 if k == 0 else 0) for k in range(4)] == list(upper.factors(7))
    x = lower[0]["image"]
    assert torch.allclose(x[:, 2:10, 2:10], torch.tensor([0.0, 0.0, 0.0]).view(3, 1, 1))
    dm = SquaresDataModule(n_train=8, n_val=4, n_test=4, test_design="grid_upper", batch_size=4)
    batch = next(iter(dm.test_dataloader()))
    assert batch["target"].dtype == torch.float64 and len(dm.dataset("test")) == 315 and dm.num_classes == 2


def test_squares_predict_spread_serves_evenly_spaced_grid_items():
    first = SquaresDataModule(n_train=8, n_val=4, test_design="grid_lower", batch_size=64, predict_limit=5)
    spread = SquaresDataModule(n_train=8, n_val=4, test_design="grid_lower", batch_size=64, predict_limit=5,
                               predict_spread=True)
    assert next(iter(first.predict_dataloader()))["index"].tolist() == [0, 1, 2, 3, 4]
    assert next(iter(spread.predict_dataloader()))["index"].tolist() == [0, 63, 126, 189, 252]
    grid = SquaresDataset(design="grid_lower")
    positions = {grid.factors(i)[2:] for i in (0, 63, 126, 189, 252)}  # not all one frame position
    assert len(positions) > 1


class _Tiny(LightningModule):
    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(classes))

    def training_step(self, batch, _):
        return torch.nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])

    def validation_step(self, batch, _):
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(batch["image"]), batch["label"]))

    def predict_step(self, batch, _):
        return batch["index"]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_and_predict(tmp_path):
    dm = ShapesDataModule(n_train=32, n_val=8, n_test=16, batch_size=8, predict_limit=10)
    model = _Tiny(dm.in_channels, dm.num_classes)
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    out = trainer.predict(model, datamodule=dm)
    assert torch.cat(out).tolist() == list(range(10))


def test_from_yaml_config():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    cfg = parser.parse_string("""
data:
  class_path: cflight.data.ShapesDataModule
  init_args:
    n_train: 16
    image_size: 24
    shapes: [circle, ring]
    size_range: [0.1, 0.2]
    marker_class: 1
    predict_limit: 4
""")
    dm = parser.instantiate_classes(cfg).data
    assert (
        isinstance(dm, ShapesDataModule)
        and dm.image_size == (24, 24)
        and dm.class_names == ["circle", "ring"]
    )
    assert len(next(iter(dm.predict_dataloader()))["index"]) == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"predict_split": "dev"}, "predict_split"),
        ({"predict_limit": 0}, "predict_limit"),
        ({"n_train": 0}, "n_train"),
        ({"n_test": -5}, "n_test"),
        ({"image_size": -32}, "image_size"),
        ({"marker_prob": 2.0}, "marker_prob"),
    ],
)
def test_invalid_datamodule_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesDataModule(**kwargs)


def test_invalid_val_size():
    from cflight.data import DigitsDataModule

    with pytest.raises(ValueError, match="val_size"):
        DigitsDataModule(val_size=-1)
    with pytest.raises(ValueError, match="val_size"):
        DigitsDataModule(val_size=5000).dataset("train")
