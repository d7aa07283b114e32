"""l_p geometry and optimisation loops of SVCE / APGD / PGD (spec dvce_svce.md §3.2, §3.3, §7 items 1–13)."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from cflight.methods import functional as Fn

PS = [1.2, 1.5, 2.0, 3.0]


def _case(b=5, d=12, seed=0, dtype=torch.float64):
    """Points with exact 0/1 entries and directions with exact zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, d, generator=g, dtype=dtype)
    x[torch.rand(b, d, generator=g) < 0.2] = 0.0
    x[torch.rand(b, d, generator=g) < 0.2] = 1.0
    w = torch.randn(b, d, generator=g, dtype=dtype)
    w[torch.rand(b, d, generator=g) < 0.2] = 0.0
    return x, w


def _capacity(x, w):
    return torch.where(w > 0, 1 - x, torch.where(w < 0, x, torch.zeros_like(x)))


# ------------------------------------------------------------------------------------------------- LMO
@pytest.mark.parametrize("p", PS)
def test_lmo_feasible_tight_sign_aligned(p):
    x, w = _case(b=64, d=30, seed=1)
    for eps in (0.3, 1.0, 3.0):
        d = Fn.lp_box_lmo(x, w, eps, p)
        assert ((x + d) >= 0).all() and ((x + d) <= 1).all()
        norm = Fn.lp_norm(d, p)
        assert (norm <= eps * (1 + 1e-6)).all()
        u = _capacity(x, w)
        loose = Fn.lp_norm(u, p) > eps
        torch.testing.assert_close(norm[loose], torch.full_like(norm[loose], eps), rtol=1e-6, atol=0)
        torch.testing.assert_close(d[~loose], (torch.sign(w) * u)[~loose])  # the corner fits: take it
        assert (d * w >= 0).all()
        assert (d[(w == 0) | (u == 0)] == 0).all()


@pytest.mark.parametrize("p", PS)
def test_lmo_huge_radius_is_the_box_corner(p):
    x, w = _case(b=4, d=20, seed=2)
    d = Fn.lp_box_lmo(x, w, 1e6, p)
    expected = torch.where(w > 0, torch.ones_like(x), torch.where(w < 0, torch.zeros_like(x), x))
    torch.testing.assert_close(x + d, expected)


def _slsqp_lmo(x, w, eps, p):
    """The LMO by a generic solver (SLSQP on δ directly, constraint ε^p − Σ|δ|^p ≥ 0, box bounds)."""
    cons = {"type": "ineq", "fun": lambda v: eps**p - np.sum(np.abs(v) ** p),
            "jac": lambda v: -p * np.abs(v) ** (p - 1) * np.sign(v)}
    best = None
    for start in (np.zeros_like(x), 1e-3 * np.sign(w)):
        r = minimize(lambda v: -w @ v, start, jac=lambda v: -w, method="SLSQP", constraints=[cons],
                     bounds=list(zip(-x, 1 - x)), options={"ftol": 1e-14, "maxiter": 500})
        if best is None or r.fun < best.fun:
            best = r
    return best.x


@pytest.mark.parametrize("p", PS)
def test_lmo_matches_generic_solver(p):
    rng = np.random.default_rng(int(p * 10))
    gaps = []
    for _ in range(12):
        d = int(rng.integers(2, 13))
        x = rng.random(d)
        x[rng.random(d) < 0.2] = 0.0
        x[rng.random(d) < 0.2] = 1.0
        w = rng.normal(size=d)
        w[rng.random(d) < 0.15] = 0.0
        eps = float(rng.uniform(0.05, 1.5))
        ours = Fn.lp_box_lmo(torch.tensor(x)[None], torch.tensor(w)[None], eps, p)[0].numpy()
        ref = _slsqp_lmo(x, w, eps, p)
        ref_feasible = np.sum(np.abs(ref) ** p) <= eps**p * (1 + 1e-7)
        gap = w @ ref - w @ ours
        gaps.append(gap if ref_feasible else min(gap, 0.0))
    assert max(gaps) <= 1e-6, gaps


