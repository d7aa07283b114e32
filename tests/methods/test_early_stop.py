"""Per-sample early stopping (issue 12 c): SparseAFW, PGD, APGD, DVCE and the functional loops.

A stopped sample is frozen at the first iterate that reaches its target (that iterate is returned, and
later iterations do not evaluate it); every other sample follows exactly the trajectory it has without
early stopping, because every rule of the loops is per sample.
"""
import pytest
import torch
from torch import nn

from cflight.cli import main
from cflight.methods import APGD, DVCE, PGD, SparseAFW
from cflight.methods import functional as Fn
from cflight.methods.svce import make_loss_grad, make_stop, reached
from cflight.models.generative.diffusion import from_diffusion
from cflight.types import ClassTarget, RegressionTarget
from tests.helpers import LinearClassifier
from tests.methods.test_dvce import GaussianDenoiser

F64 = torch.float64
# Rows of a smaller batch are evaluated with reductions rounded differently (SIMD lanes), and a best-iterate
# tie at a checkpoint can turn that 1e-16 into ~1e-8; the pixel methods' batch-vs-loop tests allow as much.
TOL = {"rtol": 1e-7, "atol": 1e-7}
pytestmark = pytest.mark.usefixtures("one_thread")


class Counting(nn.Module):
    """Wraps a model and counts the rows it evaluates."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0
        self.in_channels, self.image_size = model.in_channels, model.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.model(x)


def _setup(n: int = 8, threshold: float = 0.8):
    clf = LinearClassifier(num_classes=4, size=4, seed=2).double()
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    with torch.no_grad():
        classes = clf(x).topk(2, 1).indices[:, 1]  # second most likely class
    return clf, x, ClassTarget(classes, threshold)


def _afw(rule):
    return lambda x, lg, start, **kw: Fn.afw(x, lg, 1.0, 1.5, 30, rule, init_dir=start, **kw)


def _apgd(norm, eps):
    return lambda x, lg, start, **kw: Fn.apgd(x, lg, eps, norm, 30, x_init=start, **kw)


def _pgd(norm, eps, **extra):
    return lambda x, lg, start, **kw: Fn.pgd(x, lg, eps, norm, 20, None, start, **extra, **kw)


# name -> (run(x, loss_grad, start, record=, stop=) -> AFWResult, N, random start (norm, ε) or None)
LOOPS = {
    "afw_v1": (_afw("v1"), 30, None),
    "afw_v2": (_afw("v2"), 30, None),
    "apgd_l2": (_apgd("l2", 0.8), 30, ("l2", 0.8)),
    "apgd_l1": (_apgd("l1", 2.5), 30, ("l1", 2.5)),
    "apgd_linf": (_apgd("linf", 0.3), 30, ("linf", 0.3)),
    "pgd_l2": (_pgd("l2", 0.8), 20, ("l2", 0.8)),
    "pgd_l1": (_pgd("l1", 2.0, l1_sparsity=0.2), 20, ("l1", 2.0)),
}


@pytest.mark.parametrize("name", list(LOOPS))
def test_loop_freezes_each_row_at_its_first_reaching_iterate(name):
    clf, x, target = _setup()
    run, n_iter, ball = LOOPS[name]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    start = noise if ball is None else Fn.random_start(x, noise, ball[1], ball[0])  # AFW: the LMO direction
    counted = Counting(clf)
    ref = run(x, make_loss_grad(clf, target), start, record=True)  # the reference: every row runs all steps
    res = run(x, make_loss_grad(counted, target), start, stop=make_stop(target))
    with torch.no_grad():
        hit = torch.stack([reached(clf(it), target) for it in ref.trace["iterates"]])  # [N + 1, B]
    stopped = hit.any(0)
    assert stopped.any() and not stopped.all(), "the case must have rows that stop and rows that do not"
    first = hit.to(torch.int8).argmax(0)  # first reaching iterate
    assert torch.equal(res.stopped, stopped)
    assert torch.equal(res.steps, torch.where(stopped, first, torch.full_like(first, n_iter)))
    for b in range(x.shape[0]):
        want = ref.trace["iterates"][first[b], b] if stopped[b] else ref.x[b]
        torch.testing.assert_close(res.x[b], want, **TOL)  # frozen there / unchanged
    with torch.no_grad():
        torch.testing.assert_close(res.aux, clf(res.x), **TOL)
    # only active rows are evaluated: x₀ plus one evaluation per iteration each row ran
    assert counted.rows == int((res.steps + 1).sum()) < x.shape[0] * (n_iter + 1)


def test_default_loops_report_full_steps_and_record_excludes_stop():
    clf, x, target = _setup()
    res = Fn.afw(x, make_loss_grad(clf, target), 1.0, 1.5, 5)
    assert res.steps.tolist() == [5] * 8 and not res.stopped.any()
    with pytest.raises(ValueError, match="record"):
        Fn.apgd(x, make_loss_grad(clf, target), 1.0, "l2", 5, record=True, stop=make_stop(target))


METHODS = {
    "SparseAFW": lambda es: SparseAFW(eps=1.0, steps=30, early_stop=es),
    "SparseAFW_restarts": lambda es: SparseAFW(eps=0.8, steps=10, restarts=3, early_stop=es),
    "PGD": lambda es: PGD(eps=0.8, steps=20, early_stop=es),
    "PGD_last": lambda es: PGD(eps=0.8, steps=20, keep_best=False, early_stop=es),
    "APGD": lambda es: APGD(eps=0.8, steps=30, early_stop=es),
    "APGD_l1": lambda es: APGD(eps=2.5, norm="l1", steps=30, early_stop=es),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_method_early_stop(name):
    clf, x, target = _setup()
    off, on = Counting(clf), Counting(clf)
    with torch.no_grad():
        pred = clf(x)
    ref = METHODS[name](False)(x, target, off, pred=pred)
    res = METHODS[name](True)(x, target, on, pred=pred)
    full = ref.steps[0]
    assert (ref.steps == full).all()  # the default runs everything
    stopped = res.steps < full
    assert stopped.any() and on.rows < off.rows  # some samples stop, and cost less
    with torch.no_grad():
        out = clf(res.x_cf)
    torch.testing.assert_close(res.pred_cf, out, **TOL)
    assert torch.equal(res.success, reached(out, target))
    assert res.success[stopped].all()  # the returned image of a stopped sample reaches the target
    # rows that never stop follow the reference's trajectory exactly (other rows' freezing does not matter)
    torch.testing.assert_close(res.x_cf[~res.success], ref.x_cf[~res.success], **TOL)
    # a sample's outcome does not depend on the rest of the batch
    for b in (int(stopped.nonzero()[0]), int((~stopped).nonzero()[0]) if (~stopped).any() else 0):
        one = METHODS[name](True)(x[b:b + 1], target.select(torch.tensor([b])), clf, index=torch.tensor([b]))
        torch.testing.assert_close(one.x_cf[0], res.x_cf[b], **TOL)
        assert one.steps[0] == res.steps[b]


def test_regression_target_stops_within_tolerance():
    reg = LinearClassifier(num_classes=1, size=4, seed=4).double()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        y0 = reg(x)[:, 0]
    target = RegressionTarget((y0 + 1.0).float(), tolerance=0.3)
    res = SparseAFW(eps=2.0, steps=30, early_stop=True)(x, target, reg)
    assert (res.steps < 30).all() and res.success.all()
    with torch.no_grad():
        err = (reg(res.x_cf)[:, 0] - target.value.double()).abs()
    assert (err <= 0.3).all()
    ref = SparseAFW(eps=2.0, steps=30)(x, target, reg)  # the reference keeps going to |f − y*| ≈ 0
    assert (ref.extras["loss"] >= res.extras["loss"]).all()


def _dvce(early_stop: bool, robust=None, **kw) -> DVCE:
    return DVCE(GaussianDenoiser(0.0, 0.5, size=4).double(), robust, timestep_respacing="20",
                skip_timesteps=6, classifier_lambda=1.0, distance_lambda=0.1, early_stop=early_stop, **kw)


def _dvce_setup():
    clf = LinearClassifier(num_classes=4, size=4, seed=2).double()
    with torch.no_grad():
        clf.fc.weight.mul_(0.5)
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    with torch.no_grad():
        target = ClassTarget(clf(x).topk(2, 1).indices[:, 1], 0.6)
    return clf, x, target


def test_dvce_early_stop_freezes_at_the_first_reaching_x0():
    clf, x, target = _dvce_setup()
    ref_m, m = _dvce(False), _dvce(True)
    k = m.num_reverse_steps
    x0s: dict[int, torch.Tensor] = {}
    guidance = ref_m.guidance

    def recording(xt, t, *args):
        g, out, theta = guidance(xt, t, *args)
        x0s[t] = out.pred_x0.detach().clone()
        return g, out, theta

    ref_m.guidance = recording
    ref = ref_m(x, target, clf)
    res = m(x, target, clf)
    with torch.no_grad():
        hit = torch.stack([reached(clf(from_diffusion(x0s[t])), target) for t in range(k - 1, -1, -1)])  # k, B
    stopped = hit.any(0)
    assert stopped.any() and not stopped.all()
    first = hit.to(torch.int8).argmax(0)  # 0-based step index of the first reaching x̂0
    assert torch.equal(res.steps, torch.where(stopped, first + 1, torch.full_like(first, k)))
    for b in range(x.shape[0]):
        want = from_diffusion(x0s[k - 1 - int(first[b])][b:b + 1])[0] if stopped[b] else ref.x_cf[b]
        torch.testing.assert_close(res.x_cf[b], want, **TOL)
    assert torch.equal(res.success, stopped) and torch.equal(ref.steps, torch.full_like(ref.steps, k))
    # the denoiser runs on unfinished samples only
    assert sum(xt.shape[0] for xt, _ in m.denoiser.inputs) == int(res.steps.sum()) < x.shape[0] * k
    # a sample's outcome does not depend on the rest of the batch
    for b in (int(stopped.nonzero()[0]), int((~stopped).nonzero()[0])):
        one = _dvce(True)(x[b:b + 1], target.select(torch.tensor([b])), clf, index=torch.tensor([b]))
        torch.testing.assert_close(one.x_cf[0], res.x_cf[b], **TOL)


def test_dvce_cone_extras_average_over_the_steps_each_sample_ran():
    clf, x, target = _dvce_setup()
    robust = LinearClassifier(num_classes=4, size=4, seed=7).double()
    res = _dvce(True, robust, cone_angle=30.0)(x, target, clf)
    assert (res.steps < _dvce(False).num_reverse_steps).any()
    assert torch.isfinite(res.extras["cone_theta"]).all() and torch.isfinite(res.extras["cone_inside"]).all()


@pytest.mark.parametrize("path", ["configs/explain/svce_mnist.yaml", "configs/explain/dvce_mnist.yaml"])
def test_early_stop_is_a_config_option(path, capsys):
    import yaml

    with pytest.raises(SystemExit) as exc:
        main(["predict", "-c", path, "--model.init_args.method.init_args.early_stop=true", "--print_config"])
    assert exc.value.code in (0, None)
    method = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["method"]
    assert method["init_args"]["early_stop"] is True
