"""PGD's gradient-free last evaluation (issue 13): the same iterates and outputs as the previous semantics,
one backward pass fewer."""
import math

import pytest
import torch
from torch import nn

from cflight.methods import PGD
from cflight.methods import functional as Fn
from cflight.methods.pgd import make_loss
from cflight.methods.svce import make_loss_grad
from cflight.metrics.cost import EvaluationCounter
from cflight.types import ClassTarget
from tests.methods.test_svce import TinyMLP, _x

EPS = {"linf": 0.1, "l2": 0.6, "l1": 2.0}


def reference_pgd(x, loss_grad, eps, norm, steps, eta, keep_best):
    """The loop before the change, written out: N + 1 loss-and-gradient evaluations with keep_best (strict
    improvement), the last iterate after N otherwise."""
    z, best_x, best_l, best_aux = x.clone(), None, None, None
    for i in range(steps + int(keep_best)):
        loss, g, aux = loss_grad(z)
        if best_x is None or keep_best:
            better = torch.ones_like(loss, dtype=torch.bool) if best_x is None else loss > best_l
            w = better.view(-1, 1, 1, 1)
            best_x = z.clone() if best_l is None else torch.where(w, z, best_x)
            best_aux = aux.clone() if best_l is None else torch.where(better[:, None], aux, best_aux)
            best_l = loss.clone() if best_l is None else torch.where(better, loss, best_l)
        if i == steps:
            break
        z = Fn.project_lp_box(z + eta * Fn.steepest_ascent(g, norm), x, eps, norm)
    return (best_x, best_l, best_aux) if keep_best else (z, None, None)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("objective", ["log_conf", "ce"])
def test_loss_only_gives_the_same_result_float64(norm, objective):
    model, x = TinyMLP(), _x(6)
    target = ClassTarget(torch.tensor([0, 1, 2, 1, 0, 2]), 0.9)
    pred = model(x).detach()
    lg, lo = make_loss_grad(model, target, objective, pred), make_loss(model, target, objective, pred)
    eps, steps = EPS[norm], 7
    eta = 2.5 * eps / steps
    ref_x, ref_l, ref_aux = reference_pgd(x, lg, eps, norm, steps, eta, keep_best=True)
    old = Fn.pgd(x, lg, eps, norm, steps, eta, keep_best=True)
    new = Fn.pgd(x, lg, eps, norm, steps, eta, keep_best=True, loss_only=lo)
    for res in (old, new):
        assert torch.equal(res.x, ref_x) and torch.equal(res.loss, ref_l) and torch.equal(res.aux, ref_aux)
    assert torch.equal(new.loss0, old.loss0)
    last = Fn.pgd(x, lg, eps, norm, steps, eta, keep_best=False, loss_only=lo)
    assert torch.equal(last.x, reference_pgd(x, lg, eps, norm, steps, eta, keep_best=False)[0])
    assert torch.isnan(last.loss).all() and last.aux is None


def test_loss_only_matches_loss_grad():
    model, x = TinyMLP(), _x(4)
    target = ClassTarget(torch.tensor([0, 1, 2, 1]), 0.9)
    loss, _, aux = make_loss_grad(model, target)(x)
    loss2, aux2 = make_loss(model, target)(x)
    assert torch.equal(loss, loss2) and torch.equal(aux, aux2) and not aux2.requires_grad
    rows = torch.tensor([3, 1])
    loss3, _ = make_loss(model, target)(x[rows], rows)
    assert torch.equal(loss3, loss[rows])


