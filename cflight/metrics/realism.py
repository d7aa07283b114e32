"""Realism of counterfactuals: split FID (sFID, DiME/ACE) and KID, in a feature net's space (as
:class:`~cflight.metrics.FrechetDistance`), plus an Inception-v3 extractor for users who supply its weights.

Offline first (DESIGN.md §3): torchmetrics' own FID/KID download torch-fidelity's Inception weights, so here
features come from a project-trained network (default: its penultimate activations); numbers then compare runs
that share the extractor, not papers. :func:`inception_features` builds a torchvision Inception-v3 from a
weight file the user gives, or says in one line that the Inception variant is skipped.

Randomness (fold assignment, KID subsets and the KID feature cap) is keyed by dataset index through
:mod:`cflight.rng`, so the values do not depend on batch composition or the number of processes.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from cflight.metrics.fid import PenultimateFeatures, frechet_distance
from cflight.rng import Stream, per_sample_randint, per_sample_uniform


def _extractor(feature_net: nn.Module, penultimate: bool) -> tuple[nn.Module, int]:
    net = PenultimateFeatures(feature_net) if penultimate else feature_net.eval().requires_grad_(False)
    d = getattr(net, "num_features", None)
    if d is None:
        raise ValueError("feature_net needs a `num_features` attribute when penultimate=False")
    return net, int(d)


def moments_from_sums(total: Tensor, outer: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` from ``Σf``, ``Σ f fᵀ`` and the count ``n ≥ 2``."""
    if n < 2:
        raise ValueError(f"need at least 2 images per set, got {int(n)}")
    mu = total / n
    return mu, (outer - n * torch.outer(mu, mu)) / (n - 1)


