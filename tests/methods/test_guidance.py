"""Pure guidance math: cone projection (spec §7 items 14–19), adaptive rescaling (23), augmentations."""
import math

import pytest
import torch

from cflight.methods import functional as Fn

F64 = torch.float64


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1), b.flatten(1)
    return torch.arccos(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).clamp(-1, 1))


def _pairs(n: int = 64, d: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randn(n, d, generator=g, dtype=F64)


def test_cone_inside_returns_the_explained_direction():
    g_n = torch.randn(8, 3, 4, 4, dtype=F64)
    g_r = g_n + 0.05 * torch.randn_like(g_n)  # a few degrees apart
    out, theta = Fn.cone_projection(g_r, 3.0 * g_n, 30.0)
    assert (theta < 30).all() and out.shape == g_n.shape
    torch.testing.assert_close(out, g_n / g_n.flatten(1).norm(dim=1)[:, None, None, None])


@pytest.mark.parametrize("alpha", [10.0, 30.0, 60.0])
def test_cone_outside_lies_at_alpha_in_the_span(alpha):
    g_r, g_n = _pairs()
    out, theta = Fn.cone_projection(g_r, g_n, alpha)
    assert (theta > alpha).all()  # random directions in 50-d are nearly orthogonal
    a = math.radians(alpha)
    torch.testing.assert_close(_angle(out, g_n), torch.full((64,), a, dtype=F64), atol=1e-5, rtol=0)
    torch.testing.assert_close(_angle(out, g_r), torch.deg2rad(theta) - a, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.norm(dim=1), torch.full((64,), 1 / math.cos(a), dtype=F64))
    basis, _ = torch.linalg.qr(torch.stack([g_r, g_n], 2))  # [n, d, 2]: orthonormal basis of the span
    residual = out - (basis @ (basis.transpose(1, 2) @ out[..., None]))[..., 0]
    assert residual.abs().max() < 1e-10
    assert ((out * g_n).sum(1) > 0).all()  # an ascent direction of the explained model


def test_cone_theta_scale_invariance_and_limits():
    g_r, g_n = _pairs(seed=1)
    out, theta = Fn.cone_projection(g_r, g_n, 30.0)
    expected = torch.rad2deg(_angle(g_r, g_n))
    torch.testing.assert_close(theta, expected)
    out2, _ = Fn.cone_projection(7.0 * g_r, 0.2 * g_n, 30.0)
    torch.testing.assert_close(out2, out)
    zero, _ = Fn.cone_projection(g_r, g_n, 0.0)  # α = 0: the explained direction
    torch.testing.assert_close(zero, g_n / g_n.norm(dim=1, keepdim=True))
    par, _ = Fn.cone_projection(2 * g_n, g_n, 30.0)  # g_r ∥ g_n
    torch.testing.assert_close(par, g_n / g_n.norm(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="angle"):
        Fn.cone_projection(g_r, g_n, 90.0)


def test_obtuse_robust_gradient_still_gives_an_ascent_direction():
    g_n = torch.tensor([[1.0, 0.0]], dtype=F64)
    g_r = torch.tensor([[-1.0, 0.2]], dtype=F64)  # θ ≈ 169°
    out, theta = Fn.cone_projection(g_r, g_n, 30.0)
    assert theta.item() > 160
    torch.testing.assert_close(_angle(out, g_n), torch.tensor([math.radians(30)], dtype=F64))
    assert out[0, 1] > 0  # rotated towards the robust side


def test_scaled_guidance_norms_and_invariances():
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(5, 2, 3, 3, generator=g, dtype=F64)
    g_c, g_d = torch.randn(5, 2, 3, 3, generator=g, dtype=F64), torch.randn(5, 2, 3, 3, generator=g, dtype=F64)
    eps_norm = eps.flatten(1).norm(dim=1)
    term_c = Fn.scaled_guidance(g_c, None, eps, 0.1, 0.15)
    term_d = Fn.scaled_guidance(None, g_d, eps, 0.1, 0.15)
    torch.testing.assert_close(term_c.flatten(1).norm(dim=1), 0.1 * eps_norm)
    torch.testing.assert_close(term_d.flatten(1).norm(dim=1), 0.15 * eps_norm)
    both = Fn.scaled_guidance(g_c, g_d, eps, 0.1, 0.15)
    torch.testing.assert_close(both, term_c + term_d)
    assert ((term_d * g_d).sum((1, 2, 3)) < 0).all()  # the distance is descended
    # a loss scaled by a constant (e.g. a batch mean instead of a sum) gives the same update
    torch.testing.assert_close(Fn.scaled_guidance(g_c / 5, 1e3 * g_d, eps, 0.1, 0.15), both)
    zero = Fn.scaled_guidance(torch.zeros_like(g_c), None, eps, 0.1, 0.0)
    assert torch.equal(zero, torch.zeros_like(zero))


def test_renormalize_and_lp_subgradient():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(Fn.renormalize(g, torch.tensor([2.0, 5.0])), torch.tensor([[1.2, 1.6], [0.0, 0.0]]))
    x, ref = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, 1.0, 1.0])
    torch.testing.assert_close(Fn.lp_subgradient(x, ref), torch.tensor([0.0, -1.0, 1.0]))
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad((xr - ref).abs().pow(1.5).sum(), xr)
    torch.testing.assert_close(Fn.lp_subgradient(x, ref, 1.5), auto)


