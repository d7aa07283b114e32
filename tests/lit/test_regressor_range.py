"""A regressor records the range of its training targets; an explanation job toward a configured value outside
it is refused with one line before any image is explained (spec §2, issue: "a target outside the regressor's
trained range (warn or refuse: say which)": refuse), and an image whose target the policy derives outside it
is not explained (skipped, counted as ``target_out_of_range``) while the job goes on."""
from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from torch import Tensor

from cflight.lit import ExplainModule, RegressorModule
from cflight.lit.export import export_checkpoint
from cflight.methods import PGD
from cflight.models.registry import load_net
from cflight.targets import SeveralValues, TargetPolicy
from cflight.types import RegressionTarget
from cflight.validation import BadInputError, check_target_range, outside_target_range


class _Data(torch.utils.data.Dataset):
    """Images whose target is their mean intensity, in [0.2, 0.6]."""

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 1, 16, 16, generator=g) * 0.4 + 0.2

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "target": self.x[i].mean(), "index": i}


def _fit(tmp_path) -> str:
    module = RegressorModule("regressor_cnn", {"in_channels": 1, "image_size": 16, "widths": [4, 8]}, lr=1e-3)
    loader = torch.utils.data.DataLoader(_Data(), batch_size=8)
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, loader)
    assert module.target_range == pytest.approx((float(_Data().x.mean((1, 2, 3)).min()),
                                                 float(_Data().x.mean((1, 2, 3)).max())))
    ckpt = str(tmp_path / "reg.ckpt")
    trainer.save_checkpoint(ckpt)
    return ckpt


def test_range_travels_from_fit_to_the_exported_file(tmp_path) -> None:
    ckpt = _fit(tmp_path)
    lo, hi = load_net(ckpt, "regressor").target_range  # a fit checkpoint, read directly
    assert 0.2 <= lo < hi <= 0.6
    export_checkpoint(ckpt, str(tmp_path / "reg.pt"))
    assert load_net(str(tmp_path / "reg.pt"), "regressor").target_range == (lo, hi)


def test_explaining_toward_a_value_outside_the_trained_range_is_refused_before_any_work(tmp_path) -> None:
    reg = load_net(_fit(tmp_path), "regressor")
    lo, hi = reg.target_range
    with pytest.raises(BadInputError, match=r"outside the range the model was trained on .*choose target values"):
        check_target_range(torch.tensor([hi + 0.5]), reg, tolerance=0.05)
    check_target_range(torch.tensor([lo, hi + 0.04]), reg, tolerance=0.05)  # inside, up to δ
    module = ExplainModule(PGD(eps=0.5, steps=2), reg, target_policy=SeveralValues([lo, hi + 1.0]))
    trainer = Trainer(accelerator="cpu", inference_mode=False, logger=False, enable_progress_bar=False)
    loader = torch.utils.data.DataLoader(_Data(4), batch_size=4)
    calls = []
    module.predict_step = lambda *a, **k: calls.append(1)  # noqa: E731  (must not be reached)
    with pytest.raises(BadInputError, match="outside the range"):
        trainer.predict(module, loader, return_predictions=False)
    assert not calls
    # a regressor without a recorded range (a published file, an older export) is not checked
    del reg.target_range
    check_target_range(torch.tensor([10.0]), reg)


def test_outside_target_range_per_value_and_tolerance() -> None:
    reg = torch.nn.Linear(1, 1)
    reg.target_range = (0.0, 1.0)
    values = torch.tensor([-0.2, 0.5, 1.03, 1.03, float("nan"), 1.2])
    tol = torch.tensor([0.1, 0.0, 0.05, 0.0, 0.0, 0.5])  # per value: 1.03 is inside with δ 0.05, not with 0
    assert outside_target_range(values, reg, tol).tolist() == [True, False, False, True, False, False]
    assert outside_target_range(values, reg, 0.1).tolist() == [True, False, False, False, False, True]
    del reg.target_range  # no recorded range: nothing is flagged
    assert not outside_target_range(values, reg).any()


class _AwayFromPrediction(TargetPolicy):
    """A user's own policy: each image's target is its prediction + ``shift`` (beyond the range for some)."""

    task = "regression"

    def __init__(self, shift: Tensor) -> None:
        self.shift = shift

    def __call__(self, logits: Tensor, batch: dict) -> tuple[RegressionTarget, Tensor]:
        index = torch.as_tensor(batch["index"]).long()
        value = logits[:, 0].detach() + self.shift[index]
        return RegressionTarget(value, 0.02), torch.ones_like(value, dtype=torch.bool)


def test_an_image_whose_derived_target_is_out_of_range_is_skipped_the_job_goes_on(tmp_path, capsys):
    reg = load_net(_fit(tmp_path), "regressor")
    lo, hi = reg.target_range
    shift = torch.tensor([0.01, 5.0, -0.01, -5.0])  # images 1 and 3: far outside [lo, hi]
    module = ExplainModule(PGD(eps=0.5, steps=2), reg, target_policy=_AwayFromPrediction(shift))
    trainer = Trainer(accelerator="cpu", inference_mode=False, logger=False, enable_progress_bar=False)
    out = trainer.predict(module, torch.utils.data.DataLoader(_Data(4), batch_size=4))
    assert module.skipped == {"target_out_of_range": 2}
    line = "not explained: 2 (their regression target is outside the model's training range)"
    assert line in capsys.readouterr().out
    assert out[0]["index"].tolist() == [0, 2]  # the others were explained as ever
    values = out[0]["target_value"]
    assert bool(((values >= lo - 0.02) & (values <= hi + 0.02)).all())
