"""Temperature scaling of a classifier's logits and its ECE grid-search calibration (spec dvce_svce.md §1.2).

Both SVCE and DVCE differentiate ``log softmax(f(x)/T)[k]``: T changes the gradient direction, not only its
scale, so the temperature is part of the explained model.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cflight.models.registry import build_net, net_kind, register_net


@register_net("temperature", kind="classifier")
class TemperatureWrapper(nn.Module):
    """``logits = net(x) / T``; exposes the wrapped network's ``in_channels``, ``image_size``, ``num_classes``.

    :param net: the classifier, as a module or a registered classifier name (built with ``net_kwargs``).
        With a name the wrapper is rebuilt from its constructor arguments alone, so it can be exported with
        :func:`cflight.models.registry.export_net` under the registry name ``"temperature"`` (``net_kwargs``
        ``{"net": "mnist_cnn", "net_kwargs": {...}, "temperature": T}``) and loaded with ``load_net``.
    :param temperature: ``T > 0`` (e.g. from :func:`fit_temperature`); stored as a buffer, so a state dict
        carries it too.
    :param net_kwargs: constructor arguments of a named ``net``.
    """

    def __init__(self, net: nn.Module | str, temperature: float = 1.0, net_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if isinstance(net, str):
            if net_kind(net) != "classifier":
                raise ValueError(f"network {net!r} is a {net_kind(net)}, expected a classifier")
            if net == "temperature":
                raise ValueError("a TemperatureWrapper cannot wrap another by name")
            net = build_net(net, **dict(net_kwargs or {}))
        elif net_kwargs:
            raise ValueError("net_kwargs are only used with a registered network name, not with a module")
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module or a registered classifier name, got {type(net).__name__}")
        t = float(temperature)
        if not t > 0 or t == float("inf"):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.net = net
        self.register_buffer("temperature", torch.tensor(t))
        for attr in ("in_channels", "image_size", "num_classes"):
            if hasattr(net, attr):
                setattr(self, attr, getattr(net, attr))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) / self.temperature

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.6g}"


def _two_class(logits: Tensor) -> Tensor:
    """One binary logit ``z`` → the equivalent softmax logits ``[0, z]``."""
    return torch.cat([torch.zeros_like(logits), logits], dim=1) if logits.shape[1] == 1 else logits


def _ece_rows(conf: Tensor, correct: Tensor, n_bins: int) -> Tensor:
    """ECE of every row of ``conf`` ``[G, N]`` against ``correct`` ``[N]``; bins ``((i−1)/n, i/n]``."""
    g, n = conf.shape
    bins = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1
    count = torch.zeros(g, n_bins, dtype=conf.dtype, device=conf.device)
    count.scatter_add_(1, bins, torch.ones_like(conf))
    conf_sum = torch.zeros_like(count).scatter_add_(1, bins, conf)
    acc_sum = torch.zeros_like(count).scatter_add_(1, bins, correct.to(conf.dtype).expand(g, n))
    return (conf_sum - acc_sum).abs().sum(1) / n  # Σ_b |B_b|/N · |conf_b − acc_b|


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = 20, temperature: float = 1.0) -> float:
    """ECE of ``softmax(logits / T)`` (max-probability confidence, ``n_bins`` equal-width bins ``(a, b]``).

    ``logits``: ``[N, K]`` (``K = 1``: one binary logit, label 1 = positive); ``labels``: ``[N]``.
    """
    z = _two_class(logits.detach().double()) / temperature
    conf, pred = z.softmax(1).max(1)
    return float(_ece_rows(conf[None], pred == labels.to(pred.device), n_bins)[0])


def fit_temperature(logits: Tensor, labels: Tensor, n_bins: int = 20, grid_size: int = 2000,
                    log_range: tuple[float, float] = (-3.0, 3.0), chunk: int = 64) -> float:
    """The ECE-minimising temperature by grid search (spec §1.2, ``TemperatureWrapper.compute_temperature``).

    Candidates ``T = exp(s)``, ``s ∈ linspace(−3, 3, 2000) ∪ {0}``; the chosen T minimises the ECE with 20
    equal-width confidence bins (not the NLL). Ties go to ``T = 1``, then to the smaller ``s``, so
    ``ECE(T*) ≤ ECE(1)`` always holds. Argmax predictions do not depend on ``T``; only the confidences do.

    Args:
        logits: ``[N, K]`` held-out logits of the *unscaled* classifier (``K = 1``: binary).
        labels: ``[N]`` true labels.
    Returns:
        ``T`` as a float.
    """
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"need logits [N, K] and labels [N] with N > 0, got {tuple(logits.shape)}, {tuple(labels.shape)}")
    if n_bins < 1 or grid_size < 1:
        raise ValueError(f"n_bins and grid_size must be >= 1, got {n_bins}, {grid_size}")
    z = _two_class(logits.detach().float())
    correct = z.argmax(1) == labels.to(z.device)
    gap = z - z.amax(1, keepdim=True)  # ≤ 0; max softmax(z/T) = 1 / Σ_j exp(gap_j / T)
    grid = torch.cat([torch.zeros(1, dtype=torch.float64), torch.linspace(*log_range, grid_size, dtype=torch.float64)])
    inv_t = (-grid).exp().to(z.device, z.dtype)
    ece = torch.cat([
        _ece_rows(1.0 / (gap[None] * it[:, None, None]).exp().sum(2), correct, n_bins) for it in inv_t.split(chunk)
    ])
    best = int(ece.argmin())  # first minimum: index 0 is log T = 0
    return float(grid[best].exp())