@pytest.mark.parametrize("p", PS)
def test_lmo_beats_random_feasible_points(p):
    x, w = _case(b=8, d=16, seed=3)
    eps = 0.8
    best = (w * Fn.lp_box_lmo(x, w, eps, p)).sum(1)
    g = torch.Generator().manual_seed(4)
    for _ in range(200):
        v = torch.randn(x.shape, generator=g, dtype=x.dtype) * torch.rand(x.shape, generator=g, dtype=x.dtype) ** 3
        v = (x + v).clamp(0, 1) - x  # into the box (towards x), then into the ball
        v = v * torch.clamp(eps / Fn.lp_norm(v, p).clamp_min(1e-12), max=1.0)[:, None]
        assert ((w * v).sum(1) <= best + 1e-12).all()


@pytest.mark.parametrize("p", PS)
def test_lmo_interior_closed_form(p):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(3, 50, generator=g, dtype=torch.float64)
    x = torch.full_like(w, 0.5)
    eps = 0.05
    d = Fn.lp_box_lmo(x, w, eps, p)
    v = torch.sign(w) * w.abs() ** (1 / (p - 1))
    torch.testing.assert_close(d, eps * v / Fn.lp_norm(v, p)[:, None])
    q = p / (p - 1)
    torch.testing.assert_close((w * d).sum(1), eps * Fn.lp_norm(w, q))
    if p == 2.0:
        torch.testing.assert_close(d, eps * w / w.norm(dim=1, keepdim=True))


def test_lmo_invariances():
    x, w = _case(b=6, d=25, seed=6)
    p, eps = 1.5, 0.7
    d = Fn.lp_box_lmo(x, w, eps, p)
    torch.testing.assert_close(Fn.lp_box_lmo(x, 37.5 * w, eps, p), d)
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(Fn.lp_box_lmo(x[:, perm], w[:, perm], eps, p), d[:, perm])
    rows = torch.cat([Fn.lp_box_lmo(x[i:i + 1], w[i:i + 1], eps, p) for i in range(6)])
    torch.testing.assert_close(rows, d, rtol=0, atol=0)
    # per-sample radii
    eps_b = torch.linspace(0.1, 2.0, 6)
    rows = torch.cat([Fn.lp_box_lmo(x[i:i + 1], w[i:i + 1], float(eps_b[i]), p) for i in range(6)])
    torch.testing.assert_close(Fn.lp_box_lmo(x, w, eps_b, p), rows)


def test_lmo_monotone_in_eps_and_zero_radius():
    x, w = _case(b=4, d=20, seed=7)
    vals = [(w * Fn.lp_box_lmo(x, w, e, 1.5)).sum(1) for e in np.linspace(0, 4, 30)]
    for a, b in zip(vals, vals[1:]):
        assert (b >= a - 1e-12).all()
    assert (Fn.lp_box_lmo(x, w, 0.0, 1.5) == 0).all()


def test_lmo_image_shapes_and_float32():
    g = torch.Generator().manual_seed(8)
    x, w = torch.rand(3, 1, 6, 6, generator=g), torch.randn(3, 1, 6, 6, generator=g)
    d = Fn.lp_box_lmo(x, w, 1.0, 1.5)
    assert d.shape == x.shape and d.dtype == torch.float32
    torch.testing.assert_close(Fn.lp_norm(d, 1.5), torch.ones(3), rtol=1e-5, atol=0)
    assert ((x + d) >= 0).all() and ((x + d) <= 1).all()


def test_lmo_rejects_p_at_most_one():
    x, w = _case(b=1, d=3)
    with pytest.raises(ValueError, match="p > 1"):
        Fn.lp_box_lmo(x, w, 1.0, 1.0)
    with pytest.raises(ValueError, match="eps"):
        Fn.lp_box_lmo(x, w, -1.0, 1.5)


