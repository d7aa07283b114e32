"""The explanation job's progress bar: images done, successes, running validity; installed by the writer."""
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from cflight.lit import CounterfactualWriter, ExplainModule
from cflight.lit.progress import ExplainCounts, ExplainProgressBar
from cflight.methods import LatentAttack
from cflight.targets import SecondMostLikely
from tests.helpers import LinearClassifier, LinearDecoder, TinyDicts


def test_counts_from_batch_outputs():
    counts = ExplainCounts()
    counts.update({"index": torch.tensor([0, 1, 2]), "valid": torch.tensor([True, False, True])})
    counts.update(None)  # a batch of finished images
    counts.update({"index": torch.tensor([3, 3]), "valid": torch.tensor([True, True])})  # one image, two targets
    assert (counts.images, counts.rows, counts.valid) == (4, 5, 4)
    assert counts.postfix() == {"images": 4, "targets": 5, "valid": 4, "validity": "0.800"}
    assert ExplainCounts().postfix()["validity"] == "-"
    assert ExplainCounts(resumed=7).postfix() == {"resumed": 7, "images": 0, "valid": 0, "validity": "-"}


def test_writer_installs_the_bar_in_place_of_the_default(tmp_path, capsys):
    method = LatentAttack(LinearDecoder(), lr=0.05, max_steps=100)
    module = ExplainModule(method, LinearClassifier(num_classes=3), target_policy=SecondMostLikely())
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_model_summary=False,
                      callbacks=[CounterfactualWriter(str(tmp_path / "job"))], default_root_dir=str(tmp_path))
    trainer.predict(module, DataLoader(TinyDicts(6), batch_size=3), return_predictions=False)
    bar = trainer.progress_bar_callback
    assert isinstance(bar, ExplainProgressBar) and bar.counts.images == 6
    assert sum(isinstance(cb, ExplainProgressBar) for cb in trainer.callbacks) == 1
    said = capsys.readouterr()
    shown = said.out + said.err
    assert "images=6" in shown and "validity=" in shown, shown  # in the bar itself
