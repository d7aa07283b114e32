"""Ground truth on shapes: do global explanations of latent counterfactuals name the factor that matters?

On the procedural ``shapes`` dataset every image's generative factors are known, so an explanation can be
checked against the truth (issue 3, item 5; issue 13, item 6):

(a) a classifier whose label is the shape alone is explained by Counterfactual Attacks (each image toward its
    second most likely shape, p > 0.9) through a VAE and through a GAN; the global explanation per target
    shape should rank a shape descriptor first (``shape_rank_vae`` / ``shape_rank_gan``: the worst target's
    best-ranked shape descriptor, 1 = top);
(b) a classifier trained where a white corner cross accompanies 90 % of the circles (class 0) and no other
    shape is explained by counterfactuals into class 0; the marker should be in the top 2
    (``marker_rank_vae`` / ``marker_rank_gan``). How much the classifier relies on the marker is measured
    directly (the share of marked squares and triangles it calls circles), and the same classifier trained
    longer, when it relies on the marker less, is run as a control.

Parts (a) and (b) run for several seeds (default 0, 1, 2: the classifiers' training seed and the attack's
seed); what does not depend on the seed (the VAE, the GAN, the descriptor CNN and the latent heads) is
trained once. Each seed's ranks are reported, with their minimum, maximum and median.

``--matrix`` (its own run, its own time) adds the matrix of ``benchmarks/shapes_matrix.py``: true causes
(shape, colour, size) x planted shortcuts (the base marker, another corner, another marker shape, another
class, a lower frequency) x methods (Counterfactual Attacks with the VAE and the GAN, SVCE, PGD, APGD, DVCE, and
SVCE and APGD on each cell's robust model), with
each classifier's measured reliance on its shortcut, radii calibrated to the shortcut's own norm and the change
mass inside the shortcut's pixels beside the descriptor ranks.

Every piece is trained with the project's configs (``configs/train/shapes_*.yaml``, through ``CflightCLI``
with ``run=False``) and the counterfactuals of (a) and (b) come from
``configs/explain/latent_attack_shapes*.yaml`` (``ExplainModule`` + ``LatentAttack``; the GAN through
``GANManifold`` projection started from its encoder). The generative and descriptor models see a marker on
half of the images independently of the shape (a cross or a square patch, top left or bottom right, drawn
uniformly), so a marker in a counterfactual can only come from the explained model. Counterfactuals are
attributed in image space by a descriptor CNN trained on the ground-truth factors (the generator's
reconstruction against the counterfactual) and, for reference, by linear heads on each generator's latent.
Only valid counterfactuals of images whose reconstruction the classifier still assigns to the original's class
enter the global explanation (``GlobalAttribution``, per target class: signed means over several targets would
cancel). Changes are ranked after dividing each descriptor by its ground-truth standard deviation over the
training data, so the continuous factors (size, position, ...) and the probabilities of binary ones share one
scale; the unscaled ranking is reported beside it.

Tasks run on ``--workers`` processes (default 2, one torch thread each), each as soon as what it needs is
trained: the GAN (about half an hour on one core) trains while the other worker does everything else.

    .venv/bin/python benchmarks/shapes_ground_truth.py            # (a) + (b), 3 seeds: ~40 min on 2 cores
    .venv/bin/python benchmarks/shapes_ground_truth.py --matrix   # and the matrix (shapes_matrix.json)
    .venv/bin/python benchmarks/shapes_ground_truth.py --matrix-only --matrix-methods dvce
                                                    # DVCE's column alone (shapes_matrix_dvce.json)
    .venv/bin/python benchmarks/shapes_ground_truth.py --matrix-only --matrix-methods svce_robust apgd_robust
                                                    # SVCE / APGD on the cells' robust models
    .venv/bin/python benchmarks/shapes_ground_truth.py --matrix-only --matrix-seeds 0 1 2 --matrix-methods latent_vae \
        svce pgd apgd svce_robust apgd_robust       # those columns for 3 seeds, each seed's and the spread
    .venv/bin/python benchmarks/shapes_ground_truth.py --quick    # smoke run, ~2 min
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import yaml  # noqa: E402
from torch import Tensor  # noqa: E402

from benchmarks.provenance import provenance  # noqa: E402
from benchmarks.task_pool import Task, quiet_process, run_tasks  # noqa: E402
from cflight.attribution import GlobalAttribution, latent_attribution, summarise  # noqa: E402
from cflight.cli import CflightCLI  # noqa: E402
from cflight.data import ShapesDataset  # noqa: E402
from cflight.methods import functional as Fn  # noqa: E402
from cflight.models.registry import load_net  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {name: ROOT / f"configs/train/shapes_{name}.yaml"
         for name in ("classifier", "classifier_marker", "vae", "gan", "descriptors", "descriptors_latent", "ddpm",
                      "robust")}
EXPLAIN = {"shape": ROOT / "configs/explain/latent_attack_shapes.yaml",
           "marker": ROOT / "configs/explain/latent_attack_shapes_marker.yaml"}
QUIET = ["--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false", "--trainer.enable_checkpointing=false",
         "--trainer.accelerator=cpu"]


@dataclasses.dataclass
class Settings:
    """What the run trains and explains; ``None`` keeps the config's value."""

    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    epochs: dict[str, int] = dataclasses.field(default_factory=dict)
    n_explain: int | None = None
    max_steps: int | None = None
    projection_steps: int = 200
    std_samples: int = 4000
    control_epochs: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)
    # the matrix (benchmarks/shapes_matrix.py): images explained per cell and method, and the radius of the
    # pixel-space methods as a multiple of the shortcut's own norm (1.5: room to paint the whole marker)
    matrix_n_explain: int = 150
    matrix_radius_factor: float = 1.5
    matrix_cells: tuple[str, ...] | None = None  # None: every cell
    matrix_seeds: tuple[int, ...] = (0,)  # the cells' classifiers (and robust models) and the methods, per seed
    matrix_methods: tuple[str, ...] = ("latent_vae", "latent_gan", "svce", "pgd", "apgd", "dvce", "svce_robust",
                                       "apgd_robust")
    # DVCE in the matrix: the shapes DDPM's training steps (None: the config's) and the respaced chain
    # (mnist_all_methods.yaml's: 100 respaced steps, the first 50 skipped)
    ddpm_steps: int | None = None
    dvce_respacing: str = "100"
    dvce_skip: int = 50
    # development only: keep checkpoints already in the work directory (a published result never does)
    reuse_checkpoints: bool = False


