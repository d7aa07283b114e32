"""cflight's PGD and APGD against torchattacks' on the same model, images, ε, step size and steps.

Peer baseline of issue 13 item 5. torchattacks is a benchmark-only dependency
(``.venv/bin/pip install --no-deps torchattacks==3.5.1``: its pin ``requests~=2.25.1`` conflicts with
``constraints.txt``, and it runs with the installed one);
nothing in ``cflight`` imports it. For each shipped MNIST classifier (``checkpoints/mnist_robust.pt``, a
TemperatureWrapper, and ``checkpoints/mnist_classifier.pt``), in eval mode, on the first ``--n`` MNIST test
images, and on a seeded linear model (``linear``: a network that costs almost nothing, so its timings are
each library's own per-step work; ``LINEAR_REPEATS``× the repeats, its calls taking milliseconds):

* PGD l∞ (ε 0.3, α 0.01, 20 and 40 steps) and PGD l2 (ε 2.0, α 0.25 = 2.5ε/20, 20 steps), untargeted (the
  cross-entropy of the clean prediction, torchattacks' ``labels`` = that prediction) and targeted (the second
  most likely clean class: ``log p(target)``, torchattacks' ``set_mode_targeted_by_label``), no random start
  on either side (their random starts differ in distribution, so only a deterministic start compares
  iterates). torchattacks returns the last iterate; cflight is run both ways: ``keep_best=False`` (the last
  iterate, the like-for-like algorithm whose losses are compared) and its default ``keep_best=True``.
  cflight's l2 projection is the exact one onto ball ∩ box, torchattacks' rescales then clips (a feasible
  point, not the nearest): the l2 iterates agree while the box does not cut the step.
* Targeted cases also run cflight with ``early_stop=True`` (``cflight_early_stop``): each image stops at its
  first iterate with ``p(target) ≥ 0.5``, a counterfactual's stopping rule, which torchattacks does not have.
  Not the same output (a stopped image is an earlier, closer iterate), so it stays out of the same-output
  ratios: ``early_stop_vs_torchattacks`` sets its time, success rate, mean distance to the image
  (``mean_distance``, in the case's norm, for every variant) and evaluations beside the peer's full run.
* APGD l∞ (CE, ε 0.3, 100 steps, ρ 0.75, one restart): torchattacks' ``APGD`` (public call, timed) against
  cflight's ``APGD`` (its own random start, timed). Losses are compared on the same start: torchattacks'
  ``attack_single_run`` after its seed, and ``cflight.methods.functional.apgd`` from that very start (the
  public torchattacks call returns the clean image where it fails, so its output is no best-loss iterate).

Same output: a cflight call returns the counterfactual *and* the model's output on it (``pred_cf``, from which
success follows), torchattacks the image alone; ``torchattacks_and_predict`` is torchattacks' call followed by
the one forward (no gradient) that gives its caller the same, and ``speed_vs_torchattacks_same_output`` compares
against it. ``speed_vs_torchattacks`` compares against the bare call (cflight's PGD-N then does N + 1 forwards
against torchattacks' N).

Layout (conv models only, not ``linear``): ``cflight_last_channels_last`` is cflight's last-iterate PGD on the
model with its weights in ``torch.channels_last`` (:func:`cflight.models.acceleration.to_channels_last`, what
``ExplainModule(channels_last=True)`` does; a deep copy, so the other variants keep the model as loaded), and
``torchattacks_channels_last_and_predict`` torchattacks handed that same converted copy (APGD:
``cflight_channels_last`` and the same peer). ``speed_vs_torchattacks_same_output`` sets the first against the
peer on the model as given, ``speed_same_layout`` against the peer on the same layout (how much of the gain is
the layout, not the loop); ``channels_last_speedup`` is each library's own gain from it and
``agreement_channels_last`` the losses of the two layouts (summation order only).

Loss per image: the attacked objective (CE of the clean prediction, or ``log p(target)``) of the returned
image, evaluated by one shared function. Agreement: mean and max ``|Δloss|`` and the share of images with
``|Δ| ≤ 1e-4·max(|a|, |b|) + 1e-6`` (an absolute floor for losses at 0). Success: the prediction left the
clean class (untargeted) or is the target (targeted). Evaluations: ``cflight.metrics.cost.EvaluationCounter``
on one run of each library. Timing: runs of all variants interleaved ``--repeats`` times, the order rotated
each repeat (median, min–max; beside it the process-CPU time, which one thread makes nearly independent of
other jobs on a shared machine, and the minor page faults of the call). ``extra_ms_per_step_vs_same_output``:
the median milliseconds per step a cflight variant spends beyond ``torchattacks_and_predict``.
``projection_ms_per_step``: what cflight's last-iterate PGD spends per step inside its projection onto ball ∩
box (``BallBox.project`` timed in three extra calls, apart from the ratios).

Page faults: on Linux/glibc the heap above the highest live block is given back to the system once more than
the trim threshold is free (dynamically twice the largest freed large block, here ≈ 2 × 25.7 MB of conv
activations), so whether a forward/backward pass re-faults its ~100 MB of activations depends on where
small live tensors happen to sit — up to ~25 000 faults (≈ 10 % of a pass) for either library, changing
with the history of the process. ``--no-heap-trim`` fixes glibc's thresholds (``mallopt``: no trimming,
blocks up to 32 MB from the heap) before anything runs, the same for both libraries, so that the timings
compare the algorithms.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pgd_vs_torchattacks.py [--n 256] [--repeats 3] [--threads 1]
        [--cases pgd_l2_20,pgd_l2_20_targeted] [--models checkpoints/mnist_robust.pt] [--no-heap-trim]
        [--out /tmp/pgd_vs_torchattacks.json]
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.floors import sync  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from cflight.metrics.cost import EvaluationCounter  # noqa: E402
from cflight.methods import APGD, PGD  # noqa: E402
from cflight.methods import functional as Fn  # noqa: E402
from cflight.methods.svce import make_loss_grad  # noqa: E402
from cflight.models.acceleration import to_channels_last  # noqa: E402
from cflight.types import ClassTarget  # noqa: E402

PGD_CASES = (  # (name, norm, eps, step size, steps, targeted)
    ("pgd_linf_20", "linf", 0.3, 0.01, 20, False),
    ("pgd_linf_20_targeted", "linf", 0.3, 0.01, 20, True),
    ("pgd_linf_40", "linf", 0.3, 0.01, 40, False),
    ("pgd_l2_20", "l2", 2.0, 0.25, 20, False),
    ("pgd_l2_20_targeted", "l2", 2.0, 0.25, 20, True),
)
APGD_CASE = dict(norm="linf", eps=0.3, steps=100, rho=0.75)
APGD_NAME = "apgd_linf"
LINEAR = "linear"
EARLY_STOP = "cflight_early_stop"  # targeted cases only: not the same output (see early_stop_vs_torchattacks)
CL = "_channels_last"  # suffix of the variants run on the channels_last copy of a conv model
PEER_CL = "torchattacks" + CL + "_and_predict"
MODELS = ("checkpoints/mnist_robust.pt", "checkpoints/mnist_classifier.pt", LINEAR)
LINEAR_REPEATS = 10  # × --repeats for the linear model, whose calls take milliseconds
RTOL, ATOL = 1e-4, 1e-6


# --------------------------------------------------------------------------------- shared measurements
def per_image_loss(model: nn.Module, x: Tensor, labels: Tensor, targeted: bool) -> tuple[Tensor, Tensor]:
    """``(loss [B], prediction [B])`` of images ``x``: ``log p(labels)`` if ``targeted``, else the CE of
    ``labels`` (both the quantity the attacks maximise)."""
    with torch.no_grad():
        out = model(x)
    logp = torch.log_softmax(out.double(), dim=1).gather(1, labels[:, None]).squeeze(1)
    return (logp if targeted else -logp), out.argmax(1)


def loss_agreement(a: Tensor, b: Tensor, rtol: float = RTOL, atol: float = ATOL) -> dict:
    """Per-image agreement of two ``[B]`` loss vectors: mean / max ``|a − b|``, share with
    ``|a − b| ≤ rtol·max(|a|, |b|) + atol``, and the mean difference ``a − b`` (its sign: who climbed
    higher)."""
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"loss vectors must be [B] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    d = (a - b).abs()
    close = d <= rtol * torch.maximum(a.abs(), b.abs()) + atol
    return {"mean_abs_diff": float(d.mean()), "max_abs_diff": float(d.max()),
            "share_within_tol": float(close.double().mean()),
            "mean_diff_cflight_minus_peer": float((a - b).mean()),
            "tolerance": f"|d| <= {rtol:g}*max(|a|,|b|) + {atol:g}"}


def success_rate(pred_adv: Tensor, labels: Tensor, targeted: bool) -> float:
    """Share of images whose adversarial prediction is the target (targeted) or left the clean class."""
    hit = pred_adv == labels if targeted else pred_adv != labels
    return float(hit.double().mean())


def mean_distance(adv: Tensor, x: Tensor, norm: str) -> float:
    """Mean ``‖adv − x‖`` per image in the attack's norm (``linf``, ``l2`` or ``l1``)."""
    return float(Fn.lp_norm((adv - x).double(), Fn.NORM_P[norm]).mean())


