"""sFID and KID: closed-form cases, streaming against direct computation, merging, the Inception switch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cflight.metrics import (FrechetDistance, InceptionFeatures, KernelDistance, SplitFrechetDistance,
                             frechet_distance, inception_features, polynomial_mmd)
from cflight.rng import Stream
from cflight.rng import per_sample_randint
from tests.metrics._merge import assert_merge_matches


class _Flat(nn.Module):
    """Images ``[B, D, 1, 1]`` are their own features ``[B, D]``."""

    num_features = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _img(f: torch.Tensor) -> torch.Tensor:
    return f[:, :, None, None]


def _moments(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return f.mean(0), torch.cov(f.T)


def test_fid_of_a_mean_shift_is_the_squared_shift() -> None:
    f = torch.randn(300, 3, dtype=torch.float64)
    delta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    m = FrechetDistance(_Flat(), penultimate=False)
    m.update(_img(f), real=True)
    m.update(_img(f + delta), real=False)  # same covariance exactly: FID = ‖Δ‖²
    assert m.compute().item() == pytest.approx(delta.pow(2).sum().item(), rel=1e-4)


def test_sfid_of_constant_sets_is_the_squared_shift() -> None:
    idx = torch.arange(40)
    m = SplitFrechetDistance(_Flat(), n_splits=3, penultimate=False)
    m.update(_img(torch.ones(40, 3)), real=True, index=idx)
    m.update(_img(torch.ones(40, 3) + torch.tensor([3.0, 0.0, 4.0])), real=False, index=idx)
    out = m.compute()
    assert out["n_splits"] == 3 and out["per_split"].shape == (3,)
    assert out["sfid"].item() == pytest.approx(25.0, abs=1e-6)
    assert out["sfid_std"].item() == pytest.approx(0.0, abs=1e-6)


def test_sfid_never_pairs_an_image_with_itself() -> None:
    # x' = x: plain FID is 0, sFID is the FID between the two folds of the originals (FID is symmetric)
    f, idx = torch.randn(60, 3), torch.arange(100, 160)
    m = SplitFrechetDistance(_Flat(), seed=7, penultimate=False)
    for chunk in range(0, 60, 25):
        m.update(_img(f[chunk : chunk + 25]), real=True, index=idx[chunk : chunk + 25])
        m.update(_img(f[chunk : chunk + 25]), real=False, index=idx[chunk : chunk + 25])
    fold = per_sample_randint(2, (1,), 7, idx, stream=Stream.SFID_FOLD)[:, 0]
    a, b = f[fold == 0].double(), f[fold == 1].double()
    direct = frechet_distance(*_moments(a), *_moments(b))
    assert m.compute()["sfid"].item() == pytest.approx(direct.item(), rel=1e-6)
    assert direct > 0.01


def test_sfid_merges() -> None:
    f, g, idx = torch.randn(40, 3), torch.randn(40, 3) + 1, torch.arange(40)
    ups = [(_img(f[i : i + 20]), True, idx[i : i + 20]) for i in (0, 20)]
    ups += [(_img(g[i : i + 20]), False, idx[i : i + 20]) for i in (0, 20)]
    assert_merge_matches(lambda: SplitFrechetDistance(_Flat(), n_splits=2, penultimate=False), ups, split=2)


def test_polynomial_mmd_closed_form_with_a_linear_kernel() -> None:
    # k(a, b) = aᵀb, x centred, y = x + Δ: MMD²_u = ‖Δ‖² − 2 Σ‖x_i‖² / (m(m − 1))
    x = torch.randn(20, 3, dtype=torch.float64)
    x = x - x.mean(0)
    delta = torch.tensor([0.5, 1.0, -1.0], dtype=torch.float64)
    expected = delta.pow(2).sum() - 2 * x.pow(2).sum() / (20 * 19)
    got = polynomial_mmd(x, x + delta, degree=1, gamma=1.0, coef=0.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)


def test_kid_near_zero_for_one_set_and_known_for_a_shift() -> None:
    f = torch.randn(200, 3)
    same = KernelDistance(_Flat(), subsets=20, subset_size=100, penultimate=False)
    same.update(_img(f), real=True)
    same.update(_img(f), real=False)
    shifted = KernelDistance(_Flat(), subsets=20, subset_size=100, penultimate=False)
    shifted.update(_img(f), real=True)
    shifted.update(_img(f + 1.0), real=False)
    assert abs(same.compute()["kid"].item()) < 0.02 * shifted.compute()["kid"].item()
    # linear kernel on the full (centred) sets: every subset is a permutation, so KID is the closed form
    x = (f - f.mean(0)).double()
    lin = KernelDistance(_Flat(), subsets=3, subset_size=500, degree=1, gamma=1.0, coef=0.0, penultimate=False)
    lin.update(_img(x.float()), real=True)
    lin.update(_img(x.float() + 2.0), real=False)
    out = lin.compute()
    assert out["subset_size"] == 200 and out["kid_std"].item() == pytest.approx(0.0, abs=1e-5)
    expected = 12.0 - 2 * x.float().double().pow(2).sum() / (200 * 199)
    assert out["kid"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_kid_cap_keeps_the_same_images_whatever_the_split() -> None:
    f, idx = torch.randn(60, 3), torch.arange(60)
    ups = [(_img(f[i : i + 10]), i < 30, idx[i : i + 10]) for i in range(0, 60, 10)]
    make = lambda: KernelDistance(_Flat(), subsets=5, subset_size=8, max_features=12, penultimate=False)  # noqa: E731
    assert_merge_matches(make, ups, split=4)  # halves hold 3 real + 1 fake and 2 fake updates
    full = make()
    for args in ups:
        full.update(*args)
    assert full.compute()["n_real"] == 12
    with pytest.raises(ValueError, match="at least 2"):
        make().compute()


def test_inception_is_skipped_without_weights_and_loads_a_given_file(tmp_path) -> None:
    with pytest.warns(UserWarning, match="Inception FID/KID skipped"):
        assert inception_features(None) is None
    from torchvision.models import inception_v3

    path = tmp_path / "inception.pt"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    net = inception_features(path)
    assert isinstance(net, InceptionFeatures) and net(torch.rand(1, 1, 8, 8)).shape == (1, 2048)
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: not a torchvision inception_v3"):
        inception_features(tmp_path / "bad.pt")