QUICK = Settings(n_train=256, n_val=64, n_test=64, epochs={k: 1 for k in TRAIN if k != "ddpm"}, n_explain=24,
                 max_steps=20, projection_steps=3, std_samples=256, control_epochs=1, seeds=(0, 1),
                 matrix_n_explain=12, matrix_cells=("shape/base", "size/corner"), ddpm_steps=10,
                 dvce_respacing="10", dvce_skip=5)


def instantiate(config: Path, overrides: list[str], workdir: Path) -> CflightCLI:
    """A config's trainer, model and data, built by the ``cflight`` CLI without running a subcommand."""
    spec = yaml.safe_load(config.read_text())
    spec.pop("return_predictions", None)  # a ``predict`` subcommand option, unknown without a subcommand
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / config.name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return CflightCLI(args=["-c", str(path), *QUIET, f"--trainer.default_root_dir={workdir}", *overrides],
                      run=False)


def data_overrides(s: Settings, n_explain: bool = False) -> list[str]:
    """CLI overrides of the data sizes (and of the number of explained images)."""
    sizes = {"n_train": s.n_train, "n_val": s.n_val, "n_test": s.n_test}
    if n_explain:
        sizes["predict_limit"] = s.n_explain
    return [f"--data.init_args.{k}={v}" for k, v in sizes.items() if v is not None]