# ------------------------------------------------------------------------------------------ projections
def _slsqp_projection(z, x, eps, norm):
    """Nearest point of ball ∩ box to ``z`` by SLSQP (l1 split as δ = a − b, a, b ≥ 0 to stay smooth)."""
    d = len(x)
    if norm == "l2":
        cons = [{"type": "ineq", "fun": lambda v: eps**2 - np.sum((v - x) ** 2), "jac": lambda v: -2 * (v - x)}]
        r = minimize(lambda v: 0.5 * np.sum((v - z) ** 2), np.clip(x, 0, 1), jac=lambda v: v - z, method="SLSQP",
                     constraints=cons, bounds=[(0, 1)] * d, options={"ftol": 1e-15, "maxiter": 1000})
        return r.x
    lo, hi = -x, 1 - x  # δ bounds; δ = a − b

    def f(v):
        return 0.5 * np.sum((x + v[:d] - v[d:] - z) ** 2)

    def jac(v):
        r = x + v[:d] - v[d:] - z
        return np.concatenate([r, -r])

    cons = [{"type": "ineq", "fun": lambda v: eps - v.sum(), "jac": lambda v: -np.ones(2 * d)},
            {"type": "ineq", "fun": lambda v: (v[:d] - v[d:]) - lo,
             "jac": lambda v: np.hstack([np.eye(d), -np.eye(d)])},
            {"type": "ineq", "fun": lambda v: hi - (v[:d] - v[d:]),
             "jac": lambda v: np.hstack([-np.eye(d), np.eye(d)])}]
    r = minimize(f, np.zeros(2 * d), jac=jac, method="SLSQP", constraints=cons, bounds=[(0, None)] * (2 * d),
                 options={"ftol": 1e-15, "maxiter": 1000})
    return x + r.x[:d] - r.x[d:]


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_projection_matches_generic_solver(norm):
    rng = np.random.default_rng(11)
    for _ in range(10):
        d = int(rng.integers(2, 10))
        x = rng.random(d)
        x[rng.random(d) < 0.2] = 0.0
        x[rng.random(d) < 0.2] = 1.0
        z = x + rng.normal(scale=0.8, size=d)
        eps = float(rng.uniform(0.1, 1.5))
        ours = Fn.project_lp_box(torch.tensor(z)[None], torch.tensor(x)[None], eps, norm)[0].numpy()
        ref = _slsqp_projection(z, x, eps, norm)
        np.testing.assert_allclose(ours, ref, atol=2e-6)


@pytest.mark.parametrize("norm,p", [("linf", math.inf), ("l2", 2), ("l1", 1)])
def test_projection_feasible_idempotent_and_optimal(norm, p):
    g = torch.Generator().manual_seed(12)
    x = torch.rand(16, 40, generator=g, dtype=torch.float64)
    x[torch.rand(16, 40, generator=g) < 0.2] = 1.0
    z = x + torch.randn(16, 40, generator=g, dtype=torch.float64)
    eps = torch.rand(16, generator=g, dtype=torch.float64) * 2 + 0.05
    proj = Fn.project_lp_box(z, x, eps, norm)
    assert (proj >= 0).all() and (proj <= 1).all()
    assert (Fn.lp_norm(proj - x, p) <= eps * (1 + 1e-9)).all()
    torch.testing.assert_close(Fn.project_lp_box(proj, x, eps, norm), proj)
    # variational inequality ⟨z − P z, y − P z⟩ ≤ 0 for feasible y (random points of ball ∩ box)
    for _ in range(50):
        y = Fn.project_lp_box(x + torch.randn(16, 40, generator=g, dtype=torch.float64) * 0.3, x, eps, norm)
        assert (((z - proj) * (y - proj)).sum(1) <= 1e-9).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_ball_box_projects_as_before_to_the_bit(norm, dtype):
    """BallBox (one run's set, l∞ bounds precomputed) gives the per-call projections' numbers exactly (l∞:
    the clip to [x − ε, x + ε] then to [0, 1] it replaced), also for rows kept by an active set, at zero
    radius and with the centre on the box's faces."""

    def reference(z, x, eps):
        if norm == "linf":
            e = torch.as_tensor(eps, dtype=torch.float64).reshape(-1).expand(x.shape[0]).to(x.dtype)
            e = e.reshape(-1, 1, 1, 1)
            return torch.minimum(torch.maximum(z, x - e), x + e).clamp(0, 1)
        return (Fn.project_l2_box if norm == "l2" else Fn.project_l1_box)(z, x, eps)

    g = torch.Generator().manual_seed(21)
    x = torch.rand(12, 1, 6, 6, generator=g, dtype=dtype)
    x[torch.rand(x.shape, generator=g) < 0.2] = 0.0
    x[torch.rand(x.shape, generator=g) < 0.2] = 1.0
    eps = (torch.rand(12, generator=g, dtype=torch.float64) * 2).index_fill_(0, torch.tensor([3]), 0.0)
    ball = Fn.BallBox(x, eps, norm)
    keep = torch.rand(12, generator=g) < 0.6
    for scale in (0.05, 0.5, 3.0):  # inside the ball, on its sphere, far outside (box faces)
        z = x + scale * torch.randn(x.shape, generator=g, dtype=dtype)
        assert torch.equal(ball.project(z), reference(z, x, eps))
        assert torch.equal(Fn.project_lp_box(z, x, eps, norm), reference(z, x, eps))
        kept = reference(z[keep], x[keep], eps[keep])
        assert torch.equal(ball.keep(keep).project(z[keep]), kept)
    assert torch.equal(Fn.BallBox(x, 0.3, norm).project(z), reference(z, x, 0.3))
    if norm == "linf":
        assert torch.equal(Fn.project_linf_box(z, x, eps), reference(z, x, eps))
    with pytest.raises(ValueError, match="unknown norm"):
        Fn.BallBox(x, 0.3, "l3")
    with pytest.raises(ValueError, match="eps"):
        Fn.BallBox(x, -1.0, norm)


