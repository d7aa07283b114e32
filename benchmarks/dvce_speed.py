"""DVCE on the shipped networks: wall time against its replayed cost floor, and one denoiser pass per step
against the reference's two-pass form (spec dvce_svce §2.3 "cost per step").

Settings are those of ``configs/explain/dvce_mnist.yaml`` (shipped DDPM ``checkpoints/mnist_ddpm.pt``,
learned variance, respacing 100, skip 50 → 50 reverse steps, λ_c 0.2, λ_d 0.15, l1 distance through the
denoiser; the robust CNN ``checkpoints/mnist_robust.pt`` is the explained model and guides alone) and, under
``cone``, of ``configs/explain/dvce_cone_mnist.yaml`` (explained: the plain CNN; the robust CNN in a 30° cone).
Inputs: the first ``--n`` MNIST test images, target the second most likely class.

Counted with hooks, per network (denoiser, explained model, robust model): rows through forward passes and
rows of backward passes through its output, per image. Each reverse step differentiates every guiding
network through the denoiser's x̂0, so the floor (``benchmarks/floors.py``) is, per step, one forward of the denoiser,
one forward and backward of every guiding network and as many backward passes through the denoiser as the
step takes (DVCE normalises each guidance term on its own, so the class term, the cone's second model and the
distance through the denoiser each need one), at the batch the run used, timed in isolation and summed over
the run's own steps. The previous version of this file counted denoiser forwards only and used
a randomly initialised UNet of another size. Both forms and the floor are timed ``--repeats`` times,
interleaved (median; min/max beside); ``*_cpu_time`` ratios use process CPU time (robust to other jobs with
one thread).

    .venv/bin/python benchmarks/dvce_speed.py [--n 8] [--repeats 3] [--device cpu] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.floors import ActiveRows, median_times, replay_floor  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from cflight.data import MNISTDataModule  # noqa: E402
from cflight.methods import DVCE  # noqa: E402
from cflight.models.registry import load_net  # noqa: E402
from cflight.types import ClassTarget  # noqa: E402

SETTINGS = dict(timestep_respacing="100", skip_timesteps=50, classifier_lambda=0.2, distance_lambda=0.15,
                distance_p=1.0, denoise_dist_input=True, aug_num=1, seed=1)


def counted(nets: dict[str, torch.nn.Module], run) -> tuple[object, dict[str, list[tuple[int, bool]]]]:
    """Run ``run()`` with every network's calls recorded: ``(output, {name: [(rows, backward), ...]})``."""
    rows = {name: ActiveRows(net) for name, net in nets.items()}
    out = run()
    calls = {name: r.calls for name, r in rows.items()}
    for r in rows.values():
        r.remove()
    return out, calls


def per_image(calls: dict[str, list[tuple[int, int]]], n: int) -> dict:
    return {name: {"forward": sum(r for r, _ in c) / n, "backward": sum(r * b for r, b in c) / n}
            for name, c in calls.items()}


def one_pass(denoiser, guides, x, diffusion_t: int):
    """``one_pass(rows, backwards)``: one differentiated reverse step's network work at ``rows`` images —
    the denoiser's forward, a forward of every guide on its output, and ``backwards`` separate backward
    passes to the input through the denoiser (one per guide, the last one the distance term's; each guide's
    own backward is part of its pass)."""
    def run(rows: int, backwards: int) -> None:
        u = (2 * x[:rows] - 1).clone().requires_grad_(backwards > 0)
        t = torch.full((rows,), diffusion_t, device=x.device)
        with torch.set_grad_enabled(backwards > 0):
            out = denoiser(u, t)
            image = (out[:, : x.shape[1]] + 1) / 2
            objectives = [g(image).logsumexp(1).sum() for g in guides]
            objectives += [image.sub(x[:rows]).abs().sum()] * (backwards - len(objectives))
            for k, obj in enumerate(objectives[:backwards]):
                torch.autograd.grad(obj, u, retain_graph=k < backwards - 1)
    return run