def fit(name: str, s: Settings, workdir: Path, extra: Sequence[str] = (), tag: str | None = None,
        seed: int | None = None) -> dict[str, Any]:
    """Train ``configs/train/shapes_<name>.yaml`` (``seed``: its ``seed_everything``; ``None``: the config's);
    returns the checkpoint, validation metrics and seconds."""
    tag = tag or name
    if seed is not None:
        extra = [f"--seed_everything={seed}", *extra]
    ckpt = workdir / f"{tag}.ckpt"
    meta = workdir / f"{tag}.json"
    if s.reuse_checkpoints and ckpt.is_file() and meta.is_file():
        return json.loads(meta.read_text())
    t0 = time.perf_counter()
    epochs = [f"--trainer.max_epochs={s.epochs[name]}"] if name in s.epochs else []
    if name == "ddpm" and s.ddpm_steps is not None:  # trained by steps, not epochs
        epochs = [f"--trainer.max_steps={s.ddpm_steps}"]
    cli = instantiate(TRAIN[name], [*epochs, *data_overrides(s), *extra], workdir / tag)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.save_checkpoint(ckpt, weights_only=True)
    metrics = {k: round(float(v), 4) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    info = {"checkpoint": str(ckpt), "epochs": cli.trainer.current_epoch, "val": metrics,
            "seconds": round(time.perf_counter() - t0, 1)}
    meta.write_text(json.dumps(info))
    return info


def explain(part: str, generator: str, paths: dict[str, str], s: Settings, workdir: Path,
            seed: int = 0) -> dict[str, Tensor]:
    """Run the explanation config of ``part`` with the VAE or the GAN (``seed``: the job's and the attack's
    seed); all rows, concatenated."""
    if generator == "vae":
        gen = paths["vae"]
    else:  # projection by optimisation, started from the GAN's encoder (the paper's projector, shortened)
        gen = (f"{{class_path: cflight.models.generative.GANManifold, init_args: {{gan: {paths['gan']}, "
               f"steps: {s.projection_steps}, n_candidates: 0}}}}")
    overrides = [f"--model.init_args.model={paths['classifier' if part == 'shape' else 'classifier_marker']}",
                 f"--model.init_args.descriptors={paths['descriptors']}",
                 f"--model.init_args.method.init_args.generator={gen}", f"--seed_everything={seed}",
                 f"--model.init_args.method.init_args.seed={seed}", *data_overrides(s, n_explain=True)]
    if s.max_steps is not None:
        overrides.append(f"--model.init_args.method.init_args.max_steps={s.max_steps}")
    cli = instantiate(EXPLAIN[part], overrides, workdir / f"explain_{part}_{generator}_seed{seed}")
    batches = cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=True)
    batches = [b for b in batches if b]  # a batch with nothing to explain returns None
    rows = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    # As the paper's MNIST analysis, keep only images whose reconstruction the classifier still assigns to the
    # original's class: elsewhere the attack starts from a different decision and its changes mean little.
    with torch.no_grad():
        rows["faithful"] = cli.model.model(rows["reconstruction"]).argmax(1) == rows["logits"].argmax(1)
    return rows


def descriptor_std(s: Settings, config: Path) -> Tensor:
    """Ground-truth standard deviation ``[K]`` of each descriptor over the descriptor models' training set."""
    init = yaml.safe_load(config.read_text())["data"]["init_args"]
    keys = ("shapes", "colours", "size_range", "label_factor", "marker_class", "marker_prob_other", "seed")
    ds = ShapesDataset(min(s.std_samples, s.n_train or init["n_train"]), split="train",
                       **{k: init[k] for k in keys if k in init})
    values = torch.stack([ds.descriptors(ds.factors(i)) for i in range(len(ds))])
    return values.double().std(0)


def global_ranking(scores: Tensor, rows: dict[str, Tensor], names: list[str],
                   class_names: list[str]) -> list[dict]:
    """Per (target, direction): every descriptor ranked by ``|S|`` over the valid counterfactuals of
    faithfully reconstructed images."""
    keep = rows["valid"] & rows["faithful"]
    metric = GlobalAttribution(len(names), len(class_names))
    if bool(keep.any()):
        metric.update(scores[keep], rows["direction"][keep], rows["logits"][keep].argmax(1),
                      rows["target_class"][keep])
    return summarise(metric.compute(), names, class_names, k=len(names))["by_target"]


