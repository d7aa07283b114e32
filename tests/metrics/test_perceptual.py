"""LPIPS: the formula against a hand-written reference (a tiny backbone and the full AlexNet path), zero and
symmetry, merging, and the one-line errors for missing or mismatching weight files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cflight.metrics import LPIPS, LPIPSNetwork, lpips_distance, lpips_network
from cflight.metrics.perceptual import BACKBONES, Backbone
from cflight.validation import BadInputError, MissingInputError
from tests.metrics._merge import assert_merge_matches

SHIFT = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).reshape(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).reshape(1, 3, 1, 1)


def _tiny_features() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1),
                         nn.ReLU())


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """A two-layer backbone (read out after each ReLU) and its two weight files, with random values."""
    monkeypatch.setitem(BACKBONES, "tiny", Backbone(_tiny_features, (2, 5), (4, 5), 2, "tiny.pth", "nowhere"))
    torch.manual_seed(0)
    feats = {f"features.{k}": torch.randn_like(v) for k, v in _tiny_features().state_dict().items()}
    torch.save({**feats, "classifier.1.weight": torch.randn(2, 3)}, tmp_path / "tiny.pth")  # the head is ignored
    torch.save({"lin0.model.1.weight": torch.rand(1, 4, 1, 1), "lin1.model.1.weight": torch.rand(1, 5, 1, 1)},
               tmp_path / "lin.pth")
    return tmp_path / "tiny.pth", tmp_path / "lin.pth"


def _reference(feats: list[Tensor], feats_y: list[Tensor], lins: list[Tensor]) -> Tensor:
    """lpips.LPIPS.forward (v0.1, not spatial) on the backbone's feature maps: normalise_tensor, (f0 − f1)²,
    lin (a 1×1 conv), spatial_average, summed over layers."""
    total = 0
    for a, b, w in zip(feats, feats_y, lins):
        a = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
        b = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
        total = total + F.conv2d((a - b) ** 2, w).mean([2, 3], keepdim=True)
    return total.flatten()


def _scaled(x: Tensor) -> Tensor:
    return ((2 * x - 1) - SHIFT) / SCALE


def test_tiny_backbone_matches_the_reference_formula(tiny: tuple[Path, Path]) -> None:
    net = LPIPSNetwork("tiny", *tiny).double()
    s, lin = torch.load(tiny[0]), torch.load(tiny[1])
    lins = [lin["lin0.model.1.weight"].double(), lin["lin1.model.1.weight"].double()]

    def feats(x: Tensor) -> list[Tensor]:
        h1 = F.relu(F.conv2d(_scaled(x), s["features.0.weight"].double(), s["features.0.bias"].double(), padding=1))
        h2 = F.relu(F.conv2d(F.max_pool2d(h1, 2), s["features.3.weight"].double(), s["features.3.bias"].double(),
                             padding=1))
        return [h1, h2]

    x, y = torch.rand(3, 3, 6, 6, dtype=torch.float64), torch.rand(3, 3, 6, 6, dtype=torch.float64)
    got = lpips_distance(net, x, y)
    assert got.shape == (3,) and got.dtype == torch.float64
    torch.testing.assert_close(got, _reference(feats(x), feats(y), lins), rtol=1e-12, atol=1e-14)
    assert (got > 0).all()


def test_alexnet_path_matches_the_reference_slices(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    alex = torchvision.models.alexnet().features  # torchvision's random init: published keys, shapes, float32
    torch.save({f"features.{k}": v for k, v in alex.state_dict().items()}, tmp_path / "alexnet-owt-7be5be79.pth")
    lins = [torch.rand(1, c, 1, 1) for c in (64, 192, 384, 256, 256)]
    torch.save({f"lin{k}.model.1.weight": w for k, w in enumerate(lins)}, tmp_path / "alex.pth")
    alex, lins = alex.double(), [w.double() for w in lins]
    net = LPIPSNetwork("alex", tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth").double()

    def feats(x: Tensor) -> list[Tensor]:  # lpips' relu1..relu5 = outputs of features[1, 4, 7, 9, 11]
        out, h = [], _scaled(x)
        for i, layer in enumerate(alex):
            h = layer(h)
            if i in (1, 4, 7, 9, 11):
                out.append(h.clone())
        return out

    x, y = torch.rand(2, 3, 64, 64, dtype=torch.float64), torch.rand(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(lpips_distance(net, x, y), _reference(feats(x), feats(y), lins),
                                   rtol=1e-10, atol=1e-12)
    assert torch.equal(lpips_distance(net, x, x), torch.zeros(2, dtype=torch.float64))


def test_zero_symmetry_grey_and_gradients(tiny: tuple[Path, Path]) -> None:
    net = LPIPSNetwork("tiny", *tiny)
    x, y = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    assert torch.equal(lpips_distance(net, x, x), torch.zeros(4))  # exactly 0, not merely small
    torch.testing.assert_close(lpips_distance(net, x, y), lpips_distance(net, y, x), rtol=0, atol=0)
    g, h = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(net(g, h), net(g.expand(-1, 3, -1, -1), h.expand(-1, 3, -1, -1)))
    y.requires_grad_(True)
    lpips_distance(net, x, y).sum().backward()  # usable as a loss: differentiable in the images
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in net.parameters())


def test_metric_is_the_mean_over_rows_and_merges(tiny: tuple[Path, Path]) -> None:
    net = LPIPSNetwork("tiny", *tiny)
    ups = [(torch.rand(n, 3, 8, 8), torch.rand(n, 3, 8, 8)) for n in (3, 2, 4)]
    m = LPIPS(net)
    assert torch.isnan(m.compute())
    for x, y in ups:
        m.update(x, y)
    rows = torch.cat([lpips_distance(net, x, y) for x, y in ups])
    assert m.compute().item() == pytest.approx(rows.double().mean().item(), rel=1e-6)
    assert m.n.item() == 9
    assert_merge_matches(lambda: LPIPS(net), ups, split=1)


def test_metric_rejects_images_outside_0_1(tiny: tuple[Path, Path]) -> None:
    m = LPIPS(LPIPSNetwork("tiny", *tiny))
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        m.update(torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8))


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_files_name_where_to_get_them(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    with pytest.raises(MissingInputError) as err:
        LPIPSNetwork("alex", tmp_path / "alexnet-owt-7be5be79.pth", tiny[1])
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in _one_line(err)
    with pytest.raises(MissingInputError) as err:
        LPIPSNetwork("tiny", tiny[0], tmp_path / "nope.pth")
    text = _one_line(err)
    assert "nope.pth" in text and "richzhang/PerceptualSimilarity lpips/weights/v0.1/tiny.pth" in text


def test_mismatching_files_say_what_was_expected(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    torch.save({"features.0.weight": torch.randn(64, 3, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(BadInputError) as err:
        LPIPSNetwork("alex", tmp_path / "bad.pth", tiny[1])
    text = _one_line(err)
    assert "not a torchvision alex state dict" in text and "9 missing tensors" in text
    assert "'features.0.weight': file (64, 3, 3, 3), torchvision (64, 3, 11, 11)" in text
    torch.save({"lin0.model.1.weight": torch.rand(1, 4, 1, 1), "lin1.model.1.weight": torch.rand(1, 6, 1, 1)},
               tmp_path / "badlin.pth")
    with pytest.raises(BadInputError) as err:
        LPIPSNetwork("tiny", tiny[0], tmp_path / "badlin.pth")
    text = _one_line(err)
    assert "lin0..lin1.model.1.weight" in text and "C = [4, 5]" in text and "(1, 6, 1, 1)" in text
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(BadInputError, match="holds no state dict"):
        LPIPSNetwork("tiny", tmp_path / "list.pth", tiny[1])
    with pytest.raises(BadInputError, match="unknown LPIPS backbone 'squeeze'"):
        LPIPSNetwork("squeeze", *tiny)


def test_bad_shapes_are_one_line_errors(tiny: tuple[Path, Path]) -> None:
    net = LPIPSNetwork("tiny", *tiny)
    with pytest.raises(BadInputError, match="two \\[B, 1 or 3, H, W\\] batches"):
        net(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9))
    net.min_size = 10
    with pytest.raises(BadInputError, match="too small for the LPIPS tiny backbone"):
        net(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))


def test_lpips_network_is_none_with_a_message_without_weights(tiny: tuple[Path, Path]) -> None:
    with pytest.warns(UserWarning, match="LPIPS skipped: no backbone_weights / lpips_weights given"):
        assert lpips_network("alex") is None
    with pytest.raises(BadInputError, match="give lpips_weights too"):
        lpips_network("alex", backbone_weights=tiny[0])
    with pytest.raises(BadInputError, match="give backbone_weights too .*alexnet-owt-7be5be79.pth"):
        lpips_network("alex", lpips_weights=tiny[1])
    assert isinstance(lpips_network("tiny", *tiny), LPIPSNetwork)
