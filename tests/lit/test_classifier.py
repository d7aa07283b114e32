"""ClassifierModule: learning on a tiny synthetic task, logged metrics, checkpoint → load_net / export."""
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from cflight.lit import ClassifierModule, export_checkpoint
from cflight.models.registry import load_net

NET_KWARGS = {"width": 4, "hidden": 16, "num_classes": 3}


class Blobs(Dataset):
    """28×28 noise images with a bright 8×8 square whose position gives the label (3 classes)."""

    def __init__(self, n: int = 48, seed: int = 0, num_classes: int = 3) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % num_classes
        self.x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
        for i, y in enumerate(self.labels.tolist()):
            self.x[i, :, 2 + 8 * y: 10 + 8 * y, 10:18] = 1.0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": int(self.labels[i]), "index": i}


def _loader(n=48, seed=0, **kw):
    return DataLoader(Blobs(n, seed, **kw), batch_size=16)


def _trainer(tmp_path, **kw):
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(tmp_path), **kw)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    module = ClassifierModule("mnist_cnn", NET_KWARGS, lr=3e-3)
    opt = module.configure_optimizers()
    batch = next(iter(_loader()))
    losses = []
    for _ in range(15):
        loss = module.loss(module(batch["image"]), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_fit_logs_metrics_and_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    module = ClassifierModule("mnist_cnn", NET_KWARGS, lr=3e-3)
    ckpt_cb = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="val/acc", mode="max", filename="best")
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[ckpt_cb], enable_checkpointing=True)
    trainer.fit(module, _loader(), _loader(24, seed=1))
    assert {"val/acc", "val/loss", "train/acc", "train/loss"} <= set(trainer.callback_metrics)
    assert trainer.callback_metrics["val/acc"] > 0.5
    (res,) = trainer.test(module, _loader(24, seed=2), verbose=False)
    assert {"test/acc", "test/loss"} <= set(res)

    x = Blobs(4, seed=3).x
    module.eval()
    best = ckpt_cb.best_model_path
    hp = torch.load(best, weights_only=True)["hyper_parameters"]
    assert hp["net"] == "mnist_cnn" and hp["net_kwargs"] == NET_KWARGS
    module.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    with torch.no_grad():
        expected = module(x)
        torch.testing.assert_close(load_net(best, expected_kind="classifier")(x), expected)
        out = str(tmp_path / "exported.pt")
        info = export_checkpoint(best, out, {"test_acc": res["test/acc"]})
        assert info["net"] == "mnist_cnn" and info["kind"] == "classifier"
        payload = torch.load(out, weights_only=True)
        assert set(payload) == {"cflight_net", "net_kwargs", "state_dict", "metadata"}
        assert payload["metadata"]["test_acc"] == res["test/acc"]
        torch.testing.assert_close(load_net(out, expected_kind="classifier")(x), expected)
        reloaded = ClassifierModule.load_from_checkpoint(best).eval()
        torch.testing.assert_close(reloaded(x), expected)
    with pytest.raises(ValueError, match="holds a classifier"):
        load_net(best, expected_kind="generator")


def test_binary_classifier_and_predict(tmp_path):
    module = ClassifierModule("simple_cnn", {"in_channels": 1, "image_size": 28, "num_classes": 1,
                                             "widths": [4, 8]})
    trainer = _trainer(tmp_path, fast_dev_run=2)
    loader = _loader(num_classes=2)
    trainer.fit(module, loader, loader)
    assert "val/acc" in trainer.callback_metrics
    (pred,) = trainer.predict(module, DataLoader(Blobs(4, num_classes=2), batch_size=4))
    assert pred["probs"].shape == (4, 1) and ((pred["probs"] >= 0) & (pred["probs"] <= 1)).all()


def test_module_given_as_network_and_bad_arguments(tmp_path):
    from cflight.models.classifiers import MNISTCNN

    module = ClassifierModule(MNISTCNN(width=4, hidden=8))
    assert "net" not in module.hparams
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=True)
    trainer.fit(module, _loader(16))
    path = str(tmp_path / "m.ckpt")
    trainer.save_checkpoint(path)
    with pytest.raises(ValueError, match="no registered cflight network"):
        export_checkpoint(path, str(tmp_path / "m.pt"))
    with pytest.raises(FileNotFoundError):
        export_checkpoint(str(tmp_path / "nope.ckpt"), str(tmp_path / "m.pt"))
    with pytest.raises(ValueError, match="is a generator, expected a classifier"):
        ClassifierModule("conv_vae")
    with pytest.raises(ValueError, match="unknown network"):
        ClassifierModule("no_such_net")
    with pytest.raises(ValueError, match="net_kwargs"):
        ClassifierModule(MNISTCNN(), net_kwargs={"width": 4})


def test_pretrained_is_not_stored():
    module = ClassifierModule("timm:resnet10t", {"num_classes": 2, "in_channels": 1, "image_size": 32,
                                                 "pretrained": False})
    assert module.hparams["net_kwargs"] == {"num_classes": 2, "in_channels": 1, "image_size": 32}
