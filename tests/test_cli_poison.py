"""``cflight fit`` with the poisoned-MNIST classifier config (a tiny run: a few batches, outputs in tmp)."""
import pytest
import torch

from cflight.cli import main
from cflight.data import mnist as mnist_module

CONFIG = "configs/train/classifier_mnist_poisoned.yaml"
TINY = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.accelerator=cpu",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false"]

needs_mnist = pytest.mark.skipif(mnist_module.offline_source("mnist") is None, reason="offline MNIST absent")


def _config(tmp_path, **replace) -> str:
    text = open(CONFIG).read().replace("outputs/train/classifier_mnist_poisoned", str(tmp_path / "run"))
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


@needs_mnist
def test_fit_poisoned_classifier(tmp_path):
    main(["fit", "-c", _config(tmp_path), *TINY])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["net"] == "mnist_cnn"
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


@needs_mnist
@pytest.mark.parametrize("old, new, message", [
    ("fraction: 0.2", "fraction: 1.5", "poison fraction must be a probability"),
    ("pattern: watermark", "pattern: logo", "poison pattern must be one of"),
    ("class_index: 0", "class_index: 12", "poison class_index must be < 10"),
    ("      seed: 0\n      splits", "      colour: red\n      splits", "unknown poison option"),
])
def test_bad_poison_option_is_one_line_error(tmp_path, capsys, old, new, message):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "-c", _config(tmp_path, **{old: new}), *TINY])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("cflight: error:")


@needs_mnist
def test_config_poisons_training_split_only(tmp_path):
    from cflight.cli import CflightCLI

    cli = CflightCLI(args=["-c", _config(tmp_path), *TINY], run=False)
    dm = cli.datamodule
    assert dm.poison.class_index == 0 and dm.poison.fraction == 0.2 and dm.poison.intensity == 0.5
    train, val = dm.dataset("train"), dm.dataset("val")
    i = int(train.poisoned_positions()[0])
    assert train[i]["poisoned"] and train[i]["label"] == 0
    assert len(val.poisoned_positions()) == 0 and dm.poison_mask.shape == (1, 28, 28)