def test_project_l1_inside_point_unchanged_and_zero_radius():
    x = torch.rand(3, 10, dtype=torch.float64)
    z = (x + 0.01 * torch.randn(3, 10, dtype=torch.float64)).clamp(0, 1)
    torch.testing.assert_close(Fn.project_l1_box(z, x, 5.0), z)
    torch.testing.assert_close(Fn.project_l1_box(z, x, 0.0), x)
    torch.testing.assert_close(Fn.project_l2_box(z, x, 0.0), x)


def test_steepest_ascent_directions():
    g = torch.tensor([[3.0, -1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(Fn.steepest_ascent(g, "linf"), g.sign())
    torch.testing.assert_close(Fn.lp_norm(Fn.steepest_ascent(g, "l2")[:1], 2), torch.ones(1))
    d1 = Fn.steepest_ascent(g, "l1", 0.5)
    torch.testing.assert_close(d1[0], torch.tensor([0.5, -0.5, 0.0, 0.0]))
    assert (Fn.steepest_ascent(g, "l1", 0.5)[1] == 0).all()
    with pytest.raises(ValueError, match="unknown norm"):
        Fn.steepest_ascent(g, "l3")


def test_random_start_inside_ball_and_box():
    g = torch.Generator().manual_seed(13)
    x, n = torch.rand(5, 1, 6, 6, generator=g), torch.randn(5, 1, 6, 6, generator=g)
    for norm, p in (("linf", math.inf), ("l2", 2), ("l1", 1)):
        z = Fn.random_start(x, n, 0.5, norm)
        assert (z >= 0).all() and (z <= 1).all()
        assert (Fn.lp_norm(z - x, p) <= 0.5 * (1 + 1e-5)).all()


def test_transfer_radius():
    assert Fn.transfer_radius(50.0, 1.5, 3 * 224 * 224, 3 * 224 * 224) == 50.0
    assert Fn.transfer_radius(50.0, 1.5, 3 * 224 * 224, 28 * 28) == pytest.approx(50 * (784 / 150528) ** (2 / 3))
    assert Fn.transfer_radius(0.1, math.inf, 10, 1000) == 0.1
    with pytest.raises(ValueError):
        Fn.transfer_radius(1.0, 2, 0, 5)


# ------------------------------------------------------------------------------------------------- AFW
def test_checkpoint_schedule_n75():
    assert Fn.checkpoint_iterations(75) == [15, 29, 41, 51, 59, 65, 69, 73]
    assert Fn.checkpoint_iterations(1) == [0]


def _mlp_loss_grad(seed=0, d=16, k=4):
    """A small nonlinear log-confidence objective (float64), its gradient and its logits as aux."""
    g = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(d, 12, generator=g, dtype=torch.float64), torch.randn(12, k, generator=g, dtype=torch.float64)
    calls = []

    def loss_grad(z):
        calls.append(z.shape[0])
        z = z.detach().requires_grad_(True)
        out = torch.tanh(z.flatten(1) @ w1) @ w2
        loss = out.log_softmax(1)[:, 0]
        (grad,) = torch.autograd.grad(loss.sum(), z)
        return loss.detach(), grad, out.detach()

    return loss_grad, calls


@pytest.mark.parametrize("rule", ["v1", "v2"])
def test_afw_iterates_feasible_best_monotone_and_schedule(rule):
    x, _ = _case(b=6, d=16, seed=14)
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(15), dtype=x.dtype)
    loss_grad, calls = _mlp_loss_grad()
    eps, p = 1.2, 1.5
    res = Fn.afw(x, loss_grad, eps, p, steps=75, step_rule=rule, init_dir=xi, record=True)
    assert len(calls) == 76  # one evaluation per iterate x_0 … x_75
    it = res.trace["iterates"]
    assert it.shape == (76, 6, 16)
    assert (it >= 0).all() and (it <= 1).all()
    assert (Fn.lp_norm((it - x).reshape(-1, 16), p) <= eps * (1 + 1e-6)).all()
    best = res.trace["loss_best"]
    assert (best[1:] >= best[:-1]).all() and (best[0] >= res.loss0).all()
    torch.testing.assert_close(res.loss, best[-1])
    assert (res.loss >= res.loss0).all()
    lg = loss_grad(res.x)
    torch.testing.assert_close(lg[0], res.loss)
    torch.testing.assert_close(lg[2], res.aux)
    # reductions happen only at the checkpoints; step sizes follow the rule
    red = res.trace["reduced"]
    checkpoints = Fn.checkpoint_iterations(75)
    assert not red[[i for i in range(75) if i not in checkpoints]].any()
    n_red = torch.cat([torch.zeros(1, 6, dtype=torch.long), red.long().cumsum(0)[:-1]])  # before iteration i
    i = torch.arange(75, dtype=torch.float64)[:, None]
    if rule == "v1":
        expected = 0.75 * 0.5 ** n_red
    else:
        expected = 2 * 0.75 ** n_red / (i.sqrt() + 2)
    torch.testing.assert_close(res.trace["step"], expected.to(res.trace["step"].dtype))


def test_afw_linear_objective():
    x, _ = _case(b=4, d=10, seed=16)
    c = torch.randn(4, 10, generator=torch.Generator().manual_seed(17), dtype=x.dtype)

    def lin(z):
        return (c * z).sum(1), c.expand_as(z).clone(), None

    target = x + Fn.lp_box_lmo(x, c, 0.9, 1.5)
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(18), dtype=x.dtype)
    v2 = Fn.afw(x, lin, 0.9, 1.5, steps=20, step_rule="v2", init_dir=xi, record=True)
    torch.testing.assert_close(v2.trace["iterates"][1], target)
    torch.testing.assert_close(v2.x, target)
    assert (v2.trace["loss"] <= (c * target).sum(1) + 1e-12).all()
    v1 = Fn.afw(x, lin, 0.9, 1.5, steps=40, step_rule="v1", init_dir=xi, record=True)
    losses = v1.trace["loss"]
    assert (losses[1:] >= losses[:-1] - 1e-12).all()
    torch.testing.assert_close(v1.loss, (c * target).sum(1), atol=1e-9, rtol=0)


def test_afw_zero_radius_returns_x_and_is_deterministic():
    x, _ = _case(b=3, d=16, seed=19)
    loss_grad, _ = _mlp_loss_grad()
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(20), dtype=x.dtype)
    assert torch.equal(Fn.afw(x, loss_grad, 0.0, 1.5, steps=10, init_dir=xi).x, x)
    a = Fn.afw(x, loss_grad, 1.0, 1.5, steps=10, init_dir=xi)
    b = Fn.afw(x, loss_grad, 1.0, 1.5, steps=10, init_dir=xi)
    assert torch.equal(a.x, b.x)


