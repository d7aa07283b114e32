"""TemperatureWrapper and the ECE grid-search calibration (spec dvce_svce.md §1.2, §7 items 28–29)."""
import math

import pytest
import torch

from cflight.models.classifiers import MNISTCNN, TemperatureWrapper, expected_calibration_error, fit_temperature
from cflight.models.registry import build_net, export_calibrated, export_net, load_net


def _synthetic(t_true: float, n: int = 5000, k: int = 10, seed: int = 0):
    """Logits whose calibrated probabilities are ``softmax(z / t_true)``: labels drawn from them."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 3.0
    labels = torch.multinomial((z / t_true).softmax(1), 1, generator=g).squeeze(1)
    return z, labels


@pytest.mark.parametrize("t_true", [0.5, 2.0])
def test_grid_search_recovers_known_temperature(t_true):
    z, labels = _synthetic(t_true)
    t = fit_temperature(z, labels)
    assert t == pytest.approx(t_true, rel=0.1)
    assert expected_calibration_error(z, labels, temperature=t) <= expected_calibration_error(z, labels)
    assert expected_calibration_error(z, labels, temperature=t) < 0.03


def test_chosen_temperature_is_a_grid_value_and_no_worse_than_one():
    z, labels = _synthetic(1.3, n=2000, seed=1)
    t = fit_temperature(z, labels)
    grid = torch.linspace(-3, 3, 2000, dtype=torch.float64).exp()
    assert t == 1.0 or bool(torch.isclose(grid, torch.tensor(t, dtype=torch.float64), rtol=1e-12).any())
    assert expected_calibration_error(z, labels, temperature=t) <= expected_calibration_error(z, labels) + 1e-12


def test_perfectly_calibrated_ties_keep_one():
    z = torch.tensor([[0.0, 0.0]] * 4)  # confidence 0.5 at any T; accuracy 0.5
    labels = torch.tensor([0, 1, 0, 1])
    assert fit_temperature(z, labels) == 1.0


def test_binary_single_logit():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5000, 1, generator=g) * 3
    labels = torch.bernoulli(torch.sigmoid(z[:, 0] / 0.5), generator=g).long()
    assert fit_temperature(z, labels) == pytest.approx(0.5, rel=0.15)


def test_ece_hand_example():
    # two samples in bin (0.7, 0.75]: conf ≈ 0.731 each, one correct → |0.731 − 0.5|
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    conf = torch.sigmoid(torch.tensor(1.0)).item()
    assert expected_calibration_error(z, torch.tensor([0, 1])) == pytest.approx(abs(conf - 0.5))


def test_fit_rejects_bad_shapes():
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(torch.zeros(3, 2), torch.zeros(4))


def test_wrapper_divides_logits_and_exposes_attributes():
    net = MNISTCNN(width=4, hidden=8, num_classes=5).eval()
    wrapped = TemperatureWrapper(net, 0.7).eval()
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    out = wrapped(x)
    torch.testing.assert_close(out, net(x) / 0.7)
    assert (wrapped.in_channels, wrapped.image_size, wrapped.num_classes) == (1, (28, 28), 5)
    (g,) = torch.autograd.grad(out.log_softmax(1)[:, 2].sum(), x)  # differentiable
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    torch.testing.assert_close(wrapped(x), wrapped(x))  # deterministic in eval mode


def test_wrapper_rebuilds_from_registry_and_exported_file(tmp_path):
    kwargs = {"net": "mnist_cnn", "net_kwargs": {"width": 4, "hidden": 8}, "temperature": 0.7155761}
    wrapped = build_net("temperature", **kwargs).eval()
    path = str(tmp_path / "calibrated.pt")
    export_net("temperature", kwargs, wrapped.state_dict(), path)
    loaded = load_net(path, expected_kind="classifier")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), wrapped(x))
    assert float(loaded.temperature) == pytest.approx(0.7155761)


def test_export_calibrated_writes_a_classifier_of_logits_over_t(tmp_path):
    """A trained net and its fitted T become one file that loads as a classifier giving net(x) / T."""
    net = MNISTCNN(width=4, hidden=8, num_classes=3).eval()
    path = str(tmp_path / "robust.pt")
    kwargs = export_calibrated(net, "mnist_cnn", {"width": 4, "hidden": 8, "num_classes": 3}, 0.6, path,
                               {"temperature": 0.6})
    assert kwargs == {"net": "mnist_cnn", "net_kwargs": {"width": 4, "hidden": 8, "num_classes": 3},
                      "temperature": 0.6}
    loaded = load_net(path, expected_kind="classifier")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), net(x) / 0.6)
    assert torch.load(path, weights_only=True)["metadata"] == {"temperature": 0.6}


@pytest.mark.parametrize("t", [0.0, -1.0, math.inf])
def test_wrapper_rejects_bad_temperature(t):
    with pytest.raises(ValueError, match="temperature"):
        TemperatureWrapper(MNISTCNN(width=2, hidden=4), t)


def test_wrapper_rejects_non_classifier_names():
    with pytest.raises(ValueError, match="cannot wrap"):
        TemperatureWrapper("temperature")
    with pytest.raises(ValueError, match="net_kwargs"):
        TemperatureWrapper(MNISTCNN(width=2, hidden=4), 1.0, net_kwargs={"width": 2})