def test_loss_only_identical_in_float32_conv_model():
    """A float32 conv net (MNIST-like, oneDNN kernels): the gradient-free forward is bit for bit the
    graph's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 13 * 13, 10))
    model.eval().requires_grad_(False)
    x = torch.rand(8, 1, 28, 28)
    target = ClassTarget(torch.arange(8) % 10, 0.5)
    lg, lo = make_loss_grad(model, target), make_loss(model, target)
    for norm, eps in (("linf", 0.3), ("l2", 2.0)):
        old = Fn.pgd(x, lg, eps, norm, 5, None, keep_best=True)
        new = Fn.pgd(x, lg, eps, norm, 5, None, keep_best=True, loss_only=lo)
        assert torch.equal(old.x, new.x) and torch.equal(old.loss, new.loss) and torch.equal(old.aux, new.aux)


@pytest.mark.parametrize("early_stop", [False, True])
def test_method_counts_one_backward_fewer(early_stop):
    model, x = TinyMLP(), _x(5)
    target = ClassTarget(torch.full((5,), 2), 0.999999)  # unreachable: every row runs every step
    pred = model(x).detach()
    counter = EvaluationCounter({"model": model})
    with counter:
        out = PGD(eps=0.5, norm="l2", steps=6, random_start=False, early_stop=early_stop)(x, target, model,
                                                                                          pred=pred)
    ev = counter.summary(num_images=5)["evaluations_per_image"]["model"]
    assert ev == {"forward": 7.0, "backward": 6.0 if not early_stop else 7.0}
    lg = make_loss_grad(model, target, "log_conf")
    ref_x, ref_l, ref_aux = reference_pgd(x, lg, 0.5, "l2", 6, 2.5 * 0.5 / 6, keep_best=True)
    assert torch.equal(out.x_cf, ref_x) and torch.equal(out.extras["loss"], ref_l)
    assert torch.equal(out.pred_cf, ref_aux)
    assert not math.isnan(float(out.extras["loss"].sum()))


def _scale_inputs(z, x, eps):
    """``_l2_scale``'s arguments for steps ``z`` from ``x`` (flat ``[B, D]``), as ``project_l2_box`` forms
    them."""
    p = z.clamp(0, 1)
    box = p - x
    up = box * box
    return p, z, x, box, up, eps.square(), up.double().sum(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2_scale_on_partly_clipped_equals_full_sorted_solve(dtype):
    """The scale solved on the partly clipped coordinates alone equals the sorted solve over every coordinate
    (Σ min(u², T·d²) = ε²), from ball-only to box-dominated steps, with ε = 0, ε beyond the box diameter, no
    step, rows without any partly clipped coordinate and a row clipped partly everywhere: T < 1 on the same
    rows, there to 1e-12 in float64 and t = min(1, √T) to 2 ulp in float32 (the thresholds are divided in
    float64 there)."""
    from cflight.methods.functional.lp_geometry import _l2_scale, _saturating_scale, _step_in_box

    for seed in range(6):
        z, x, eps = _random_steps(seed, dtype)
        z[3] = x[3] + 0.01  # x is in [0, 0.8] or 1: pixels at 1 are cut to nothing, none partly clipped
        x[4], z[4] = 0.5, 2.0  # every coordinate partly clipped (capacity 0.5 of a 1.5 step)
        eps[4] = 3.0
        e, _, u, a = _step_in_box(z, x, eps)
        ref = _saturating_scale(u * u, a * a, e * e)
        args = _scale_inputs(z, x, eps)
        partly = ((args[4] > 0) & (args[4] < (z - x) ** 2)).sum(1)
        assert partly[3] == 0 and partly[4] == z.shape[1] and partly.max() > 0
        new = _l2_scale(*args)
        small = ref < 1  # t = 1 beyond: the reference saturates at the full box capacity, ours at clip(z)
        assert torch.equal(new < 1, small)
        if dtype == torch.float64:
            torch.testing.assert_close(new[small], ref[small], rtol=1e-12, atol=0)
            assert (new[~small] >= 1).all()
        else:
            tt = lambda v: v.sqrt().clamp_max(1).to(dtype)  # noqa: E731
            torch.testing.assert_close(tt(new), tt(ref), rtol=2 * torch.finfo(torch.float32).eps, atol=0)


@pytest.mark.parametrize("use_numpy", [True, False])
def test_partly_clipped_indices_are_the_definition(use_numpy):
    """numpy's and torch's index paths both give the flat indices of 0 < (clip(z) − x)² < (z − x)²,
    ascending."""
    from cflight.methods.functional.lp_geometry import _partly_clipped

    z, x, _ = _random_steps(2, torch.float32)
    p = z.clamp(0, 1)
    up, cp = (p - x).double() ** 2, (z - x).double() ** 2
    want = ((up > 0) & (up < cp)).reshape(-1).nonzero().squeeze(1)
    got = _partly_clipped(p, z, p - x, use_numpy=use_numpy)
    assert got.dtype == torch.int64 and want.numel() > 0 and torch.equal(got, want)


def test_l2_projection_is_nearest_point_float64():
    """Closed form: the projection of z onto B_2(x, ε) ∩ box is clip(x + t(z − x)) with ‖·‖ = ε when z is out,
    and no feasible point of random perturbations is nearer."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(16, 1, 8, 8, generator=g, dtype=torch.float64)
    z = x + 0.8 * torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64)
    p = Fn.project_l2_box(z, x, 1.0)
    assert (Fn.lp_norm(p - x, 2) <= 1 + 1e-12).all() and (p >= 0).all() and (p <= 1).all()
    out = Fn.lp_norm(z.clamp(0, 1) - x, 2) > 1
    torch.testing.assert_close(Fn.lp_norm(p - x, 2)[out], torch.ones(int(out.sum()), dtype=torch.float64))
    for _ in range(20):
        q = Fn.project_l2_box(p + 0.01 * torch.randn(p.shape, generator=g, dtype=torch.float64), x, 1.0)
        assert (Fn.lp_norm(q - z, 2) >= Fn.lp_norm(p - z, 2) - 1e-12).all()


