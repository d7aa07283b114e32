"""Fréchet distance between image sets in the feature space of a user-supplied network (FID-style).

FID (Heusel et al. 2017) uses Inception-v3 pool features; offline, cflight takes any project-trained
network instead (by default the input of its last ``nn.Linear``, i.e. the penultimate activations), so the
numbers compare runs that share an extractor, not papers that used Inception.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    """``‖μ1 − μ2‖² + tr(Σ1) + tr(Σ2) − 2 tr((Σ1^½ Σ2 Σ1^½)^½)`` for means ``[D]`` and covariances ``[D, D]``.

    The matrix square root uses symmetric eigendecompositions in float64 (``Σ1^½ Σ2 Σ1^½`` is symmetric
    PSD, so ``tr(√·)`` is the sum of square roots of its eigenvalues; tiny negative ones from round-off are
    clamped to 0).
    """
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    evals, evecs = torch.linalg.eigh((cov1 + cov1.T) / 2)
    sqrt1 = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    inner = sqrt1 @ cov2 @ sqrt1
    tr_cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    return (mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * tr_cross


class PenultimateFeatures(nn.Module):
    """The input of a network's last ``nn.Linear`` ``[B, D]`` (for a classifier: its penultimate features)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(net).__name__} has no nn.Linear layer to take penultimate features from")
        self.net = net.eval().requires_grad_(False)
        self._last = linears[-1]
        self.num_features = self._last.in_features

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        out: list[Tensor] = []
        hook = self._last.register_forward_hook(lambda _m, inp, _o: out.append(inp[0]))
        try:
            self.net(x)
        finally:
            hook.remove()
        return out[0].flatten(1)


class FrechetDistance(Metric):
    """Streaming Fréchet distance between ``real`` and generated images in ``feature_net``'s feature space.

    ``update(images, real)`` accumulates feature sums and outer-product sums (float64), summed across
    processes under DDP, so ``compute()`` equals the single-process value. Needs ≥ 2 images per side.

    :param feature_net: a module mapping images ``[B, C, H, W]`` to features ``[B, D]``; a classifier is
        wrapped in :class:`PenultimateFeatures` when ``penultimate`` is true.
    """

    full_state_update = False

    def __init__(self, feature_net: nn.Module, penultimate: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.extractor = PenultimateFeatures(feature_net) if penultimate else feature_net.eval().requires_grad_(False)
        d = getattr(self.extractor, "num_features", None)
        if d is None:
            raise ValueError("feature_net needs a `num_features` attribute when penultimate=False")
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: Tensor, real: bool) -> None:
        with torch.no_grad():
            f = self.extractor(images).double()
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + f.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + f.T @ f)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + f.shape[0])

    def _moments(self, side: str) -> tuple[Tensor, Tensor]:
        n = getattr(self, f"{side}_n")
        if n < 2:
            raise ValueError(f"FrechetDistance needs at least 2 {side} images, got {int(n)}")
        mu = getattr(self, f"{side}_sum") / n
        cov = (getattr(self, f"{side}_outer") - n * torch.outer(mu, mu)) / (n - 1)
        return mu, cov

    def compute(self) -> Tensor:
        return frechet_distance(*self._moments("real"), *self._moments("fake")).float()