def early_stop_row(row: dict, meas: dict[str, dict[str, list]]) -> dict:
    """What a counterfactual job gains from stopping each image at its target (``EARLY_STOP``) against the
    peer's full run: speed against ``torchattacks_and_predict``, success rates, mean distances and model
    evaluations side by side (not the same output: a stopped image is an earlier, closer iterate)."""
    pair = ("torchattacks_and_predict", EARLY_STOP)
    return {"speed_vs_torchattacks_same_images": speed(meas, "wall", (EARLY_STOP,), pair[0])[EARLY_STOP],
            "success_rate": {k: row["success_rate"][k] for k in pair},
            "mean_distance": {k: row["mean_distance"][k] for k in pair},
            "evaluations_per_image": {k: row["evaluations_per_image"][k] for k in pair},
            "note": "not the same output: cflight's early_stop=True returns each image at its first iterate "
                    "with p(target) >= 0.5 (the counterfactual's stopping rule), torchattacks its last"}


def minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn: Callable[[], Tensor], device: torch.device) -> tuple[float, float, Tensor, int]:
    """``(wall s, process CPU s, output, minor page faults)`` of one call."""
    sync(device)
    f0, t0, c0 = minor_faults(), time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out, minor_faults() - f0


def summary(times: list[float], n: int, cpu: list[float] | None = None, faults: list[int] | None = None) -> dict:
    """Median wall seconds, min–max, images/s, and (given) the median process-CPU seconds (one thread: nearly
    independent of other jobs on a shared machine) and median minor page faults per call."""
    med = statistics.median(times)
    out = {"seconds": round(med, 4), "seconds_min_max": [round(min(times), 4), round(max(times), 4)],
           "images_per_s": round(n / med, 2)}
    if cpu:
        out["cpu_seconds"] = round(statistics.median(cpu), 4)
    if faults:
        out["minor_page_faults"] = int(statistics.median(faults))
    return out


