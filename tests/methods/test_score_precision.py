"""Target log-probability near saturation: float32 gradients against float64 closed forms (issue 12 b).

``log p_y`` with ``p_y → 1`` has the gradient ``∂/∂z_j = −p_j`` (j ≠ y), ``∂/∂z_y = Σ_{j≠y} p_j``; the
last one is what ``z_y − logsumexp(z)`` and ``log_softmax(z)[y]`` get from ``1 − p_y`` by cancellation.
Scale-free updates (DVCE's renormalised guidance, spec dvce_svce.md §2.3 step 4) apply that error at full
strength, so the tests compare directions, per sample, to a float64 closed form.
"""
import pytest
import torch
import torch.nn.functional as F

from cflight.methods import DVCE
from cflight.methods import functional as Fn
from cflight.types import ClassTarget
from tests.helpers import LinearClassifier
from tests.methods.test_dvce import ConstantEps

RTOL = 1e-5  # float32 with the accurate form: ≤ ~3e-6 at margins up to 80 and logits shifted by 30
OLD_FAILS = 1e-2  # the naive forms are off by O(1) here


def _lse_form(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The form this replaced: ``z_y − logsumexp(z)``."""
    return z.gather(1, y[:, None]).squeeze(1) - z.logsumexp(1)


def _log_softmax_form(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The reference code's ``log_softmax(z)[y]`` (DVCE ``cond_fn_clean``)."""
    return z.log_softmax(1).gather(1, y[:, None]).squeeze(1)


def _closed_form_grad(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂ log p_y / ∂z in float64 without cancellation: ``−p_j`` off the target, ``Σ_{j≠y} p_j`` on it."""
    p = z.double().log_softmax(1).exp()  # each p_j (j ≠ y) to full relative precision
    off = p.scatter(1, y[:, None], 0.0)
    return (-off).scatter(1, y[:, None], off.sum(1, keepdim=True))


def _saturated_logits(margin: float, shift: float, on_top: bool, n: int = 64, k: int = 10):
    g = torch.Generator().manual_seed(int(margin * 10 + shift))
    z = torch.randn(n, k, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    z[torch.arange(n), y if on_top else (y + 1) % k] += margin
    return z + shift, y


def _grad(score, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(score(z, y).sum(), z)
    return g


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest per-sample relative error ``‖a − ref‖ / ‖ref‖``."""
    a, ref = a.double().flatten(1), ref.double().flatten(1)
    return float(((a - ref).norm(dim=1) / ref.norm(dim=1)).max())


def _score(z, y):
    return Fn.class_score(z, y, "log_prob")


@pytest.mark.parametrize("shift", [0.0, 30.0])
@pytest.mark.parametrize("margin", [20.0, 30.0, 40.0])
def test_logit_gradient_of_saturated_target_matches_float64(margin, shift):
    z, y = _saturated_logits(margin, shift, on_top=True)
    ref = _closed_form_grad(z, y)
    assert _rel(_grad(_score, z, y), ref) < RTOL
    # the value too: log p_y = −log1p(Σ_{j≠y} exp(z_j − z_y)), tiny but representable
    gap = (z.double() - z.double().gather(1, y[:, None])).scatter(1, y[:, None], float("-inf"))
    val64 = -torch.log1p(gap.exp().sum(1))
    torch.testing.assert_close(_score(z, y).double(), val64, rtol=RTOL, atol=0)
    # both naive forms would fail the same tolerance: the test can fail
    assert _rel(_grad(_lse_form, z, y), ref) > OLD_FAILS
    assert _rel(_grad(_log_softmax_form, z, y), ref) > OLD_FAILS


@pytest.mark.parametrize("margin", [0.0, 5.0, 10.0, 30.0])
def test_logit_gradient_is_accurate_away_from_saturation_and_far_below(margin):
    """Where the target is far from reached (``p_y → 0``), and at moderate margins, it stays accurate."""
    for on_top in (True, False):
        z, y = _saturated_logits(margin, 30.0, on_top=on_top)
        assert _rel(_grad(_score, z, y), _closed_form_grad(z, y)) < RTOL


@pytest.mark.parametrize("margin", [20.0, 40.0])
def test_input_gradient_through_a_linear_model_matches_float64(margin):
    model = LinearClassifier(num_classes=10, size=4, seed=3)
    x = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # a per-sample bias puts the target's logit ``margin`` above the best other one
        z = model(x)
        own = z.gather(1, y[:, None])
        best_other = z.scatter(1, y[:, None], float("-inf")).amax(1, keepdim=True)
    bias = torch.zeros(32, 10).scatter(1, y[:, None], best_other - own + margin)

    def input_grad(score, dtype):
        xx = x.to(dtype).requires_grad_(True)
        logits = F.linear(xx.flatten(1), model.fc.weight.to(dtype)) + bias.to(dtype)
        (g,) = torch.autograd.grad(score(logits, y).sum(), xx)
        return g

    logits64 = F.linear(x.double().flatten(1), model.fc.weight.double()) + bias.double()
    ref = (_closed_form_grad(logits64, y) @ model.fc.weight.double()).reshape(x.shape)  # Wᵀ·∂/∂z, float64
    assert _rel(input_grad(_score, torch.float32), ref) < RTOL
    assert _rel(input_grad(_lse_form, torch.float32), ref) > OLD_FAILS
    assert _rel(input_grad(_log_softmax_form, torch.float32), ref) > OLD_FAILS


def test_half_precision_logits_are_scored_in_float32():
    z, y = _saturated_logits(12.0, 0.0, on_top=True, n=8)
    s = Fn.class_score(z.bfloat16(), y, "log_prob")
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, Fn.class_score(z.bfloat16().float(), y, "log_prob"), rtol=0, atol=0)


def test_dvce_renormalised_guidance_on_a_saturated_input_float32_vs_float64(monkeypatch):
    """One DVCE guidance vector ``‖ε̂‖·λ_c·ĝ_c`` (spec §2.3 step 4) in float32 against float64."""
    torch.manual_seed(0)
    clf = LinearClassifier(num_classes=10, size=4, seed=5)
    xt = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(6))
    m = DVCE(ConstantEps(0.3, size=4), timestep_respacing="10", skip_timesteps=5, classifier_lambda=0.1,
             distance_lambda=0.0)
    t = 3
    with torch.no_grad():  # saturate the target at this step's x̂0 with a margin of 25
        image = (m.diffusion.predict_x0(xt, t, torch.full_like(xt, 0.3)) + 1) / 2
        z = clf(image)
        lift = z.scatter(1, y[:, None], float("-inf")).amax(1) - z.gather(1, y[:, None]).squeeze(1) + 25.0
    target = ClassTarget(y, threshold=0.5)

    class Shifted(torch.nn.Module):
        """The linear classifier plus a per-sample logit lift on the target (indexed by batch row)."""

        def __init__(self, dtype):
            super().__init__()
            self.in_channels, self.image_size = 1, (4, 4)
            self.w, self.b = clf.fc.weight.detach().to(dtype), torch.zeros(16, 10, dtype=dtype)
            self.b.scatter_(1, y[:, None], lift[:, None].to(dtype))

        def forward(self, x):
            return x.flatten(1) @ self.w.T + self.b

    def guidance(dtype):
        g, _, _ = m.guidance(xt.to(dtype), t, xt.to(dtype), target, Shifted(dtype), torch.arange(16))
        return g

    g64 = guidance(torch.float64)
    assert _rel(guidance(torch.float32), g64) < RTOL
    monkeypatch.setattr(Fn, "class_score", lambda z, c, objective: _lse_form(z, c))
    assert _rel(guidance(torch.float32), g64) > OLD_FAILS  # the old form fails the same tolerance
    monkeypatch.setattr(Fn, "class_score", lambda z, c, objective: _log_softmax_form(z, c))
    assert _rel(guidance(torch.float32), g64) > OLD_FAILS  # and so does the reference's log_softmax
