"""AC-RE / ACE pure math (spec latent_and_regression.md §2.3, §5.2 items 1 and 6): closed forms, float64."""
import pytest
import torch
import torch.nn.functional as F

from cflight.methods import functional as Fn

F64 = torch.float64


def test_signed_step_moves_each_pixel_by_zero_or_alpha_then_projects():
    x = torch.full((2, 1, 2, 3), 0.5, dtype=F64)
    x_adv = torch.tensor([0.5, 0.52, 0.48, 0.995, 0.003, 0.5], dtype=F64).reshape(1, 1, 2, 3).repeat(2, 1, 1, 1)
    grad = torch.tensor([1.0, -2.0, 0.0, -1e-9, 3.0, -0.5], dtype=F64).reshape(1, 1, 2, 3).repeat(2, 1, 1, 1)
    a = 0.01
    new = Fn.signed_step(x_adv, grad, x, a, epsilon=1.0)
    want = torch.tensor([0.49, 0.53, 0.48, 1.0, 0.0, 0.51], dtype=F64).reshape(1, 1, 2, 3)  # 1.005 and −0.007 clamp
    torch.testing.assert_close(new, want.expand_as(new), rtol=0, atol=1e-15)
    # the l∞ ball around x: ε = 0.025 cuts 0.53 to 0.525 and 0.49 stays
    ball = Fn.signed_step(x_adv, grad, x, a, epsilon=0.025)
    assert float((ball - x).abs().max()) <= 0.025 + 1e-15 and float(ball[0, 0, 0, 1]) == pytest.approx(0.525)
    # rows that do not move are returned as they were (no step, no projection)
    part = Fn.signed_step(x_adv, grad, x, a, 0.025, moving=torch.tensor([False, True]))
    assert torch.equal(part[0], x_adv[0]) and torch.equal(part[1], ball[1])


def test_regression_and_class_losses_are_mse_ce_and_bce_summands():
    out = torch.tensor([[0.3], [0.9]], dtype=F64)
    torch.testing.assert_close(Fn.regression_loss(out, torch.tensor([0.5, 0.1])),
                               torch.tensor([0.04, 0.64], dtype=F64))
    logits = torch.randn(4, 5, dtype=F64)
    c = torch.tensor([0, 3, 4, 1])
    ce = F.cross_entropy(logits, c, reduction="none")
    torch.testing.assert_close(Fn.acre_class_loss(logits, c, torch.ones(4, dtype=torch.long)), ce)
    torch.testing.assert_close(Fn.acre_class_loss(logits, c, -torch.ones(4, dtype=torch.long)), -ce)
    one = torch.tensor([[2.0], [-1.0], [0.5]], dtype=F64)
    cls, d = torch.tensor([1, 1, 0]), torch.tensor([1, -1, 1])
    label = torch.tensor([1.0, 0.0, 0.0], dtype=F64)  # direction −1 targets the complement (ACE's 1 − pred)
    torch.testing.assert_close(Fn.acre_class_loss(one, cls, d),
                               F.binary_cross_entropy_with_logits(one[:, 0], label, reduction="none"))


def test_distance_penalty_closed_form_and_finite_gradient_at_the_start():
    x = torch.zeros(2, 1, 2, 2, dtype=F64)
    x_adv = torch.tensor([[0.3, -0.4, 0.0, 0.0], [0.0] * 4], dtype=F64).reshape(2, 1, 2, 2).requires_grad_(True)
    pen = Fn.distance_penalty(x, x_adv, l1=0.1, l2=2.0)
    torch.testing.assert_close(pen.detach(), torch.tensor([0.1 * 0.7 + 2.0 * 0.5, 0.0], dtype=F64))
    g, = torch.autograd.grad(pen.sum(), x_adv)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g[0].flatten(), torch.tensor([0.1 + 2 * 0.6, -0.1 - 2 * 0.8, 0.0, 0.0], dtype=F64))
    # (torch's subgradient of |0| is 0)
    # at x' = x: the l1 subgradient of |0| is 0 and the l2 norm's backward is 0, not NaN
    assert torch.equal(g[1], torch.zeros_like(g[1]))
    assert torch.equal(Fn.distance_penalty(x, x_adv, 0.0, 0.0), torch.zeros(2, dtype=F64))


def test_change_mask_closed_form_normalised_per_image():
    x = torch.zeros(2, 2, 2, 2, dtype=F64)
    pe = x.clone()
    pe[0, 0, 0, 0], pe[0, 1, 0, 0], pe[0, 1, 1, 1] = 0.2, -0.2, 0.1  # channel sum |·|: 0.4 and 0.1
    pe[1, 0, 0, 1] = 0.05
    m = Fn.change_mask(x, pe)
    assert m.shape == (2, 1, 2, 2)
    torch.testing.assert_close(m[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.25]], dtype=F64))
    torch.testing.assert_close(m[1, 0], torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=F64))
    assert (m.flatten(1).amax(1) == 1).all() and float(m.min()) >= 0


def test_change_mask_nan_guard_when_nothing_changed():
    """Spec §2.9 quirk 2: pe == x divides 0 by 0 in the reference; here the mask is 0 (all kept)."""
    x = torch.rand(3, 3, 4, 4, dtype=F64)
    pe = x.clone()
    pe[1] += 0.1  # one image changed, two not
    m = Fn.change_mask(x, pe)
    assert not m.isnan().any()
    assert torch.equal(m[0], torch.zeros_like(m[0])) and torch.equal(m[2], torch.zeros_like(m[2]))
    assert float(m[1].max()) == 1.0
    assert Fn.keep_region(Fn.dilate_mask(m, 3), 0.15)[[0, 2]].all()


def test_dilation_is_a_k_by_k_max_clipped_at_the_border():
    m = torch.zeros(1, 1, 7, 7, dtype=F64)
    m[0, 0, 3, 3], m[0, 0, 0, 6] = 1.0, 0.5
    d = Fn.dilate_mask(m, 3)
    want = torch.zeros(7, 7, dtype=F64)
    want[0:2, 5:7] = 0.5
    want[2:5, 2:5] = 1.0
    assert torch.equal(d[0, 0], want)
    assert torch.equal(Fn.dilate_mask(m, 1), m)
    r = torch.rand(2, 1, 9, 9, dtype=F64)
    assert (Fn.dilate_mask(r, 5) >= r).all() and Fn.dilate_mask(r, 5).shape == r.shape
    point = torch.zeros(1, 1, 9, 9, dtype=F64)
    point[0, 0, 4, 4] = 0.7
    square = torch.zeros_like(point)
    square[0, 0, 2:7, 2:7] = 0.7  # the 5-kernel dilation of an interior point is the 5×5 square around it
    assert torch.equal(Fn.dilate_mask(point, 5), square)


@pytest.mark.parametrize("k", [0, 2, 4, -1])
def test_dilation_kernel_must_be_odd(k):
    with pytest.raises(ValueError, match="odd"):
        Fn.dilate_mask(torch.zeros(1, 1, 4, 4), k)


def test_keep_region_is_strictly_below_gamma():
    md = torch.tensor([0.0, 0.1499, 0.15, 0.9], dtype=F64).reshape(1, 1, 1, 4)
    assert Fn.keep_region(md, 0.15).flatten().tolist() == [True, True, False, False]
    assert not Fn.keep_region(md, 0.0).any()  # γ ≤ 0: nothing kept (pure re-denoising)