def rank_of(entry: dict, prefix: str) -> int:
    """1-based rank of the best-ranked descriptor whose name starts with ``prefix``."""
    return min(i + 1 for i, (name, _) in enumerate(entry["top"]) if name.startswith(prefix))


def rank_summary(by_target: list[dict], part: str, k: int = 4) -> dict[str, Any]:
    """The ranks the benchmark checks, plus each target's top ``k`` for the record."""
    if not by_target:
        return {"rank": None, "targets": []}
    ranks = [rank_of(e, "shape_" if part == "shape" else "marker") for e in by_target]
    return {"rank": max(ranks),  # (a): the worst target's best shape descriptor; (b) has one target
            "targets": [{"target": e["target"], "n": e["n"], "rank": r,
                         "top": [[n, round(v, 4)] for n, v in e["top"][:k]]}
                        for e, r in zip(by_target, ranks)]}


def shape_reading(rows: dict[str, Tensor], descriptors: torch.nn.Module) -> float | None:
    """Fraction of the ranked counterfactuals that the descriptor CNN reads as the target shape."""
    keep = rows["valid"] & rows["faithful"]
    if not bool(keep.any()):
        return None
    shape = [i for i, n in enumerate(descriptors.names) if n.startswith("shape_")]
    with torch.no_grad():
        shape_probs = descriptors(rows["x_cf"][keep])[:, shape]
    return round(float((shape_probs.argmax(1) == rows["target_class"][keep]).float().mean()), 4)


def cf_stats(rows: dict[str, Tensor]) -> dict[str, Any]:
    """Counts, validity and cost of one explanation run (validity over faithfully reconstructed images)."""
    keep = rows["faithful"]
    l1 = Fn.l1_distance(rows["x_cf"], rows["reconstruction"])  # the change the attack made
    return {"n_explained": int(keep.numel()), "n_faithful_reconstruction": int(keep.sum()),
            "n_ranked": int((rows["valid"] & keep).sum()),
            "validity": round(float(rows["valid"][keep].float().mean()), 4) if bool(keep.any()) else None,
            "validity_all": round(float(rows["valid"].float().mean()), 4),
            "success_all": round(float(rows["success"].float().mean()), 4),
            "median_steps": float(rows["steps"][keep].float().median()) if bool(keep.any()) else None,
            "mean_l1_cf_to_reconstruction": round(float(l1.mean()), 3)}


def marker_reliance(classifier_ckpt: str, s: Settings, n: int = 300) -> float:
    """Fraction of non-circle test images (no marker) the spurious classifier calls a circle once the marker
    is drawn on them: how much the classifier relies on the marker alone."""
    init = yaml.safe_load(TRAIN["classifier_marker"].read_text())["data"]["init_args"]
    keys = ("shapes", "colours", "size_range", "marker_class", "marker_prob", "marker_prob_other", "seed")
    ds = ShapesDataset(n, split="test", **{k: init[k] for k in keys})
    factors = [f for f in map(ds.factors, range(n)) if f.shape != 0]
    marked = torch.stack([ds.render(dataclasses.replace(f, marker=True)) for f in factors])
    clf = load_net(classifier_ckpt, "classifier")
    with torch.no_grad():
        return round(float((clf(marked).argmax(1) == 0).float().mean()), 4)


def latent_dim(gen: str) -> int:
    return yaml.safe_load(TRAIN[gen].read_text())["model"]["init_args"]["net_kwargs"]["latent_dim"]


def base_explain_task(part: str, gen: str, paths: dict[str, str], s: Settings, workdir: Path, std: list[float],
                      seed: int) -> dict[str, Any]:
    """One (part, generator, seed) explanation with its ranks, and the explained classifier's marker reliance."""
    out = explain_and_rank("marker" if part == "marker_long" else part, gen, paths, s, workdir,
                           torch.tensor(std, dtype=torch.float64), seed)
    if part != "shape":
        out["marker_reliance"] = marker_reliance(paths["classifier_marker"], s)
    return out