def _random_steps(seed, dtype, b=24, d=784):
    """Centres with pixels on both box faces and steps from ball-only (0.05) to box-dominated (3)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, d, generator=g, dtype=dtype) * (torch.rand(b, d, generator=g) > 0.5)
    x[x > 0.8] = 1.0
    scale = torch.tensor([0.05, 0.3, 1.0, 3.0], dtype=dtype).repeat(b // 4 + 1)[:b, None]
    z = x + scale * torch.randn(b, d, generator=g, dtype=dtype) * (torch.rand(b, d, generator=g) > 0.2)
    eps = torch.rand(b, generator=g, dtype=torch.float64) * 6
    eps[0], eps[1] = 0.0, 1e3  # no radius; a radius beyond the box diameter √d
    z[2] = x[2]  # no step (zero gradient)
    return z, x, eps


def _bisection_projection(z, x, eps):
    """Float64 closed form independent of the solvers: ``clip(x + t(z − x))`` with ``t = 1`` if that is inside
    the ball, else the root of the non-decreasing ``‖clip(x + t(z − x)) − x‖ = ε`` by bisection."""
    d = z - x
    norm = lambda t: (torch.clamp(x + t[:, None] * d, 0, 1) - x).norm(dim=1)  # noqa: E731
    lo, hi = torch.zeros_like(eps), torch.ones_like(eps)
    for _ in range(200):
        mid = (lo + hi) / 2
        below = norm(mid) <= eps
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    t = torch.where(norm(torch.ones_like(eps)) <= eps, torch.ones_like(eps), lo)
    return torch.clamp(x + t[:, None] * d, 0, 1)


def test_l2_projection_edge_cases_against_closed_form_float64():
    """Inside the ball, clipped by the box faces only, on the box faces, ε beyond the box diameter, no step,
    ε = 0 and box-dominated steps (several rounds): equal to the bisection closed form and to the sorted
    solve to 1e-10."""
    from cflight.methods.functional import lp_geometry as G

    z, x, eps = _random_steps(7, torch.float64, b=32, d=64)
    z[3] = x[3] + 1e-3 * torch.randn(64, dtype=torch.float64)  # inside the ball (and nearly the box)
    z[4] = x[4] + 0.05 * torch.randn(64, dtype=torch.float64)
    z[4, :8] = torch.tensor([3.0, -3.0] * 4, dtype=torch.float64)  # outside the box, clip(z) inside the ball
    eps[4] = float((z[4].clamp(0, 1) - x[4]).norm()) * 1.5
    x[5, :32], z[5, :32] = 1.0, 2.0  # on the upper face, pushing outwards: those pixels stay at 1
    x[5, 32:], z[5, 32:] = 0.0, 0.5  # on the lower face, moving inwards: ball-limited
    eps[5] = 1.0
    p = Fn.project_l2_box(z, x, eps)
    ref = _bisection_projection(z, x, eps)
    torch.testing.assert_close(p, ref, rtol=0, atol=1e-10)
    e, sgn, u, a = G._step_in_box(z, x, eps)
    t_sort = G._saturating_scale(u * u, a * a, e * e).sqrt().clamp_max(1)
    torch.testing.assert_close(p, G._point(x, sgn * torch.minimum(u, t_sort[:, None] * a)), rtol=0, atol=1e-10)
    torch.testing.assert_close(p[[0, 2]], x[[0, 2]], rtol=0, atol=0)  # ε = 0; no step
    torch.testing.assert_close(p[[1, 3, 4]], z[[1, 3, 4]].clamp(0, 1), rtol=0, atol=1e-15)
    assert (p[5, :32] == 1).all() and abs(float((p[5] - x[5]).norm()) - 1.0) < 1e-12
    out = (z.clamp(0, 1) - x).norm(dim=1) > eps
    torch.testing.assert_close((p - x).norm(dim=1)[out], eps[out], rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2_projection_batch_equals_rows(dtype):
    """Rows have different numbers of partly clipped coordinates (the gathered solve's padding differs) and
    some are inside the ball: each row's result is still its own, to the bit, in float32 and float64."""
    z, x, eps = _random_steps(8, dtype, b=16)
    batch = Fn.project_l2_box(z, x, eps)
    for i in range(16):
        assert torch.equal(Fn.project_l2_box(z[i:i + 1], x[i:i + 1], eps[i:i + 1]), batch[i:i + 1])