def no_heap_trim() -> None:
    """Fix glibc's heap thresholds for the whole process: never give the heap top back (``M_TRIM_THRESHOLD``)
    and serve blocks up to 32 MB, glibc's largest allowed threshold, from the heap (``M_MMAP_THRESHOLD``;
    fixing one threshold stops glibc's dynamic adjustment of both)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError) as e:
        raise SystemExit(f"--no-heap-trim needs glibc's mallopt ({e}); run without it") from None
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (mallopt(m_trim_threshold, 2 ** 31 - 1) and mallopt(m_mmap_threshold, 32 * 2 ** 20)):
        raise SystemExit("--no-heap-trim: glibc's mallopt refused the thresholds; run without it")


def timed_runs(runners: dict[str, Callable[[], Tensor]], repeats: int,
               dev: torch.device) -> tuple[dict[str, dict[str, list]], dict[str, Tensor]]:
    """``repeats`` calls of every runner, interleaved (load from other jobs hits every variant alike), the
    order rotated by one each repeat (no variant always runs first, or always after the same one):
    ``({variant: {"wall", "cpu", "faults": [per call]}}, {variant: last output})``."""
    meas = {k: {"wall": [], "cpu": [], "faults": []} for k in runners}
    outs = {}
    names = list(runners)
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            wall, c, outs[k], f = timed(runners[k], dev)
            meas[k]["wall"].append(wall)
            meas[k]["cpu"].append(c)
            meas[k]["faults"].append(f)
    return meas, outs


def timing(meas: dict[str, dict[str, list]], n: int) -> dict:
    return {k: summary(v["wall"], n, v["cpu"], v["faults"]) for k, v in meas.items()}


def extra_ms_per_step(meas: dict[str, dict[str, list]], variants: tuple[str, ...], steps: int,
                      peer: str = "torchattacks_and_predict") -> dict:
    """Median wall milliseconds per step that each variant spends beyond ``peer`` (same output): on the
    linear model, where the network costs almost nothing, each library's own per-step work."""
    peer = statistics.median(meas[peer]["wall"])
    return {k: round(1000 * (statistics.median(meas[k]["wall"]) - peer) / steps, 4) for k in variants}