def measure(name: str, x, target, model, robust, denoiser, repeats: int, dev) -> dict:
    nets = {"denoiser": denoiser, "model": model, **({"robust_model": robust} if robust is not None else {})}
    methods = {form: DVCE(denoiser, robust, two_pass=form == "two_pass", **SETTINGS).to(dev)
               for form in ("one_pass", "two_pass")}
    index = torch.arange(x.shape[0], device=dev)
    w = min(2, x.shape[0])
    methods["one_pass"](x[:w], target.select(torch.arange(w)), model, index=index[:w])  # warm-up
    runs = {form: counted(nets, lambda m=m: m(x, target, model, index=index)) for form, m in methods.items()}
    steps = methods["one_pass"].num_reverse_steps
    # the floor: one differentiated pass of the denoiser and of every guide per step, at the run's batches
    step_calls = [c for c in runs["one_pass"][1]["denoiser"] if c[1]]  # (rows, backwards) of each step
    guides = [model] + ([robust] if robust is not None else [])
    floor_fn = one_pass(denoiser, guides, x, 500)
    times = {k: [] for k in ("one_pass", "two_pass", "floor")}
    cpu = {k: [] for k in times}
    for _ in range(repeats):  # interleaved, so load from other jobs hits all three alike
        for form, m in methods.items():
            wall, c = median_times(lambda m=m: m(x, target, model, index=index), 1, dev, warmup=0)
            times[form].append(wall)
            cpu[form].append(c)
        replay = replay_floor(step_calls, floor_fn, 1, dev)
        times["floor"].append(replay["seconds"])
        cpu["floor"].append(replay["cpu_seconds"])
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    one, two = runs["one_pass"][0], runs["two_pass"][0]
    return {
        "setting": name, "reverse_steps": steps, "n": x.shape[0],
        "evaluations_per_image_one_pass": per_image(runs["one_pass"][1], x.shape[0]),
        "evaluations_per_image_two_pass": per_image(runs["two_pass"][1], x.shape[0]),
        "seconds": {k: round(v, 4) for k, v in med.items()},
        "seconds_min_max": {k: [round(min(v), 4), round(max(v), 4)] for k, v in times.items()},
        "overhead_vs_floor": round(med["one_pass"] / med["floor"], 4),
        "overhead_vs_floor_cpu_time": round(med_cpu["one_pass"] / med_cpu["floor"], 4),
        "two_pass_overhead_vs_floor": round(med["two_pass"] / med["floor"], 4),
        "speedup_vs_two_pass": round(med["two_pass"] / med["one_pass"], 4),
        "ms_per_step_one_pass": round(1e3 * med["one_pass"] / steps, 3),
        "max_abs_diff_one_vs_two_pass": float((one.x_cf - two.x_cf).abs().max()),
        "validity": float(one.success.float().mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--denoiser", default="checkpoints/mnist_ddpm.pt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--respacing", default=SETTINGS["timestep_respacing"])
    ap.add_argument("--skip", type=int, default=SETTINGS["skip_timesteps"])
    ap.add_argument("--skip-cone", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/dvce_speed.json")
    args = ap.parse_args(argv)
    SETTINGS.update(timestep_respacing=args.respacing, skip_timesteps=args.skip)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dm = MNISTDataModule(root="data", batch_size=args.n, predict_limit=args.n, morphometrics=False)
    dm.setup("predict")
    x = next(iter(dm.predict_dataloader()))["image"].to(dev)
    denoiser = load_net(args.denoiser, "denoiser").to(dev).requires_grad_(False)
    robust = load_net("checkpoints/mnist_robust.pt", "classifier").to(dev).requires_grad_(False)
    plain = load_net("checkpoints/mnist_classifier.pt", "classifier").to(dev).requires_grad_(False)

    def second(model) -> ClassTarget:
        with torch.no_grad():
            return ClassTarget(model(x).argsort(1, descending=True)[:, 1], 0.5)

    result = {**provenance(__file__, argv, dev), "denoiser": args.denoiser,
              "denoiser_params": sum(p.numel() for p in denoiser.parameters()), "settings": SETTINGS,
              "floor": "per reverse step, one denoiser forward, one forward+backward of every guiding network "
                       "and one denoiser backward per normalised guidance term, at the run's batch, timed in "
                       "isolation, summed over the run's steps",
              "previous": {"note": "counted denoiser forwards only (no backward), random 1.7M-parameter UNet, "
                                   "respacing 50/skip 25", "ms_per_step_one_pass": 183.31,
                           "speedup_vs_two_pass": 1.3051}}
    result["guided"] = measure("dvce_mnist.yaml: robust CNN explained, guides alone", x, second(robust), robust,
                               None, denoiser, args.repeats, dev)
    if not args.skip_cone:
        result["cone"] = measure("dvce_cone_mnist.yaml: plain CNN explained, robust CNN in a 30° cone", x,
                                 second(plain), plain, robust, denoiser, args.repeats, dev)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    for key in ("guided", "cone"):
        if key in result:
            r = result[key]
            print(key, json.dumps({k: r[k] for k in ("overhead_vs_floor", "overhead_vs_floor_cpu_time",
                                                     "speedup_vs_two_pass", "max_abs_diff_one_vs_two_pass")}))
    return result


if __name__ == "__main__":
    main()
