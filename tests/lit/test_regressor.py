"""RegressorModule: MSE training on tiny squares, MSE/MAE, export → load_net("regressor"), the fit CLI."""
import os

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cflight.cli import main
from cflight.data.squares import SquaresDataset
from cflight.lit import RegressorModule, export_checkpoint
from cflight.models.registry import load_net
from cflight.validation import BadInputError

NET_KWARGS = {"widths": [4, 8]}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _squares(n=32, seed=0, split="train", batch_size=16):
    return DataLoader(SquaresDataset(n, seed, split), batch_size=batch_size)


def _trainer(tmp_path, **kw):
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(tmp_path), **kw)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    module = RegressorModule("regressor_cnn", NET_KWARGS, lr=1e-2)
    opt = module.configure_optimizers()
    batch = next(iter(_squares(32, batch_size=32)))
    losses = []
    for _ in range(30):
        loss = module.loss(module(batch["image"]), batch["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]  # the target variance (~0.1) roughly halves in 30 steps


class Fixed(nn.Module):
    """Returns the predictions stored for each dataset index (``[B, 1]``), whatever the image."""

    def __init__(self, preds: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("preds", preds)
        self.dummy = nn.Parameter(torch.zeros(()))
        self.index = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.preds[self.index][:, None] + 0 * self.dummy


class Values(Dataset):
    def __init__(self, targets: torch.Tensor) -> None:
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.zeros(1, 4, 4), "target": self.targets[i], "index": i}


class FixedModule(RegressorModule):
    def forward(self, x):  # tell the fixed network which samples it sees
        self.net.index = self._index
        return self.net(x)

    def _step(self, batch, stage):
        self._index = batch["index"]
        return super()._step(batch, stage)


def test_mse_and_mae_match_a_hand_computation_over_uneven_batches(tmp_path):
    preds = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.0, 1.2, 0.7])
    targets = torch.tensor([0.2, 0.5, 0.5, 0.0, 0.4, 1.0, 0.1])
    module = FixedModule(Fixed(preds))
    loader = DataLoader(Values(targets), batch_size=3)  # batches of 3, 3, 1: a mean of batch means is wrong
    (res,) = _trainer(tmp_path).test(module, loader, verbose=False)
    err = [abs(p - t) for p, t in zip(preds.tolist(), targets.tolist())]
    assert res["test/mae"] == pytest.approx(sum(err) / 7, abs=1e-6)
    assert res["test/mse"] == pytest.approx(sum(e * e for e in err) / 7, abs=1e-6)


def test_fit_logs_metrics_and_exported_file_round_trips(tmp_path):
    torch.manual_seed(0)
    module = RegressorModule("regressor_cnn", NET_KWARGS, lr=3e-3)
    ckpt_cb = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="val/mae", mode="min", filename="best")
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[ckpt_cb], enable_checkpointing=True)
    trainer.fit(module, _squares(32), _squares(16, split="val"))
    assert {"train/mse", "train/mae", "val/mse", "val/mae"} <= set(trainer.callback_metrics)
    (res,) = trainer.test(module, _squares(16, split="test"), verbose=False)
    assert {"test/mse", "test/mae"} <= set(res)

    best = ckpt_cb.best_model_path
    module.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    module.eval()
    x = next(iter(_squares(4, split="test")))["image"]
    out = str(tmp_path / "regressor.pt")
    info = export_checkpoint(best, out, {"test_mae": res["test/mae"]})
    assert info["net"] == "regressor_cnn" and info["kind"] == "regressor" and info["net_kwargs"] == NET_KWARGS
    with torch.no_grad():
        expected = module(x)
        torch.testing.assert_close(load_net(out, expected_kind="regressor")(x), expected)
        torch.testing.assert_close(load_net(best, expected_kind="regressor")(x), expected)
        torch.testing.assert_close(RegressorModule.load_from_checkpoint(best).eval()(x), expected)
    with pytest.raises(BadInputError, match="holds a regressor"):
        load_net(out, expected_kind="classifier")
    (pred,) = trainer.predict(module, _squares(4, split="test", batch_size=4))
    assert pred["prediction"].shape == (4, 1) and pred["index"].tolist() == [0, 1, 2, 3]