def projection_ms_per_step(fn: Callable[[], Tensor], steps: int, calls: int = 3) -> float:
    """Median wall milliseconds per step that one call of ``fn`` spends inside ``BallBox.project`` (the
    projection onto ball ∩ box), over ``calls`` instrumented calls run apart from the timed ones."""
    orig, spent = Fn.BallBox.project, []

    def timed_project(self: Fn.BallBox, z: Tensor) -> Tensor:
        t0 = time.perf_counter()
        out = orig(self, z)
        spent[-1] += time.perf_counter() - t0
        return out

    Fn.BallBox.project = timed_project
    try:
        for _ in range(calls):
            spent.append(0.0)
            fn()
    finally:
        Fn.BallBox.project = orig
    return round(1000 * statistics.median(spent) / max(steps, 1), 4)


def linear_model(seed: int = 0) -> nn.Module:
    """``--models linear``: a seeded ``Linear(784, 10)`` MNIST classifier, whose forward and backward cost
    almost nothing, so a call's time is the attack's own work (steps, projections, bookkeeping)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        net[1].weight.copy_(0.05 * torch.randn(10, 784, generator=g))
        net[1].bias.zero_()
    return net


def speed(meas: dict[str, dict[str, list]], key: str, variants: tuple[str, ...],
          peer: str = "torchattacks") -> dict:
    """``peer``'s median over each variant's (``key``: ``"wall"`` or ``"cpu"``): > 1 means faster."""
    peer = statistics.median(meas[peer][key])
    return {k: round(peer / statistics.median(meas[k][key]), 3) for k in variants}


def evaluations(model: nn.Module, fn: Callable[[], Tensor], n: int) -> dict:
    counter = EvaluationCounter({"model": model})
    with counter:
        fn()
    return counter.summary(num_images=n)["evaluations_per_image"]["model"]


# ------------------------------------------------------------------------------------------- the runs
def and_predict(model: nn.Module, atk: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                labels: Tensor) -> Callable[[], Tensor]:
    """torchattacks' call followed by the one forward (no gradient) its caller runs to learn what a cflight call
    returns beside the images: the model's output on them."""
    def run() -> Tensor:
        adv = atk(x, labels)
        with torch.no_grad():
            model(adv)
        return adv

    return run