def explain_and_rank(part: str, gen: str, paths: dict[str, str], s: Settings, workdir: Path,
                     std: Tensor, seed: int = 0) -> dict[str, Any]:
    """Counterfactuals of one (part, generator) pair, their statistics and the three rankings."""
    t0 = time.perf_counter()
    rows = explain(part, gen, paths, s, workdir, seed)
    image_descriptors = load_net(paths["descriptors"], "descriptor")
    heads = load_net(paths[f"heads_{gen}"], "descriptor")
    names = list(image_descriptors.names)
    class_names = yaml.safe_load(EXPLAIN[part].read_text())["model"]["init_args"]["class_names"]
    scores = {"image_std": rows["descriptor_delta"].double() / std,
              "image_raw": rows["descriptor_delta"].double(),
              "latent_std": latent_attribution(heads, rows["latent0"], rows["latent"]).double() / std}
    ranks = {kind: rank_summary(global_ranking(v, rows, names, class_names), part)
             for kind, v in scores.items()}
    return {**cf_stats(rows), "cf_read_as_target_shape": shape_reading(rows, image_descriptors),
            "ranks": ranks, "seconds": round(time.perf_counter() - t0, 1)}


SHARED = ("vae", "gan", "descriptors")  # trained once: they do not depend on the seed


def base_tasks(s: Settings, workdir: Path, std: list[float]) -> list[Task]:
    """Parts (a) and (b), in urgency order: the GAN first (the longest), then per seed the classifiers and the
    VAE explanations, then what needs the GAN."""
    tasks = [Task(name, fit, lambda r, n=name: (n, s, workdir), ()) for name in SHARED]
    for gen in ("vae", "gan"):  # the paper's cheap path: linear heads on each generator's latent
        tasks.append(Task(f"heads_{gen}", fit, lambda r, g=gen: (
            "descriptors_latent", s, workdir, [f"--model.init_args.encoder={r[g]['checkpoint']}",
                                               f"--model.init_args.net_kwargs.latent_dim={latent_dim(g)}"],
            f"heads_{g}"), (gen,)))
    for seed in s.seeds:
        tasks += [Task(f"classifier/seed{seed}", fit, lambda r, k=seed: ("classifier", s, workdir, (),
                                                                         f"classifier_seed{k}", k)),
                  Task(f"classifier_marker/seed{seed}", fit, lambda r, k=seed: (
                      "classifier_marker", s, workdir, (), f"classifier_marker_seed{k}", k)),
                  # the control of (b): the same spurious classifier trained longer, when it leans on the shape
                  Task(f"classifier_marker_long/seed{seed}", fit, lambda r, k=seed: (
                      "classifier_marker", s, workdir, [f"--trainer.max_epochs={s.control_epochs}"],
                      f"classifier_marker_long_seed{k}", k))]
    for gen in ("vae", "gan"):
        for seed in s.seeds:
            for part in ("shape", "marker", "marker_long"):
                clf = {"shape": "classifier", "marker": "classifier_marker",
                       "marker_long": "classifier_marker_long"}[part]

                def args(r, part=part, gen=gen, seed=seed, clf=clf):
                    paths = {k: r[k]["checkpoint"] for k in (gen, "descriptors", f"heads_{gen}")}
                    key = "classifier" if part == "shape" else "classifier_marker"
                    paths[key] = r[f"{clf}/seed{seed}"]["checkpoint"]
                    return part, gen, paths, s, workdir, std, seed

                tasks.append(Task(f"explain/{part}_{gen}/seed{seed}", base_explain_task, args,
                                  (gen, "descriptors", f"heads_{gen}", f"{clf}/seed{seed}")))
    return tasks


