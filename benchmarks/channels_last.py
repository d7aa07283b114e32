"""Each shipped network's forward and forward + backward in the default layout and in ``torch.channels_last``.

What ``ExplainModule(channels_last=True)`` (the explained model and the oracle) and ``acceleration:
{channels_last: true}`` (a method's generative network) buy on this machine: for every network in
``checkpoints/`` (and torchvision's ResNet-18 with random weights at 224×224, the layout of the published
ImageNet classifiers), in eval mode with frozen weights, at the batch size its jobs use:

* ``forward``: one call without gradients (how the oracle and the job's scoring passes run);
* ``forward_backward``: one call and the backward to its *input* (the image, the latent or the noisy image)
  of the sum of squares of the output: what every gradient step of a method pays for that network.

The two layouts run interleaved ``--repeats`` times after one untimed warm-up of each (median and min–max
wall milliseconds); ``speedup`` is default ÷ channels_last (> 1: channels_last is faster). The channels_last
copy is :func:`cflight.models.acceleration.to_channels_last` of a deep copy, its inputs left in the default
layout (as a job passes them); ``max_rel_diff`` is the largest difference of output and input gradient over
the largest entry of the default layout's (summation order only). One thread unless ``--threads``;
``--no-heap-trim`` fixes glibc's heap thresholds as in ``pgd_vs_torchattacks.py`` (no re-faulting of the
activations, which would hit one layout or the other by chance).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/channels_last.py --no-heap-trim [--repeats 7] [--threads 1]
        [--networks mnist_classifier,mnist_ddpm] [--out benchmarks/results/channels_last.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.pgd_vs_torchattacks import no_heap_trim  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from cflight.models.acceleration import to_channels_last  # noqa: E402

# (name, checkpoint or "resnet18_random", role, batch, call): call(net, input) -> output
Call = Callable[[nn.Module, Tensor], Tensor]
_T = 500  # the diffusion step the UNets are called at (any step costs the same)


def _image(net: nn.Module, n: int) -> Tensor:
    size = net.image_size if isinstance(net.image_size, tuple) else (net.image_size,) * 2
    return torch.rand(n, net.in_channels, *size)


def _unet(net: nn.Module, x: Tensor) -> Tensor:
    return net(x, torch.full((x.shape[0],), _T))


NETWORKS: tuple[tuple[str, str, str, int, str], ...] = (  # name, file, role, batch, input kind
    ("mnist_classifier", "checkpoints/mnist_classifier.pt", "explained model", 256, "image"),
    ("mnist_robust", "checkpoints/mnist_robust.pt", "explained / robust model", 256, "image"),
    ("mnist_oracle", "checkpoints/mnist_oracle.pt", "oracle", 256, "image"),
    ("squares_regressor", "checkpoints/squares_regressor.pt", "explained model", 32, "image"),
    ("squares_oracle", "checkpoints/squares_oracle.pt", "oracle", 32, "image"),
    ("mnist_vae", "checkpoints/mnist_vae.pt", "generator (decode)", 256, "latent"),
    ("mnist_gan", "checkpoints/mnist_gan.pt", "generator (decode)", 128, "latent"),
    ("mnist_ddpm", "checkpoints/mnist_ddpm.pt", "denoiser", 64, "noisy image"),
    ("squares_ddpm", "checkpoints/squares_ddpm.pt", "denoiser", 16, "noisy image"),
    ("resnet18_random", "torchvision resnet18, random weights", "explained model (ImageNet layout)", 8,
     "image"),
)


def load(name: str, path: str) -> nn.Module:
    if name == "resnet18_random":
        import torchvision

        torch.manual_seed(0)
        net = torchvision.models.resnet18(num_classes=1000)
        net.in_channels, net.image_size = 3, (224, 224)
        return net.eval().requires_grad_(False)
    from cflight.models.registry import load_net

    return load_net(path).eval().requires_grad_(False)


def inputs_and_call(net: nn.Module, kind: str, n: int) -> tuple[Tensor, Call]:
    torch.manual_seed(1)
    if kind == "latent":
        return torch.randn(n, net.latent_dim), lambda m, z: m.decode(z)
    if kind == "noisy image":
        return torch.randn(n, net.in_channels, *_image(net, 1).shape[2:]), _unet
    return _image(net, n), lambda m, x: m(x)


def one_pass(net: nn.Module, call: Call, x: Tensor, backward: bool) -> tuple[Tensor, Tensor | None]:
    """The output and (``backward``) the gradient of its sum of squares with respect to ``x``."""
    if not backward:
        with torch.no_grad():
            return call(net, x), None
    x = x.clone().requires_grad_(True)
    out = call(net, x)
    (g,) = torch.autograd.grad(out.float().square().sum(), x)
    return out.detach(), g


def measure(net: nn.Module, call: Call, x: Tensor, backward: bool, repeats: int) -> dict:
    """Both layouts interleaved (the order alternating each repeat): milliseconds, speedup, differences."""
    fast = to_channels_last(copy.deepcopy(net))
    nets = {"default": net, "channels_last": fast}
    results = {k: one_pass(m, call, x, backward) for k, m in nets.items()}  # warm-up; the compared outputs
    times: dict[str, list[float]] = {k: [] for k in nets}
    for r in range(repeats):
        for k in (list(nets) if r % 2 == 0 else list(nets)[::-1]):
            t0 = time.perf_counter()
            one_pass(nets[k], call, x, backward)
            times[k].append(1000 * (time.perf_counter() - t0))

    def rel(a: Tensor | None, b: Tensor | None) -> float | None:
        return None if a is None else float((b - a).abs().max() / a.abs().max().clamp_min(1e-30))

    (out_a, g_a), (out_b, g_b) = results["default"], results["channels_last"]
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"ms": {k: round(v, 2) for k, v in med.items()},
            "ms_min_max": {k: [round(min(v), 2), round(max(v), 2)] for k, v in times.items()},
            "speedup": round(med["default"] / med["channels_last"], 3),
            "max_rel_diff": {"output": rel(out_a, out_b), "input_gradient": rel(g_a, g_b)}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--networks", default=",".join(n[0] for n in NETWORKS),
                    help="comma-separated subset of the network names")
    ap.add_argument("--out", default="benchmarks/results/channels_last.json")
    ap.add_argument("--no-heap-trim", action="store_true", help="fix glibc's heap thresholds (no trimming)")
    args = ap.parse_args(argv)
    chosen = [c for c in args.networks.split(",") if c]
    known = {n[0] for n in NETWORKS}
    if not chosen or set(chosen) - known:
        ap.error(f"--networks: unknown or none {sorted(set(chosen) - known)}; choose from {','.join(known)}")
    if args.no_heap_trim:
        no_heap_trim()
    torch.set_num_threads(args.threads)
    rows = []
    for name, path, role, n, kind in NETWORKS:
        if name not in chosen:
            continue
        net = load(name, path)
        x, call = inputs_and_call(net, kind, n)
        row = {"network": name, "file": path, "role": role, "batch": n, "input": kind,
               "input_shape": list(x.shape), "parameters": sum(p.numel() for p in net.parameters()),
               "forward": measure(net, call, x, False, args.repeats),
               "forward_backward": measure(net, call, x, True, args.repeats)}
        rows.append(row)
        print(json.dumps({"network": name, "forward": row["forward"]["speedup"],
                          "forward_backward": row["forward_backward"]["speedup"]}), flush=True)
    result = {**provenance(__file__, argv), "threads": args.threads, "repeats": args.repeats,
              "heap": ("glibc thresholds fixed (--no-heap-trim): no trimming, blocks <= 32 MB from the heap"
                       if args.no_heap_trim else "the C library's default"),
              "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
              "speedup": "median ms in the default layout / median ms in channels_last (> 1: channels_last "
                         "faster)",
              "networks": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
