"""AdversarialTrainingModule: PGD training smoke run, robust metrics, checkpoint → load_net, config errors."""
import math

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from cflight.lit import AdversarialTrainingModule
from cflight.methods import functional as Fn
from cflight.models.registry import load_net
from tests.lit.test_classifier import Blobs, _loader

NET_KWARGS = {"width": 4, "hidden": 16, "num_classes": 3}


def _trainer(tmp_path, **kw):
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(tmp_path), **kw)


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("linf", 0.1)])
def test_attack_stays_in_ball_and_raises_the_loss(norm, eps):
    torch.manual_seed(0)
    module = AdversarialTrainingModule("mnist_cnn", NET_KWARGS, attack_norm=norm, attack_eps=eps, attack_steps=5)
    module.train()
    batch = next(iter(_loader()))
    x, y = batch["image"], batch["label"]
    with torch.no_grad():
        x_adv = module.attack(x, y, steps=5, step_size=None, index=batch["index"])
    assert module.net.training  # mode restored
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    p = math.inf if norm == "linf" else 2
    assert (Fn.lp_norm(x_adv - x, p) <= eps * (1 + 1e-5)).all()
    module.eval()
    with torch.no_grad():
        assert module._attack_loss(module(x_adv), y).mean() > module._attack_loss(module(x), y).mean()
    assert all(p.grad is None for p in module.parameters())  # the attack leaves no weight gradients


def test_evaluation_attack_does_not_depend_on_the_batch_size(tmp_path):
    # random starts come from the dataset index: batches of 2 and 3 attack every sample identically
    module = AdversarialTrainingModule("mnist_cnn", NET_KWARGS, attack_eps=1.0, attack_steps=2).eval()
    attack, adversarial = module.attack, []

    def recording_attack(x, label, steps, step_size, index=None):
        out = attack(x, label, steps, step_size, index=index)
        adversarial.append(dict(zip(index.tolist(), out)))
        return out

    module.attack = recording_attack
    results = []
    for batch_size in (2, 3):
        loader = DataLoader(Blobs(6, seed=1), batch_size=batch_size)
        results.append(_trainer(tmp_path).validate(module, loader, verbose=False)[0])
    assert results[0]["val/robust_acc"] == results[1]["val/robust_acc"]
    by_two = {k: v for d in adversarial[:3] for k, v in d.items()}
    by_three = {k: v for d in adversarial[3:] for k, v in d.items()}
    assert sorted(by_two) == sorted(by_three) == list(range(6))
    for i in range(6):
        torch.testing.assert_close(by_two[i], by_three[i], rtol=0, atol=1e-6)
    x, y = Blobs(2, seed=1).x, torch.tensor([0, 1])
    assert not torch.equal(attack(x, y, 0, None, index=torch.tensor([0, 1])),
                           attack(x, y, 0, None, index=torch.tensor([2, 3])))  # the start is random


def test_fit_logs_clean_and_robust_metrics_and_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    module = AdversarialTrainingModule("mnist_cnn", NET_KWARGS, lr=3e-3, attack_eps=0.5, attack_steps=2,
                                       eval_steps=3)
    ckpt_cb = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="val/robust_acc", mode="max", filename="best")
    trainer = _trainer(tmp_path, max_epochs=4, callbacks=[ckpt_cb], enable_checkpointing=True)
    trainer.fit(module, _loader(), _loader(24, seed=1))  # default inference_mode=True for validation
    assert {"val/acc", "val/robust_acc", "val/loss", "train/robust_acc", "train/loss"} <= set(trainer.callback_metrics)
    assert trainer.callback_metrics["val/acc"] > 0.5
    (res,) = trainer.test(module, _loader(24, seed=2), verbose=False)
    assert {"test/acc", "test/robust_acc", "test/loss"} <= set(res)
    assert res["test/robust_acc"] <= res["test/acc"] + 1e-6

    best = ckpt_cb.best_model_path
    hp = torch.load(best, weights_only=True)["hyper_parameters"]
    assert hp["net"] == "mnist_cnn" and hp["attack_norm"] == "l2" and hp["attack_eps"] == 0.5
    module.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    module.eval()
    x = Blobs(4, seed=3).x
    with torch.no_grad():
        torch.testing.assert_close(load_net(best, expected_kind="classifier")(x), module(x))


@pytest.mark.parametrize("kwargs,match", [
    ({"attack_norm": "l1"}, "attack_norm"), ({"attack_eps": 0.0}, "attack_eps"), ({"attack_eps": -1.0}, "attack_eps"),
    ({"attack_steps": 0}, "steps"), ({"eval_steps": 0}, "steps"), ({"attack_step_size": 0.0}, "attack_step_size"),
    ({"eval_step_size": -1.0}, "eval_step_size"),
])
def test_invalid_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdversarialTrainingModule("mnist_cnn", NET_KWARGS, **kwargs)


def test_robust_mnist_config_instantiates_and_trains_two_steps(tmp_path):
    from cflight.cli import CflightCLI
    from cflight.data import MNISTDataModule

    try:
        MNISTDataModule(root="data", morphometrics=False)
    except FileNotFoundError:
        pytest.skip("MNIST not available offline")
    cli = CflightCLI(args=["-c", "configs/train/robust_mnist.yaml", "--trainer.logger", "false",
                           "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "2",
                           "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
                           "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
                           "--data.init_args.val_size", "100"], run=False)
    module = cli.model
    assert isinstance(module, AdversarialTrainingModule)
    hp = module.hparams
    assert (hp.attack_norm, hp.attack_eps, hp.attack_steps, hp.eval_steps) == ("l2", 1.5, 10, 20)
    cli.trainer.fit(module, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2