def pgd_runners(model: nn.Module, x: Tensor, logits: Tensor, labels: Tensor, norm: str, eps: float,
                alpha: float, steps: int, targeted: bool,
                model_cl: nn.Module | None = None) -> dict[str, Callable[[], Tensor]]:
    """``{variant: () -> adversarial images}`` for torchattacks and cflight (last and best iterate); with
    ``model_cl`` (the channels_last copy) also both libraries' last iterate on it."""
    import torchattacks

    def peer(net: nn.Module):
        atk = (torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False) if norm == "linf"
               else torchattacks.PGDL2(net, eps=eps, alpha=alpha, steps=steps, random_start=False))
        if targeted:
            atk.set_mode_targeted_by_label(quiet=True)
        return atk

    atk = peer(model)
    target = ClassTarget(labels, 0.5)
    objective = "log_conf" if targeted else "ce"
    index = torch.arange(x.shape[0], device=x.device)

    def cflight(keep_best: bool, early_stop: bool = False, net: nn.Module = model) -> Callable[[], Tensor]:
        method = PGD(eps=eps, norm=norm, steps=steps, step_size=alpha, random_start=False,
                     objective=objective, keep_best=keep_best, early_stop=early_stop)
        return lambda: method(x, target, net, index=index, pred=logits).x_cf

    runners = {"torchattacks": lambda: atk(x, labels),
               "torchattacks_and_predict": and_predict(model, atk, x, labels),
               "cflight_last": cflight(False), "cflight_best": cflight(True)}
    if targeted:  # a counterfactual's own stopping rule: each image stops once p(target) >= 0.5
        runners[EARLY_STOP] = cflight(False, early_stop=True)
    if model_cl is not None:
        runners[PEER_CL] = and_predict(model_cl, peer(model_cl), x, labels)
        runners["cflight_last" + CL] = cflight(False, net=model_cl)
    return runners


def layout_rows(meas: dict[str, dict[str, list]], losses: dict[str, tuple[Tensor, Tensor]],
                ours: str) -> dict:
    """The channels_last figures of one case (``ours``: cflight's variant on the channels_last copy, whose
    default-layout twin is ``ours`` without the suffix)."""
    twin = ours.removesuffix(CL)
    return {"speed_same_layout": speed(meas, "wall", (ours,), PEER_CL),
            "channels_last_speedup": {"torchattacks_and_predict": speed(meas, "wall", (PEER_CL,),
                                                                        "torchattacks_and_predict")[PEER_CL],
                                      twin: speed(meas, "wall", (ours,), twin)[ours]},
            "agreement_channels_last": loss_agreement(losses[ours][0], losses[twin][0])}


def channels_last_copy(model: nn.Module) -> nn.Module | None:
    """The channels_last copy of a model with 4-D weights (``None`` for one without, e.g. ``linear``)."""
    if not any(p.ndim == 4 for p in model.parameters()):
        return None
    return to_channels_last(copy.deepcopy(model))


def counted_model(variant: str, model: nn.Module, model_cl: nn.Module | None) -> nn.Module:
    return model_cl if variant.endswith(CL) or variant == PEER_CL else model


def apgd_start(x: Tensor, eps: float, seed: int) -> Tensor:
    """torchattacks' (AutoAttack's) l∞ APGD start after its ``manual_seed(seed)``: ``x + ε·t/‖t‖_∞`` with
    ``t ~ U(−1, 1)``, clipped to the box."""
    torch.manual_seed(seed)
    t = 2 * torch.rand(x.shape).to(x.device) - 1
    return (x + eps * t / t.flatten(1).abs().amax(1).reshape(-1, 1, 1, 1)).clamp(0, 1)


