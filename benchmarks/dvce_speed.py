"""DVCE with one denoiser forward per step vs the reference's two-pass form (spec §2.3 "cost per step").

Both runs use the same seed and inputs; the script checks that they give the same counterfactuals and
counts the UNet forwards with a forward hook. Writes ``benchmarks/results/dvce_speed.json``:
  unet_forwards_per_step_one_pass, unet_forwards_per_step_two_pass, speedup_vs_two_pass, max_abs_diff
(headline: the reference's default guidance — explained model alone, distance through the denoiser), plus
the same numbers for a cone run with augmentations under ``cone``.

The denoiser is the MNIST config's UNet (``configs/train/ddpm_mnist.yaml``, 1.7 M parameters, learned
variance) with random weights, its zero-initialised output layers drawn small so ε̂ depends on the input
(the cost of a step does not depend on the weights); the explained model is the shipped MNIST CNN
(``checkpoints/mnist_classifier.pt``) on MNIST test images when available. Timings: interleaved repeats;
the speedup is the ratio of the fastest runs (timeit's convention: on a shared machine the minimum is the
least disturbed measurement), the ratio of medians is reported beside it. One thread by default: on the
shared 2-core machine two threads suffer badly from oversubscription.

    .venv/bin/python benchmarks/dvce_speed.py [--n 8] [--respacing 50] [--skip 25] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from cflight.methods import DVCE
from cflight.models.classifiers import MNISTCNN
from cflight.models.generative.unet import UNet
from cflight.models.registry import load_net
from cflight.types import ClassTarget


def make_unet(seed: int) -> UNet:
    torch.manual_seed(seed)
    net = UNet(in_channels=1, image_size=28, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
               attention_resolutions=(7,), head_channels=32, learn_sigma=True)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().max() == 0:  # zero-initialised output / residual / attention projections
                p.normal_(0, 0.02)
    return net.eval().requires_grad_(False)


def load_inputs(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module, str]:
    try:
        from cflight.data import MNISTDataModule

        dm = MNISTDataModule(root="data", batch_size=n, predict_limit=n, morphometrics=False)
        dm.setup("predict")
        batch = next(iter(dm.predict_dataloader()))
        clf = load_net("checkpoints/mnist_classifier.pt", "classifier")
        x, index, source = batch["image"], batch["index"], "MNIST test + shipped mnist_classifier.pt"
    except (FileNotFoundError, ValueError, OSError):
        torch.manual_seed(1)
        x, index, clf, source = torch.rand(n, 1, 28, 28), torch.arange(n), MNISTCNN(), "random images + random CNN"
    return x.to(device), index.to(device), clf.to(device).eval().requires_grad_(False), source


def timed(method: DVCE, x, target, clf, index, counter: list[int]) -> tuple[float, int, torch.Tensor, dict]:
    counter[0] = 0
    t0 = time.perf_counter()
    out = method(x, target, clf, index=index)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, counter[0], out.x_cf, out.extras


def compare(net, robust, x, target, clf, index, counter, repeats: int, **kwargs) -> dict:
    one = DVCE(net, robust, two_pass=False, **kwargs).to(x.device)
    two = DVCE(net, robust, two_pass=True, **kwargs).to(x.device)
    k = one.num_reverse_steps
    timed(one, x[:2], target.select(torch.arange(2)), clf, index[:2], counter)  # warm-up
    times = {"one": [], "two": []}
    for _ in range(repeats):  # interleaved, so load changes on a shared machine hit both
        t1, f1, x1, e1 = timed(one, x, target, clf, index, counter)
        t2, f2, x2, e2 = timed(two, x, target, clf, index, counter)
        times["one"].append(t1)
        times["two"].append(t2)
    one_s, two_s = min(times["one"]), min(times["two"])
    result = {
        "reverse_steps": k,
        "unet_forwards_per_step_one_pass": f1 / k, "unet_forwards_per_step_two_pass": f2 / k,
        "seconds_one_pass": round(one_s, 4), "seconds_two_pass": round(two_s, 4),
        "ms_per_step_one_pass": round(1e3 * one_s / k, 3), "ms_per_step_two_pass": round(1e3 * two_s / k, 3),
        "speedup_vs_two_pass": round(two_s / one_s, 4),
        "speedup_vs_two_pass_median": round(statistics.median(times["two"]) / statistics.median(times["one"]), 4),
        "max_abs_diff": float((x1 - x2).abs().max()),
        "all_seconds_one_pass": [round(t, 4) for t in times["one"]],
        "all_seconds_two_pass": [round(t, 4) for t in times["two"]],
    }
    if "cone_theta" in e1:
        result["max_abs_diff_cone_theta"] = float((e1["cone_theta"] - e2["cone_theta"]).abs().max())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--respacing", default="50")
    ap.add_argument("--skip", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--aug-num", type=int, default=4, help="augmented copies in the cone run")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/dvce_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    x, index, clf, source = load_inputs(args.n, dev)
    net = make_unet(0).to(dev)
    robust = MNISTCNN().eval().requires_grad_(False).to(dev)  # a second, differently behaving guide for the cone
    counter = [0]
    net.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    with torch.no_grad():
        target = ClassTarget(clf(x).argsort(1, descending=True)[:, 1], 0.5)  # the second most likely class
    common = dict(timestep_respacing=args.respacing, skip_timesteps=args.skip)
    headline = compare(net, None, x, target, clf, index, counter, args.repeats, **common)
    cone = compare(net, robust, x, target, clf, index, counter, args.repeats, aug_num=args.aug_num, **common)

    result = {
        "n": args.n, "device": str(dev), "threads": args.threads,
        "platform": platform.processor() or platform.machine(), "torch": torch.__version__,
        "inputs": source, "unet_params": sum(p.numel() for p in net.parameters()),
        "respacing": args.respacing, "skip_timesteps": args.skip,
        "setting": "explained model guides alone, l1 distance through the denoiser (reference defaults)",
        **headline,
        "cone": {"setting": f"robust model in a 30° cone, aug_num={args.aug_num}", **cone},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    keys = ("unet_forwards_per_step_one_pass", "unet_forwards_per_step_two_pass", "speedup_vs_two_pass", "max_abs_diff")
    print(json.dumps({k: result[k] for k in keys}), "| cone:", json.dumps({k: cone[k] for k in keys}))


if __name__ == "__main__":
    main()