def test_per_sample_uniform_depends_on_seed_and_index_only():
    u = Fn.per_sample_uniform((3, 13), 7, torch.tensor([4, 9, 2]))
    v = Fn.per_sample_uniform((3, 13), 7, torch.tensor([9]))
    assert u.shape == (3, 3, 13) and (u > 0).all() and (u < 1).all()
    torch.testing.assert_close(u[1], v[0])
    assert not torch.equal(u, Fn.per_sample_uniform((3, 13), 8, torch.tensor([4, 9, 2])))


def test_augment_copies_identity_copy_and_no_op_draws():
    x = torch.rand(2, 3, 8, 8, dtype=F64)
    u = Fn.per_sample_uniform((4, Fn.AUG_PARAMS), 0, torch.arange(2), dtype=F64)
    out = Fn.augment_copies(x, u)
    assert out.shape == (10, 3, 8, 8)
    torch.testing.assert_close(out[0], x[0])  # copy 0 of each sample is the original
    torch.testing.assert_close(out[5], x[1])
    assert (out[1:5] - x[0]).abs().max() > 1e-3  # others are transformed
    off = u.clone()
    off[..., 0] = off[..., 4] = 0.99  # both transforms skipped (p = 0.7): identity resampling
    torch.testing.assert_close(Fn.augment_copies(x, off)[1:5], x[0].expand(4, 3, 8, 8))
    assert torch.equal(Fn.augment_copies(x, u[:, :0]), x)
    with pytest.raises(ValueError, match="shape"):
        Fn.augment_copies(x, u[:1])


def test_augmentations_are_differentiable_and_perspective_moves_corners():
    x = torch.zeros(1, 1, 9, 9, dtype=F64)
    x[..., 0, 0] = 1.0  # a bright top-left corner pixel
    u = torch.full((1, 1, Fn.AUG_PARAMS), 0.5, dtype=F64)
    u[..., 0] = 0.99  # no affine
    u[..., 4] = 0.0  # perspective on
    u[..., 5:] = 1.0  # every corner moves inwards by distortion·half-size
    out = Fn.augment_copies(x, u)[1, 0]
    assert out[0, 0] < 0.5  # the corner pixel moved away from the corner ...
    assert out.sum() > 0  # ... but is still in the image
    xr = torch.rand(2, 1, 9, 9, dtype=F64, requires_grad=True)
    uu = Fn.per_sample_uniform((3, Fn.AUG_PARAMS), 1, torch.arange(2), dtype=F64)
    (g,) = torch.autograd.grad(Fn.augment_copies(xr, uu).sum(), xr)
    assert torch.isfinite(g).all() and g.abs().max() > 0