def run_model(path: str, x: Tensor, repeats: int, dev: torch.device, cases=PGD_CASES,
              apgd_steps: int | None = None, load: Callable[[str], nn.Module] | None = None,
              apgd: bool = True) -> list[dict]:
    """The rows of one model: every PGD case of ``cases``, then (``apgd``) APGD l∞ (``apgd_steps``, default
    100). ``load(path)`` gives the model (default: ``load_net(path, "classifier")``)."""
    import torchattacks

    from cflight.models.registry import load_net

    default = (lambda p: linear_model()) if path == LINEAR else (lambda p: load_net(p, "classifier"))
    model = (load or default)(path).to(dev).eval().requires_grad_(False)
    model_cl = channels_last_copy(model)
    n = x.shape[0]
    with torch.no_grad():
        logits = model(x)
    top2 = logits.topk(2, dim=1).indices
    rows = []
    for name, norm, eps, alpha, steps, targeted in cases:
        labels = top2[:, 1] if targeted else top2[:, 0]
        runners = pgd_runners(model, x, logits, labels, norm, eps, alpha, steps, targeted, model_cl)
        evals = {k: evaluations(counted_model(k, model, model_cl), fn, n)  # also the untimed warm-up
                 for k, fn in runners.items()}
        meas, outs = timed_runs(runners, repeats, dev)
        losses = {k: per_image_loss(model, v, labels, targeted) for k, v in outs.items()}
        variants = ("cflight_last", "cflight_best") + (("cflight_last" + CL,) if model_cl is not None else ())
        rows.append({
            "model": path, "case": name, "norm": norm, "eps": eps, "step_size": alpha, "steps": steps,
            "targeted": targeted, "random_start": False, "n": n, "repeats": repeats,
            "timing": timing(meas, n),
            "speed_vs_torchattacks": speed(meas, "wall", variants),
            "speed_vs_torchattacks_cpu_time": speed(meas, "cpu", variants),
            "speed_vs_torchattacks_same_output": speed(meas, "wall", variants, "torchattacks_and_predict"),
            "extra_ms_per_step_vs_same_output": extra_ms_per_step(meas, variants, steps),
            "projection_ms_per_step": {"cflight_last": projection_ms_per_step(runners["cflight_last"],
                                                                               steps)},
            "agreement_last_iterate": loss_agreement(losses["cflight_last"][0], losses["torchattacks"][0]),
            "mean_loss": {k: float(v[0].mean()) for k, v in losses.items()},
            "success_rate": {k: success_rate(v[1], labels, targeted) for k, v in losses.items()},
            "mean_distance": {k: mean_distance(v, x, norm) for k, v in outs.items()},
            "evaluations_per_image": evals,
        })
        if EARLY_STOP in runners:
            rows[-1]["early_stop_vs_torchattacks"] = early_stop_row(rows[-1], meas)
        if model_cl is not None:
            rows[-1].update(layout_rows(meas, losses, "cflight_last" + CL))
        print(json.dumps({"model": path, "case": name, "speed": rows[-1]["speed_vs_torchattacks"],
                          "same_output": rows[-1]["speed_vs_torchattacks_same_output"],
                          "share_within_tol": rows[-1]["agreement_last_iterate"]["share_within_tol"]}),
              flush=True)

    if not apgd:
        return rows
    # APGD l∞, untargeted CE
    eps, steps, rho = APGD_CASE["eps"], apgd_steps or APGD_CASE["steps"], APGD_CASE["rho"]
    labels = top2[:, 0]
    atk = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=0, loss="ce",
                            rho=rho)
    method = APGD(eps=eps, norm="linf", steps=steps, rho=rho, objective="ce", random_start=True)
    index = torch.arange(n, device=dev)
    target = ClassTarget(labels, 0.5)
    runners = {"torchattacks": lambda: atk(x, labels),
               "torchattacks_and_predict": and_predict(model, atk, x, labels),
               "cflight": lambda: method(x, target, model, index=index, pred=logits).x_cf}
    variants = ("cflight",)
    if model_cl is not None:
        atk_cl = torchattacks.APGD(model_cl, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=0,
                                   loss="ce", rho=rho)
        runners[PEER_CL] = and_predict(model_cl, atk_cl, x, labels)
        runners["cflight" + CL] = lambda: method(x, target, model_cl, index=index, pred=logits).x_cf
        variants += ("cflight" + CL,)
    evals = {k: evaluations(counted_model(k, model, model_cl), fn, n)  # also the untimed warm-up
             for k, fn in runners.items()}
    meas, outs = timed_runs(runners, repeats, dev)
    # same start on both sides, best-loss iterates compared
    torch.manual_seed(atk.seed)
    x_best_peer = atk.attack_single_run(x, labels)[0]
    res = Fn.apgd(x, make_loss_grad(model, target, "ce", logits), eps, "linf", steps, rho,
                  x_init=apgd_start(x, eps, atk.seed))
    l_peer = per_image_loss(model, x_best_peer, labels, False)
    l_cf = per_image_loss(model, res.x, labels, False)
    public = {k: per_image_loss(model, v, labels, False) for k, v in outs.items()}
    rows.append({
        "model": path, "case": f"apgd_linf_{steps}", "norm": "linf", "eps": eps, "steps": steps, "rho": rho,
        "targeted": False, "loss": "ce", "n": n, "repeats": repeats,
        "timing": timing(meas, n),
        "speed_vs_torchattacks": speed(meas, "wall", variants),
        "speed_vs_torchattacks_cpu_time": speed(meas, "cpu", variants),
        "speed_vs_torchattacks_same_output": speed(meas, "wall", variants, "torchattacks_and_predict"),
        "extra_ms_per_step_vs_same_output": extra_ms_per_step(meas, variants, steps),
        "agreement_best_iterate_same_start": loss_agreement(l_cf[0], l_peer[0]),
        "mean_loss_same_start": {"torchattacks": float(l_peer[0].mean()), "cflight": float(l_cf[0].mean())},
        "success_rate_same_start": {"torchattacks": success_rate(l_peer[1], labels, False),
                                    "cflight": success_rate(l_cf[1], labels, False)},
        "success_rate_public_call": {k: success_rate(v[1], labels, False) for k, v in public.items()},
        "evaluations_per_image": evals,
    })
    if model_cl is not None:  # the public calls' losses (their random starts are seeded alike per layout)
        rows[-1].update(layout_rows(meas, public, "cflight" + CL))
    print(json.dumps({"model": path, "case": rows[-1]["case"], "speed": rows[-1]["speed_vs_torchattacks"],
                      "share_within_tol": rows[-1]["agreement_best_iterate_same_start"]["share_within_tol"]}),
          flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="MNIST test images (one batch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/pgd_vs_torchattacks.json")
    names = [c[0] for c in PGD_CASES] + [APGD_NAME]
    ap.add_argument("--cases", default=",".join(names), help=f"comma-separated subset of {','.join(names)}")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated checkpoints, or {LINEAR!r} (a seeded linear model: the attacks' "
                         "own cost)")
    ap.add_argument("--no-heap-trim", action="store_true",
                    help="fix glibc's heap thresholds (no trimming) for both libraries: see the module docstring")
    args = ap.parse_args(argv)
    chosen = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(chosen) - set(names))
    if unknown or not chosen:
        ap.error(f"--cases: unknown or no case {unknown}; choose from {','.join(names)}")
    models = [m for m in args.models.split(",") if m]
    if not models:
        ap.error("--models: give at least one checkpoint")
    if args.no_heap_trim:
        no_heap_trim()
    import torchattacks

    from cflight.data import MNISTDataModule

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dm = MNISTDataModule(root="data", batch_size=args.n, predict_limit=args.n, morphometrics=False)
    dm.setup("predict")
    x = next(iter(dm.predict_dataloader()))["image"].to(dev)
    load = os.getloadavg()
    cases = tuple(c for c in PGD_CASES if c[0] in chosen)
    runs = [r for path in models
            for r in run_model(path, x, args.repeats * (LINEAR_REPEATS if path == LINEAR else 1), dev, cases,
                               apgd=APGD_NAME in chosen)]
    result = {
        **provenance(__file__, argv, dev), "torchattacks": torchattacks.__version__,
        "images": f"first {args.n} MNIST test",
        "heap": ("glibc thresholds fixed (--no-heap-trim): no trimming, blocks <= 32 MB from the heap"
                 if args.no_heap_trim else "the C library's default (glibc: dynamic trim / mmap thresholds)"),
        "load_average_1_5_15": {"start": [round(v, 2) for v in load],
                                "end": [round(v, 2) for v in os.getloadavg()]},
        "timing": "wall seconds of one full attack call on the batch, variants interleaved; median and "
                  "min-max over the repeats, after one untimed warm-up call of each (the one whose "
                  "evaluations are counted)",
        "runs": runs,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