def test_freeze_backbone_trains_only_the_head_and_init_weights_warm_starts(tmp_path):
    torch.manual_seed(0)
    first = RegressorModule("regressor_cnn", NET_KWARGS)
    path = str(tmp_path / "first.ckpt")
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(first, _squares(16))
    trainer.save_checkpoint(path)

    frozen = RegressorModule("regressor_cnn", NET_KWARGS, lr=1e-2, freeze_backbone=True, init_weights=path)
    for k, v in first.net.state_dict().items():  # warm start: the same weights
        torch.testing.assert_close(frozen.net.state_dict()[k], v)
    before = {k: v.clone() for k, v in frozen.net.state_dict().items()}
    _trainer(tmp_path, max_steps=3, limit_val_batches=0, enable_checkpointing=False).fit(frozen, _squares(48))
    changed = {k for k, v in frozen.net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head.weight", "head.bias"}  # BatchNorm statistics too: the backbone stays in eval
    full = RegressorModule("regressor_cnn", NET_KWARGS)  # the oracle's full fine-tune trains everything
    assert all(p.requires_grad for p in full.parameters())


def test_bad_arguments_and_batches(tmp_path):
    with pytest.raises(ValueError, match="is a classifier, expected a regressor"):
        RegressorModule("mnist_cnn")
    with pytest.raises(BadInputError, match="'head' submodule"):
        RegressorModule(nn.Sequential(nn.Flatten(), nn.LazyLinear(1)), freeze_backbone=True)
    with pytest.raises(BadInputError, match="lr must be > 0"):
        RegressorModule(lr=0.0)
    module = RegressorModule("regressor_cnn", NET_KWARGS)
    with pytest.raises(BadInputError, match="'target'"):
        module.training_step({"image": torch.rand(2, 3, 64, 64), "index": torch.arange(2)}, 0)
    with pytest.raises(BadInputError, match=r"output \[B, 1\]"):
        module.loss(torch.zeros(2, 3), torch.zeros(2))
    kw = {"model_name": "resnet10t", "pretrained": False}
    assert RegressorModule("regressor_timm", kw).hparams["net_kwargs"] == {"model_name": "resnet10t"}


@pytest.mark.parametrize("config", ["regressor_squares", "oracle_squares", "regressor_squares_64",
                                    "oracle_squares_64"])
def test_fit_cli_on_the_shipped_configs(tmp_path, monkeypatch, config):
    monkeypatch.chdir(tmp_path)  # the configs write under outputs/ relative to the working directory
    main(["fit", "-c", os.path.join(ROOT, "configs", "train", f"{config}.yaml"), "--trainer.logger=false",
          "--trainer.max_steps=2", "--trainer.max_epochs=1", "--trainer.limit_val_batches=1",
          "--trainer.val_check_interval=null", "--trainer.check_val_every_n_epoch=1",
          "--trainer.enable_progress_bar=false", "--data.init_args.n_train=8", "--data.init_args.n_val=4",
          "--data.init_args.batch_size=4"])
    best = tmp_path / "outputs" / "train" / config / "checkpoints" / "best.ckpt"
    info = export_checkpoint(str(best), str(tmp_path / "net.pt"))
    assert info["kind"] == "regressor"
    hp = torch.load(best, weights_only=True)["hyper_parameters"]
    assert hp["freeze_backbone"] is False
    net = load_net(str(tmp_path / "net.pt"), "regressor")
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 1)


def test_flips_are_per_image():
    torch.manual_seed(0)
    module = RegressorModule("regressor_cnn", NET_KWARGS, flips="hv")
    x = torch.rand(64, 3, 8, 8)
    out = module._flip(x)
    variants = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
    kinds = [next(k for k, v in enumerate(variants) if torch.equal(out[i], v[i])) for i in range(64)]
    assert set(kinds) == {0, 1, 2, 3}  # each image draws its own flips, both axes occur
    h_only = RegressorModule("regressor_cnn", NET_KWARGS, flips="h")._flip(x)
    assert all(torch.equal(h_only[i], x[i]) or torch.equal(h_only[i], x[i].flip(2)) for i in range(64))
    with pytest.raises(BadInputError, match="flips must be"):
        RegressorModule(flips="v")
