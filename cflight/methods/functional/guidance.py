"""Pure math of diffusion guidance (DVCE, spec dvce_svce.md §2.3–2.5), unit-tested without models.

Gradients are ``[B, ...]`` tensors treated as one flat vector per sample.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from cflight.rng import per_sample_uniform  # re-exported for augment_copies' callers

__all__ = ["AUG_PARAMS", "augment_copies", "cone_projection", "lp_subgradient", "per_sample_uniform",
           "renormalize", "scaled_guidance"]

_TINY = 1e-22  # the reference's guard against division by zero


def _norm(g: Tensor) -> Tensor:
    """Per-sample l2 norm, shaped to broadcast against ``g``."""
    return g.flatten(1).norm(dim=1).reshape(-1, *([1] * (g.ndim - 1)))


def renormalize(g: Tensor, scale: Tensor | float) -> Tensor:
    """``scale · g/‖g‖₂`` per sample (``scale`` a scalar or ``[B]``); a zero ``g`` stays zero."""
    scale = torch.as_tensor(scale, dtype=g.dtype, device=g.device)
    if scale.ndim:
        scale = scale.reshape(-1, *([1] * (g.ndim - 1)))
    return scale * g / (_norm(g) + _TINY)


def scaled_guidance(g_class: Tensor | None, g_dist: Tensor | None, eps: Tensor, lambda_class: float,
                    lambda_dist: float) -> Tensor:
    """DVCE's adaptive parameterisation: ``‖ε̂‖₂ · (λ_c·ĝ_c − λ_d·ĝ_d)`` per sample (spec §2.3 steps 4–6).

    Each term is normalised on its own, so the update does not depend on the scale of a loss, on the
    batch size, or on the model's gradient magnitude; ``None`` terms are left out.
    """
    eps_norm = eps.flatten(1).norm(dim=1)
    g = torch.zeros_like(eps)
    if g_class is not None:
        g = g + renormalize(g_class, lambda_class * eps_norm)
    if g_dist is not None:
        g = g - renormalize(g_dist, lambda_dist * eps_norm)
    return g


def lp_subgradient(x: Tensor, ref: Tensor, p: float = 1.0) -> Tensor:
    """∂/∂x of Σ|x − ref|^p: ``p·|x − ref|^{p−1}·sign(x − ref)`` (``sign`` for p = 1, 0 where equal)."""
    d = x - ref
    if p == 1:
        return torch.sign(d)
    return p * d.abs().pow(p - 1) * torch.sign(d)


def cone_projection(g_robust: Tensor, g_explained: Tensor, angle: float) -> tuple[Tensor, Tensor]:
    """DVCE's cone rule with the reference code's semantics (spec §2.4), per sample.

    θ = ∠(g_r, g_n). If θ ≤ α: ``ĝ_n``. Otherwise ``ĝ_n + tan(α)·û`` with ``u`` the part of ``g_r``
    orthogonal to ``g_n``: a vector in span(g_r, g_n) at exactly α from ``g_n`` (rotated towards ``g_r``),
    of norm 1/cos α — up to scale the projection of the robust gradient onto the cone of half-angle α
    around the explained model's gradient. Always an ascent direction of the explained model.

    Args:
        g_robust, g_explained: ``[B, ...]`` gradients of the robust and the explained model.
        angle: half-angle α in degrees, ``0 <= α < 90``.
    Returns:
        ``(direction [B, ...], θ [B] in degrees)``.
    """
    if not 0 <= angle < 90:
        raise ValueError(f"cone angle must be in [0, 90) degrees, got {angle}")
    r, n = g_robust.flatten(1), g_explained.flatten(1)
    n_hat = n / (n.norm(dim=1, keepdim=True) + _TINY)
    cos = (r * n_hat).sum(1) / (r.norm(dim=1) + _TINY)
    theta = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    u = r - (r * n_hat).sum(1, keepdim=True) * n_hat
    u_hat = u / (u.norm(dim=1, keepdim=True) + _TINY)
    out = torch.where((theta <= angle)[:, None], n_hat, n_hat + math.tan(math.radians(angle)) * u_hat)
    return out.reshape(g_explained.shape), theta


AUG_PARAMS = 13  # uniforms per augmented copy: affine (on?, angle, tx, ty), perspective (on?, 8 offsets)


def _perspective_grid(offsets: Tensor, size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """Sampling grid of the homography moving the image corners inwards by ``offsets`` ``[N, 4, 2]``
    (normalised units): output pixels at the moved corners sample the original corners."""
    corners = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]
    src = torch.tensor(corners, dtype=torch.float64, device=offsets.device)
    dst = src + offsets.double() * -src  # inwards
    n = offsets.shape[0]
    x, y = dst[..., 0], dst[..., 1]
    u, v = repeat(src[:, 0], "k -> n k", n=n), repeat(src[:, 1], "k -> n k", n=n)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)  # [N, 8, 8]
    h = torch.linalg.solve(a, torch.cat([u, v], 1))  # maps output (dst) coords to input (src) coords
    h = torch.cat([h, torch.ones(n, 1, dtype=h.dtype, device=h.device)], 1).reshape(n, 3, 3)
    base = F.affine_grid(torch.eye(2, 3, dtype=torch.float64, device=offsets.device).expand(n, 2, 3),
                         [n, 1, *size], align_corners=False)
    pts = torch.cat([base, torch.ones_like(base[..., :1])], -1) @ h.transpose(1, 2)[:, None]
    return (pts[..., :2] / pts[..., 2:]).to(dtype)


def augment_copies(x: Tensor, u: Tensor, degrees: float = 15.0, translate: float = 0.1, distortion: float = 0.7,
                   p: float = 0.7) -> Tensor:
    """``x`` ``[B, C, H, W]`` and ``num − 1`` augmented copies of each sample → ``[(B·num), C, H, W]``.

    The reference's classifier augmentations (spec §2.5, kornia ``RandomAffine(15°, translate 0.1,
    border padding, p=0.7)`` then ``RandomPerspective(0.7, p=0.7)``), written with ``affine_grid`` /
    ``grid_sample`` so they are differentiable in ``x``. Copy 0 of each sample is unaugmented. The
    randomness is explicit: ``u`` ``[B, num − 1, AUG_PARAMS]`` uniforms in [0, 1] (see
    :func:`per_sample_uniform`), so results are a pure function of ``(x, u)``.
    """
    b, c, h, w = x.shape
    num = u.shape[1] + 1
    if u.shape != (b, num - 1, AUG_PARAMS):
        raise ValueError(f"u must have shape [{b}, num - 1, {AUG_PARAMS}], got {tuple(u.shape)}")
    if num == 1:
        return x
    xs = rearrange(repeat(x, "b c h w -> b n c h w", n=num - 1), "b n c h w -> (b n) c h w")
    uu = rearrange(u, "b n k -> (b n) k").to(x.dtype)
    on_affine, on_persp = (uu[:, 0] < p).to(x.dtype), (uu[:, 4] < p).to(x.dtype)
    angle = torch.deg2rad((2 * uu[:, 1] - 1) * degrees) * on_affine
    tx, ty = [2 * (2 * uu[:, k] - 1) * translate * on_affine for k in (2, 3)]  # fraction of size → normalised
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)
    grid = F.affine_grid(theta, list(xs.shape), align_corners=False)
    xs = F.grid_sample(xs, grid, mode="bilinear", padding_mode="border", align_corners=False)
    offsets = (uu[:, 5:] * distortion * on_persp[:, None]).reshape(-1, 4, 2)
    grid = _perspective_grid(offsets, (h, w), x.dtype)
    xs = F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    xs = rearrange(xs, "(b n) c h w -> b n c h w", b=b)
    return rearrange(torch.cat([x[:, None], xs], 1), "b n c h w -> (b n) c h w")