@pytest.mark.parametrize("rule", ["v1", "v2"])
def test_afw_batch_equals_loop(rule):
    x, _ = _case(b=5, d=16, seed=21)
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(22), dtype=x.dtype)
    loss_grad, _ = _mlp_loss_grad()
    eps = torch.tensor([0.5, 1.0, 1.5, 2.0, 0.2], dtype=torch.float64)
    res = Fn.afw(x, loss_grad, eps, 1.5, steps=30, step_rule=rule, init_dir=xi, momentum=0.5)
    for i in range(5):
        one = Fn.afw(x[i:i + 1], loss_grad, float(eps[i]), 1.5, steps=30, step_rule=rule, init_dir=xi[i:i + 1],
                     momentum=0.5)
        torch.testing.assert_close(one.x[0], res.x[i], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(one.loss[0], res.loss[i])


def test_afw_invalid_rule():
    with pytest.raises(ValueError, match="step_rule"):
        Fn.afw(torch.zeros(1, 3), lambda z: None, 1.0, step_rule="v3")


# ------------------------------------------------------------------------------------------- APGD / PGD
@pytest.mark.parametrize("norm,p", [("linf", math.inf), ("l2", 2), ("l1", 1)])
def test_apgd_and_pgd_stay_in_ball_and_box(norm, p):
    x, _ = _case(b=6, d=16, seed=23)
    loss_grad, calls = _mlp_loss_grad(seed=1)
    eps = {"linf": 0.1, "l2": 0.8, "l1": 2.0}[norm]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(24), dtype=x.dtype)
    start = Fn.random_start(x, noise, eps, norm)
    res = Fn.apgd(x, loss_grad, eps, norm, steps=40, x_init=start, record=True)
    assert len(calls) == 41
    it = res.trace["iterates"]
    assert (it >= 0).all() and (it <= 1).all()
    assert (Fn.lp_norm((it - x).reshape(-1, 16), p) <= eps * (1 + 1e-6)).all()
    best = res.trace["loss_best"]
    assert (best[1:] >= best[:-1]).all() and (res.loss >= res.loss0).all()
    torch.testing.assert_close(loss_grad(res.x)[0], res.loss)
    pg = Fn.pgd(x, loss_grad, eps, norm, steps=15, x_init=start, record=True)
    it = pg.trace["iterates"]
    assert (it >= 0).all() and (it <= 1).all()
    assert (Fn.lp_norm((it - x).reshape(-1, 16), p) <= eps * (1 + 1e-6)).all()
    assert (pg.loss >= pg.trace["loss"].amax(0) - 1e-12).all()


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_apgd_batch_equals_loop(norm):
    x, _ = _case(b=4, d=16, seed=25)
    loss_grad, _ = _mlp_loss_grad(seed=2)
    res = Fn.apgd(x, loss_grad, 0.5, norm, steps=25)
    for i in range(4):
        one = Fn.apgd(x[i:i + 1], loss_grad, 0.5, norm, steps=25)
        torch.testing.assert_close(one.x[0], res.x[i], rtol=1e-10, atol=1e-12)


def test_apgd_l2_improves_on_linear_objective():
    x = torch.full((2, 10), 0.5, dtype=torch.float64)
    c = torch.randn(2, 10, generator=torch.Generator().manual_seed(26), dtype=torch.float64)
    res = Fn.apgd(x, lambda z: ((c * z).sum(1), c.clone(), None), 0.3, "l2", steps=30)
    torch.testing.assert_close(res.x, x + 0.3 * c / c.norm(dim=1, keepdim=True), atol=1e-6, rtol=0)


def test_pgd_last_iterate_mode():
    x, _ = _case(b=2, d=16, seed=27)
    loss_grad, calls = _mlp_loss_grad()
    res = Fn.pgd(x, loss_grad, 0.5, "l2", steps=5, keep_best=False)
    assert len(calls) == 5 and res.aux is None and torch.isnan(res.loss).all()