class SplitFrechetDistance(Metric):
    """sFID (DiME, Jeanneret et al. 2022; ACE 2023: `guillaumejs2403/ACE/compute_sFID.sh`, spec §3.2).

    The instances are split into two folds A, B; ``sFID = ½[FID(real_A, cf_B) + FID(real_B, cf_A)]``, so no
    counterfactual is compared with its own original (plain FID on paired sets rewards changing nothing). ACE
    uses one random split into exact halves; here instance ``i`` joins fold ``randint(2)`` keyed by
    ``(seed, index_i, split)``, so folds are halves in expectation (deviation needed for streaming), and the
    value is averaged over ``n_splits`` independent splits (``n_splits=1`` is ACE's protocol).

    ``update(images [B, C, H, W], real: bool, index [B])`` — originals with ``real=True`` (ACE: all of them),
    counterfactuals with ``real=False`` (ACE: the successful ones), both with their dataset indices, which put
    an image and its counterfactual in the same fold. ``compute()`` → ``sfid`` (mean over splits), ``sfid_std``
    (population std over splits), ``per_split`` ``[S]``, ``n_splits``. States: float64 feature sums
    ``[S, 2, 2, D]`` and outer products ``[S, 2, 2, D, D]`` (memory ``32·S·D²`` bytes), summed across processes.
    """

    full_state_update = False

    def __init__(self, feature_net: nn.Module, n_splits: int = 1, seed: int = 0, penultimate: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n_splits < 1:
            raise ValueError(f"n_splits must be >= 1, got {n_splits}")
        self.extractor, d = _extractor(feature_net, penultimate)
        self.n_splits, self.seed = n_splits, seed
        # axes: split, side (0 real, 1 counterfactual), fold
        self.add_state("sums", torch.zeros(n_splits, 2, 2, d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(n_splits, 2, 2, d, d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros(n_splits, 2, 2, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: Tensor, real: bool, index: Tensor) -> None:
        with torch.no_grad():
            f = self.extractor(images).double()
        fold = per_sample_randint(2, (self.n_splits,), self.seed, index, stream=Stream.SFID_FOLD, device=f.device)
        side = 0 if real else 1
        for s in range(self.n_splits):
            for k in range(2):
                g = f[fold[:, s] == k]
                self.sums[s, side, k] += g.sum(0)
                self.outer[s, side, k] += g.T @ g
                self.n[s, side, k] += g.shape[0]

    def compute(self) -> dict[str, Tensor | int]:
        per_split = []
        for s in range(self.n_splits):
            m = [[moments_from_sums(self.sums[s, side, k], self.outer[s, side, k], self.n[s, side, k])
                  for k in range(2)] for side in range(2)]
            per_split.append((frechet_distance(*m[0][0], *m[1][1]) + frechet_distance(*m[0][1], *m[1][0])) / 2)
        values = torch.stack(per_split)
        return {"sfid": values.mean(), "sfid_std": values.std(correction=0), "per_split": values,
                "n_splits": self.n_splits}


def polynomial_mmd(fx: Tensor, fy: Tensor, degree: int = 3, gamma: float | None = None,
                   coef: float = 1.0) -> Tensor:
    """Unbiased MMD² between feature sets ``[m, D]`` and ``[n, D]`` with ``k(a, b) = (γ aᵀb + c)^degree``
    (γ = 1/D by default; Bińkowski et al. 2018, as torchmetrics' ``KernelInceptionDistance``):
    ``Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(n(n−1)) − 2 Σ_{i,j} k(x_i, y_j)/(mn)``."""
    fx, fy = fx.double(), fy.double()
    g = 1.0 / fx.shape[1] if gamma is None else gamma
    m, n = fx.shape[0], fy.shape[0]

    def k(a: Tensor, b: Tensor) -> Tensor:
        return (g * a @ b.T + coef) ** degree

    kxx, kyy = k(fx, fx), k(fy, fy)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2 * k(fx, fy).mean())


class KernelDistance(Metric):
    """KID: mean (and std) of :func:`polynomial_mmd` over ``subsets`` random subsets of ``subset_size`` real and
    ``subset_size`` generated features (torchmetrics' ``KernelInceptionDistance`` protocol and defaults: 100
    subsets of 1000, cubic kernel, γ = 1/D, c = 1), in ``feature_net``'s space.

    KID needs the features themselves: they are stored (``dist_reduce_fx="cat"``), capped at ``max_features``
    per side by a bottom-k sample — each image gets a priority ``u(seed, index)`` and the ``max_features``
    smallest are kept, locally after each update and again after the processes' lists are joined, so the kept
    set is that of one process seeing all images. Without ``index`` a per-process running count stands in (the
    capped set then depends on the process layout). ``subset_size`` is lowered to the smaller set's size.

    ``update(images [B, C, H, W], real: bool, index=None [B])``; ``compute()`` → ``kid``, ``kid_std``,
    ``subsets``, ``subset_size``, ``n_real``, ``n_fake``.
    """

    full_state_update = False

    def __init__(self, feature_net: nn.Module, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                 gamma: float | None = None, coef: float = 1.0, max_features: int = 10_000, seed: int = 0,
                 penultimate: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if subsets < 1 or subset_size < 2 or max_features < 2:
            raise ValueError(f"need subsets >= 1, subset_size >= 2, max_features >= 2; got {subsets}, "
                             f"{subset_size}, {max_features}")
        self.extractor, _ = _extractor(feature_net, penultimate)
        self.subsets, self.subset_size, self.max_features, self.seed = subsets, subset_size, max_features, seed
        self.degree, self.gamma, self.coef = degree, gamma, coef
        self._seen = [0, 0]
        for side in ("real", "fake"):
            self.add_state(f"{side}_features", [], dist_reduce_fx="cat")
            self.add_state(f"{side}_priority", [], dist_reduce_fx="cat")

    def reset(self) -> None:
        super().reset()
        self._seen = [0, 0]

    def _capped(self, side: str) -> tuple[Tensor, Tensor]:
        feats, prio = (dim_zero_cat(getattr(self, f"{side}_{k}")) for k in ("features", "priority"))
        order = prio.argsort()[: self.max_features]  # sorted: the kept set comes out in one fixed order
        return feats[order], prio[order]

    def update(self, images: Tensor, real: bool, index: Tensor | None = None) -> None:
        with torch.no_grad():
            f = self.extractor(images).double()
        side, s = ("real", 0) if real else ("fake", 1)
        if index is None:
            index = torch.arange(self._seen[s], self._seen[s] + f.shape[0], device=f.device)
        self._seen[s] += f.shape[0]
        prio = per_sample_uniform((), self.seed, index, stream=Stream.KID_CAP, step=s, device=f.device,
                                  dtype=torch.float64)
        getattr(self, f"{side}_features").append(f)
        getattr(self, f"{side}_priority").append(prio)
        if sum(p.numel() for p in getattr(self, f"{side}_priority")) > self.max_features:
            feats, prio = self._capped(side)
            setattr(self, f"{side}_features", [feats])
            setattr(self, f"{side}_priority", [prio])

    def _subset(self, n: int, m: int, step: int, device: torch.device) -> Tensor:
        u = per_sample_uniform((), self.seed, torch.arange(n, device=device), stream=Stream.KID_SUBSET, step=step,
                               device=device, dtype=torch.float64)
        return u.argsort()[:m]

    def compute(self) -> dict[str, Tensor | int]:
        sizes = [sum(p.numel() for p in ([ps] if isinstance(ps, Tensor) else ps))
                 for ps in (self.real_priority, self.fake_priority)]
        if min(sizes) < 2:
            raise ValueError(f"KernelDistance needs at least 2 real and 2 generated images, got {sizes[0]} and "
                             f"{sizes[1]}")
        real, fake = self._capped("real")[0], self._capped("fake")[0]
        m = min(self.subset_size, real.shape[0], fake.shape[0])
        values = torch.stack([
            polynomial_mmd(real[self._subset(real.shape[0], m, 2 * i, real.device)],
                           fake[self._subset(fake.shape[0], m, 2 * i + 1, fake.device)],
                           self.degree, self.gamma, self.coef)
            for i in range(self.subsets)])
        return {"kid": values.mean(), "kid_std": values.std(correction=0), "subsets": self.subsets,
                "subset_size": m, "n_real": real.shape[0], "n_fake": fake.shape[0]}


class InceptionFeatures(nn.Module):
    """Pool features ``[B, 2048]`` of a torchvision Inception-v3 loaded from a user's weight file
    (``weights_only=True``; a torchvision ``inception_v3`` state dict). Images ``[B, C, H, W]`` in [0, 1] are
    resized to 299² (bilinear), grey ones repeated to RGB, and ImageNet-normalised. Not the TF-ported
    pytorch-fid network, so values differ from papers' FID unless those weights are converted and given."""

    num_features = 2048

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError, KeyError) as err:
            raise ValueError(f"{weights}: not a torchvision inception_v3 state dict "
                             f"({type(err).__name__})") from err
        net.fc = nn.Identity()
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, size=(299, 299), mode="bilinear",
                          align_corners=False)
        return self.net((x - self.mean) / self.std)


def inception_features(weights: str | Path | None) -> InceptionFeatures | None:
    """An :class:`InceptionFeatures` from ``weights``, or ``None`` with a one-line warning that the Inception
    FID/KID are skipped (nothing is downloaded)."""
    if weights is None:
        warnings.warn("Inception FID/KID skipped: no Inception-v3 weights given (nothing is downloaded); "
                      "realism is measured in the project feature net's space only", stacklevel=2)
        return None
    return InceptionFeatures(weights)
