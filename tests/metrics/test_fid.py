"""Fréchet distance: closed-form cases, the streaming metric against a direct computation, bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cflight.metrics import FrechetDistance, PenultimateFeatures, frechet_distance


def _moments(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return f.mean(0), torch.cov(f.T)


def test_identical_gaussians_have_zero_distance() -> None:
    a = torch.randn(200, 5, dtype=torch.float64)
    mu, cov = _moments(a)
    assert frechet_distance(mu, cov, mu, cov).abs() < 1e-8


def test_closed_form_for_diagonal_covariances() -> None:
    # diagonal Σ: d = ‖μ1−μ2‖² + Σ_i (σ1_i − σ2_i)²
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 0.25])
    expected = (mu1 - mu2).pow(2).sum() + (s1.sqrt() - s2.sqrt()).pow(2).sum()
    got = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert torch.allclose(got, expected.double(), atol=1e-10)


def test_distance_is_symmetric_and_grows_with_a_shift() -> None:
    a, b = torch.randn(300, 4), torch.randn(300, 4) @ torch.randn(4, 4)
    d_ab = frechet_distance(*_moments(a), *_moments(b))
    assert torch.allclose(d_ab, frechet_distance(*_moments(b), *_moments(a)), rtol=1e-6)
    assert frechet_distance(*_moments(a), *_moments(a + 3)) > frechet_distance(*_moments(a), *_moments(a + 1))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.Tanh())
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_penultimate_features_are_the_input_of_the_last_linear() -> None:
    net = _Net()
    x = torch.rand(5, 1, 4, 4)
    assert torch.allclose(PenultimateFeatures(net)(x), net.body(x))
    with pytest.raises(ValueError, match="no nn.Linear"):
        PenultimateFeatures(nn.Conv2d(1, 1, 3))


def test_streaming_metric_matches_direct_computation_and_order() -> None:
    torch.manual_seed(0)
    net = _Net()
    real, fake = torch.rand(40, 1, 4, 4), torch.rand(30, 1, 4, 4) ** 2
    metric = FrechetDistance(net)
    for chunk in real.split(7):
        metric.update(chunk, real=True)
    for chunk in fake.split(11):
        metric.update(chunk, real=False)
    feats = PenultimateFeatures(net)
    direct = frechet_distance(*_moments(feats(real).double()), *_moments(feats(fake).double()))
    assert torch.allclose(metric.compute().double(), direct, rtol=1e-4, atol=1e-6)
    same = FrechetDistance(net)
    same.update(real, real=True)
    same.update(real, real=False)
    assert same.compute().abs() < 1e-4


def test_metric_needs_two_images_per_side() -> None:
    metric = FrechetDistance(_Net())
    metric.update(torch.rand(3, 1, 4, 4), real=True)
    metric.update(torch.rand(1, 1, 4, 4), real=False)
    with pytest.raises(ValueError, match="at least 2 fake"):
        metric.compute()