def spread(values: list[Any]) -> dict[str, Any]:
    """Each seed's value and their minimum, maximum and median (``None`` values are left out of the three)."""
    known = sorted(v for v in values if v is not None)
    mid = None if not known else (known[len(known) // 2] if len(known) % 2 else
                                  (known[len(known) // 2 - 1] + known[len(known) // 2]) / 2)
    return {"per_seed": values, "min": known[0] if known else None, "max": known[-1] if known else None,
            "median": mid}


def summarise_base(results: dict[str, Any], s: Settings) -> dict[str, Any]:
    """The published result of (a) and (b): per seed, and each figure's spread over the seeds."""
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in s.seeds:
        ex = {f"{part}_{gen}": results[f"explain/{part}_{gen}/seed{seed}"]
              for part in ("shape", "marker", "marker_long") for gen in ("vae", "gan")}
        ranks = {f"{part}_rank_{gen}": ex[f"{part}_{gen}"]["ranks"]["image_std"]["rank"]
                 for part in ("shape", "marker") for gen in ("vae", "gan")}
        per_seed[seed] = {
            **ranks,
            "goal_met": {k: v is not None and v <= (1 if k.startswith("shape") else 2) for k, v in ranks.items()},
            "marker_reliance_of_spurious_classifier": ex["marker_vae"]["marker_reliance"],
            "control_longer_trained_spurious_classifier": {
                "classifier_epochs": s.control_epochs, "marker_reliance": ex["marker_long_vae"]["marker_reliance"],
                **{f"marker_rank_{g}": ex[f"marker_long_{g}"]["ranks"]["image_std"]["rank"] for g in ("vae", "gan")}},
            "explanations": ex,
            "training": {k: results[f"{k}/seed{seed}"]
                         for k in ("classifier", "classifier_marker", "classifier_marker_long")}}
    keys = ("shape_rank_vae", "shape_rank_gan", "marker_rank_vae", "marker_rank_gan")
    summary = {k: spread([per_seed[q][k] for q in s.seeds]) for k in keys}
    summary["marker_reliance_of_spurious_classifier"] = spread(
        [per_seed[q]["marker_reliance_of_spurious_classifier"] for q in s.seeds])
    control = {k: spread([per_seed[q]["control_longer_trained_spurious_classifier"][k] for q in s.seeds])
               for k in ("marker_reliance", "marker_rank_vae", "marker_rank_gan")}
    return {**summary, "control_longer_trained_spurious_classifier": {"classifier_epochs": s.control_epochs,
                                                                       **control},
            "goal": {"shape_rank": 1, "marker_rank_at_most": 2},
            "goal_met_all_seeds": {k: all(per_seed[q]["goal_met"][k] for q in s.seeds) for k in keys},
            "seeds": list(s.seeds),
            "scoring": ("image-space descriptor CNN (reconstruction vs counterfactual), change / ground-truth"
                        " std, per target class; valid counterfactuals of faithfully reconstructed images"),
            "per_seed": {str(q): v for q, v in per_seed.items()},
            "training_shared": {k: results[k] for k in (*SHARED, "heads_vae", "heads_gan")}}


def run(s: Settings, workdir: Path, matrix: bool = False, workers: int = 2,
        matrix_only: bool = False) -> dict[str, Any]:
    """Train and explain everything; ``{"base": ..., "matrix": ... or None, "timeline": ...}``.
    ``matrix_only``: the matrix alone (of the base tasks only the shared models its methods need)."""
    t_start = time.perf_counter()
    std_t = descriptor_std(s, TRAIN["descriptors"])
    std = [float(v) for v in std_t]
    from benchmarks import shapes_matrix  # imports this module: not at the top

    base_list = base_tasks(s, workdir, std)
    if matrix_only:
        base_list = [t for t in base_list if t.key in shapes_matrix.shared_models(s)]
    tasks = base_list + (shapes_matrix.tasks(s, workdir, std) if matrix or matrix_only else [])
    results, timeline = run_tasks(tasks, workers=workers, dump_dir=workdir / "task_results")
    out: dict[str, Any] = {"base": None, "matrix": None}
    if not matrix_only:
        base_keys = [t.key for t in base_list]
        base = summarise_base(results, s)
        names = list(load_net(results["descriptors"]["checkpoint"], "descriptor").names)
        base.update(descriptor_std=dict(zip(names, [round(v, 4) for v in std])), settings=dataclasses.asdict(s),
                    # (a) and (b) were done when their last task ended: a run without the matrix takes at most this
                    base_done_seconds=max(timeline[k]["end"] for k in base_keys),
                    seconds=round(time.perf_counter() - t_start, 1), timeline={k: timeline[k] for k in base_keys})
        out["base"] = base
    if matrix or matrix_only:
        out["matrix"] = shapes_matrix.summarise(results, s, timeline)
        out["matrix"]["seconds"] = round(time.perf_counter() - t_start, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (~2 min)")
    ap.add_argument("--matrix", action="store_true", help="also run the causes x shortcuts x methods matrix")
    ap.add_argument("--matrix-only", action="store_true", help="run the matrix alone, without (a) and (b)")
    ap.add_argument("--matrix-methods", nargs="+", default=None,
                    help="the matrix's methods (default: all of latent_vae latent_gan svce pgd apgd dvce "
                         "svce_robust apgd_robust)")
    ap.add_argument("--workdir", default=None, help="where checkpoints go (default: a temporary directory)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (one torch thread each)")
    ap.add_argument("--reuse", action="store_true", help="development: reuse checkpoints in --workdir")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of (a) and (b) (default 0 1 2)")
    ap.add_argument("--matrix-seeds", type=int, nargs="+", default=None,
                    help="seeds of the matrix's classifiers and methods (default 0; several: per seed and the spread)")
    ap.add_argument("--out", default=None,
                    help="result JSON of (a)/(b) (default: benchmarks/results/shapes_ground_truth.json; --quick: "
                         "none); the matrix goes beside it as shapes_matrix.json")
    args = ap.parse_args()
    quiet_process(threads=1)  # as every worker (the CLI is driven from Python on purpose: no argv warnings)
    settings = QUICK if args.quick else Settings()
    if args.seeds:
        settings = dataclasses.replace(settings, seeds=tuple(args.seeds))
    if args.reuse:
        settings = dataclasses.replace(settings, reuse_checkpoints=True)
    if args.matrix_seeds:
        if len(set(args.matrix_seeds)) != len(args.matrix_seeds):
            ap.error(f"--matrix-seeds: give distinct seeds, got {args.matrix_seeds}")
        settings = dataclasses.replace(settings, matrix_seeds=tuple(args.matrix_seeds))
    if args.matrix_methods:
        from benchmarks import shapes_matrix

        try:
            settings = dataclasses.replace(settings, matrix_methods=shapes_matrix.check_methods(args.matrix_methods))
        except ValueError as err:
            ap.error(str(err))  # one line, exit status 2
    results_dir = ROOT / "benchmarks/results"
    if args.matrix_only:  # --out names the matrix file; a subset of the methods gets its own default name
        subset = set(settings.matrix_methods) != set(Settings().matrix_methods)
        name = "shapes_matrix" + ("_" + "_".join(settings.matrix_methods) if subset else "")
        if settings.matrix_seeds != Settings().matrix_seeds:
            name += "_seeds_" + "_".join(map(str, settings.matrix_seeds))
        default = results_dir / f"{name}.json"
        paths = {"base": None, "matrix": args.out or (None if args.quick else str(default))}
    else:
        out = args.out or (None if args.quick else str(results_dir / "shapes_ground_truth.json"))
        paths = {"base": out, "matrix": out and str(Path(out).with_name("shapes_matrix.json"))}
    with tempfile.TemporaryDirectory() as tmp:
        result = run(settings, Path(args.workdir or tmp), matrix=args.matrix, workers=args.workers,
                     matrix_only=args.matrix_only)
    record = provenance(__file__)
    record["machine"]["workers"] = args.workers
    record["machine"]["load_average_1_5_15_at_end"] = [round(v, 2) for v in os.getloadavg()]
    for part, path in paths.items():
        if result[part] is None or not path:
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({**record, **result[part]}, indent=2) + "\n")
    base = result["base"]
    keys = ("shape_rank_vae", "shape_rank_gan", "marker_rank_vae", "marker_rank_gan")
    if base is not None:
        print(json.dumps({**{k: base[k]["per_seed"] for k in keys}, "seconds": base["seconds"],
                          "base_done_seconds": base["base_done_seconds"]}))
    if result["matrix"] is not None:
        from benchmarks import shapes_matrix

        print(shapes_matrix.markdown(result["matrix"]))


if __name__ == "__main__":
    main()
