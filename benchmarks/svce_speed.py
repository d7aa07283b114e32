"""SparseAFW (SVCE) wall time against its cost floor: the classifier's forward + backward passes.

Writes ``benchmarks/results/svce_speed.json`` with
  overhead_vs_floor = SparseAFW wall time ÷ (iterations × time of one classifier forward + backward to the
                      input at the same batch, evaluated at the method's own iterates),
plus the per-iteration cost of the exact LMO alone and images per second. SparseAFW runs and floor runs (75
passes back to back) alternate, and the medians are compared, so load from other jobs hits both alike;
``overhead_vs_floor_cpu_time`` is the same ratio in process CPU time (load-independent with ``--threads 1``). The floor is what any gradient
method pays per iteration; SVCE also evaluates its random start (76 passes for 75 iterations, so ≥ 1.013)
and runs one O(d log d) LMO per iteration. The floor is timed on the iterates the method visits (the
model's CPU cost is data dependent: on the clean MNIST images, with their exact zeros, max-pool and ReLU
run ~10 % faster); ``overhead_vs_clean_image_floor`` reports the ratio against passes on the clean batch. Model: the shipped MNIST CNN (``checkpoints/mnist_classifier.pt``,
random weights if absent — speed does not depend on them), temperature-wrapped as in the paper; images: the
first ``--n`` MNIST test images (random images if MNIST is not available); target: the second most likely class.

    .venv/bin/python benchmarks/svce_speed.py [--n 64] [--steps 75] [--eps 1.5] [--device cpu] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from cflight.methods import SparseAFW
from cflight.methods import functional as Fn
from cflight.methods.svce import make_loss_grad, restart_noise
from cflight.models.classifiers import MNISTCNN, TemperatureWrapper
from cflight.models.registry import load_net
from cflight.types import ClassTarget


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps: int, dev: torch.device, warmup: int = 2) -> tuple[float, float]:
    """Median wall seconds and median process-CPU seconds of ``fn()`` over ``reps`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(dev)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifier", default="checkpoints/mnist_classifier.pt")
    ap.add_argument("--n", type=int, default=64, help="batch size")
    ap.add_argument("--steps", type=int, default=75)
    ap.add_argument("--eps", type=float, default=1.5, help="l1.5 radius (ImageNet's 50 carried to 28², spec §5.2)")
    ap.add_argument("--temperature", type=float, default=0.7155761)
    ap.add_argument("--reps", type=int, default=5, help="timed SparseAFW runs (median)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/svce_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    if os.path.isfile(args.classifier):
        net, source = load_net(args.classifier, expected_kind="classifier"), args.classifier
    else:
        torch.manual_seed(0)
        net, source = MNISTCNN().eval(), "random mnist_cnn"
    model = TemperatureWrapper(net, args.temperature).to(dev).eval()
    try:
        from cflight.data import MNISTDataModule

        dm = MNISTDataModule(root="data", batch_size=args.n, predict_limit=args.n, morphometrics=False)
        dm.setup("predict")
        x, images = next(iter(dm.predict_dataloader()))["image"].to(dev), "MNIST test"
    except (FileNotFoundError, ImportError):
        x, images = torch.rand(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(dev), "random"
    with torch.no_grad():
        classes = model(x).topk(2, dim=1).indices[:, 1]
    target = ClassTarget(classes, 0.5)

    def fwd_bwd(z: torch.Tensor) -> None:
        z = z.clone().requires_grad_(True)
        loss = Fn.class_score(model(z), classes, "log_prob")
        torch.autograd.grad(loss.sum(), z)

    method = SparseAFW(eps=args.eps, p=1.5, steps=args.steps)
    out = method(x, target, model)  # warm-up, and the quality numbers
    # The method's own iterates (same seed and start): its unavoidable passes are evaluated at these images,
    # and the model's cost is data dependent (max-pool / ReLU branches are cheaper on MNIST's exact zeros).
    xi = restart_noise(x, method.seed, torch.arange(args.n, device=x.device), 0)
    with torch.enable_grad():
        iterates = Fn.afw(x, make_loss_grad(model, target), args.eps, 1.5, args.steps, init_dir=xi,
                          record=True).trace["iterates"][1:]

    def floor_run(at_clean: bool) -> None:  # as many passes as AFW iterations, so both see the same load
        for i in range(args.steps):
            fwd_bwd(x if at_clean else iterates[i])

    afw, floor, floor_clean = [], [], []
    for _ in range(args.reps):  # interleaved, medians: robust to other jobs on a shared machine
        afw.append(timed(lambda: method(x, target, model), 1, dev, warmup=0))
        floor.append(tuple(v / args.steps for v in timed(lambda: floor_run(False), 1, dev, warmup=0)))
        floor_clean.append(tuple(v / args.steps for v in timed(lambda: floor_run(True), 1, dev, warmup=0)))
    t_afw, c_afw = (statistics.median(v) for v in zip(*afw))
    t_floor, c_floor = (statistics.median(v) for v in zip(*floor))
    t_clean, c_clean = (statistics.median(v) for v in zip(*floor_clean))
    w = torch.randn_like(x)
    t_lmo = timed(lambda: Fn.lp_box_lmo(x, w, args.eps, 1.5), 30, dev, warmup=5)[0]

    result = {
        "method": "SparseAFW", "p": 1.5, "eps": args.eps, "steps": args.steps, "batch": args.n,
        "model": f"TemperatureWrapper({source}, T={args.temperature})", "images": images,
        "device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "afw_seconds": t_afw, "floor_fwd_bwd_seconds": t_floor, "floor_fwd_bwd_clean_seconds": t_clean,
        "lmo_seconds": t_lmo,
        "overhead_vs_floor": t_afw / (args.steps * t_floor),
        "overhead_per_rep": [a[0] / (args.steps * f[0]) for a, f in zip(afw, floor)],
        "overhead_vs_floor_cpu_time": c_afw / (args.steps * c_floor),
        "overhead_vs_clean_image_floor": t_afw / (args.steps * t_clean),
        "overhead_vs_clean_image_floor_cpu_time": c_afw / (args.steps * c_clean),
        "evaluations_per_run": args.steps + 1,
        "lmo_fraction_of_floor": t_lmo / t_floor,
        "images_per_s": args.n / t_afw,
        "success_rate": float(out.success.float().mean()),
        "mean_target_prob": float(Fn.class_probability(out.pred_cf, classes).mean()),
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
