"""ExplainModule(channels_last=True): the explained model and the oracle run with channels_last weights, the
rows equal the default layout's up to summation order, the fingerprint is the same, and a network that calls
``.view`` on its activations fails with one line naming the fix."""
import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader

from cflight.lit import ExplainModule
from cflight.lit.fingerprint import describe_job
from cflight.methods import PGD
from cflight.validation import BadInputError
from tests.helpers import TinyDicts

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyConv(nn.Module):
    """Conv(1→4) → ReLU → Conv(4→4) → ReLU → flatten → Linear(64 → 3) on 1×4×4 images (the second
    convolution's weights are where the two layouts differ); ``view=True`` flattens with ``.view`` (as much
    older code does), which a channels_last activation does not allow."""

    def __init__(self, seed: int = 0, view: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.in_channels, self.image_size, self.num_classes = 1, (4, 4), 3
        self.conv1, self.conv = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc, self.view = nn.Linear(64, 3), view

    def forward(self, x):
        h = torch.relu(self.conv(torch.relu(self.conv1(x))))
        return self.fc(h.view(h.shape[0], -1) if self.view else h.flatten(1))


def _rows(module: ExplainModule) -> list[dict]:
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False,
                      enable_progress_bar=False, enable_model_summary=False)
    return trainer.predict(module, DataLoader(TinyDicts(8), batch_size=4))


def _module(channels_last: bool, view: bool = False) -> ExplainModule:
    method = PGD(eps=1.0, norm="l2", steps=5, objective="ce", random_start=False)
    return ExplainModule(method, TinyConv(0, view), oracle=TinyConv(1, view), channels_last=channels_last)


def test_rows_equal_the_default_layout_and_the_fingerprint_is_the_same():
    default, fast = _module(False), _module(True)
    for net in (fast.model, fast.oracle):
        assert net.conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not net.conv.weight.is_contiguous()  # 4 input channels: the two layouts differ
    assert default.model.conv.weight.is_contiguous()
    torch.testing.assert_close(fast.model.conv.weight, default.model.conv.weight, rtol=0, atol=0)
    assert describe_job(fast) == describe_job(default)
    ref, got = _rows(default), _rows(fast)
    assert len(ref) == len(got) == 2
    for a, b in zip(ref, got):
        for key in ("logits", "x_cf", "logits_cf", "l2", "oracle_valid", "valid"):
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
        assert bool((a["l2"] > 0).all())  # the attack moved every image


def test_a_network_using_view_fails_with_one_line_naming_the_fix():
    assert len(_rows(_module(False, view=True))) == 2  # the default layout runs it
    with pytest.raises(BadInputError) as err:
        _rows(_module(True, view=True))
    msg = str(err.value)
    assert "\n" not in msg and "the explained model" in msg and "channels_last: false" in msg
    assert ".reshape" in msg


def test_an_oracle_using_view_is_named():
    method = PGD(eps=1.0, norm="l2", steps=2, objective="ce", random_start=False)
    module = ExplainModule(method, TinyConv(0), oracle=TinyConv(1, view=True), channels_last=True)
    with pytest.raises(BadInputError, match="^the oracle calls .view on a channels_last activation"):
        _rows(module)
