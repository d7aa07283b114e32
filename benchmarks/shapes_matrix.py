"""The ground-truth matrix on shapes: true causes x planted shortcuts x methods (issue 13, item 6).

Run by ``benchmarks/shapes_ground_truth.py --matrix``, which trains the shared VAE, GAN and descriptor CNN once.
Each cell is a classifier trained (``configs/train/shapes_classifier_marker.yaml``, 2 epochs) where the label
is one true cause and a marker accompanies one class:

- causes: ``shape`` (circle / square / triangle), ``colour`` (red / green / blue), ``size`` (small / large:
  below or above the middle of the size range);
- shortcuts, each one change from ``base`` (a white cross, top left, on 90 % of class 0 and on no other
  class): ``corner`` (bottom right), ``marker_shape`` (a filled square patch), ``class`` (on the last class),
  ``frequency`` (on 60 % of class 0).

Every test image that the classifier does not put in the marked class is pushed into it (p > 0.9) by each
method: Counterfactual Attacks through the VAE and through the GAN (``latent_attack_shapes_marker.yaml``'s
settings), SVCE (l1.5 ball) and the pixel baselines PGD and APGD (l2 ball). The pixel methods' radius is
``matrix_radius_factor`` times the shortcut's own norm (the mean ‖marked − unmarked‖ over the explained images
in that norm), so painting the marker is within reach: at the MNIST radius (l1.5 = 6) it is not, a marker's own
l1.5 norm being about twice that. DVCE (``mnist_all_methods.yaml``'s settings: 100 respaced steps, the first 50
skipped, λ_c 0.2, the 30° cone) guides a DDPM of the shapes (``configs/train/shapes_ddpm.yaml``, the generators'
data: markers independent of the shape), trained once, through a robust model trained per cell on the cell's
data (``configs/train/shapes_robust.yaml``: PGD-l2 adversarial training at ε = 0.25,
then the ECE temperature), so the robust model sees the same shortcut as the classifier it serves.
``svce_robust`` and ``apgd_robust`` run SVCE and APGD with the same radii on that robust model itself, the kind of
model SVCE is meant for (Boreiko et al. 2022: on a non-robust one l_p-bounded changes find cheaper adversarial
directions than the shortcut); the robust model's own reliance on the shortcut is measured beside it.

Per cell the result records the classifier's measured **reliance** on its shortcut (the share of unmarked
other-class test images it puts in the marked class once the marker is drawn on them) and its accuracy on
unmarked images of the marked class; per (cell, method) the validity, the global explanation's ranks of the
true cause and of the marker (``GlobalAttribution`` per target over valid counterfactuals, each descriptor
change divided by its ground-truth spread), the **marker mass** (the share of a counterfactual's absolute
change Σ|x' − x₀| inside the marker's pixels, x₀ the reconstruction for latent methods and the image for pixel
methods; the marker covers ``marker_area_share`` of the image) and the share of counterfactuals the descriptor
CNN reads as marked. With several ``matrix_seeds`` the cells' classifiers and robust models are trained and the
methods run once per seed (the shared generators, descriptor CNN and DDPM once): the first seed's table, each
other seed's and, per cell and method, the spread of validity, ranks and marker mass over the seeds.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from benchmarks import shapes_ground_truth as sgt
from benchmarks.task_pool import Task
from cflight.data import ShapesDataset
from cflight.methods import functional as Fn

CAUSES: dict[str, dict[str, Any]] = {
    "shape": {"data": {"label_factor": "shape"}, "classes": ["circle", "square", "triangle"], "prefix": "shape_"},
    "colour": {"data": {"label_factor": "colour"}, "classes": ["red", "green", "blue"], "prefix": "colour_"},
    "size": {"data": {"label_factor": "size"}, "classes": ["small", "large"], "prefix": "size"},
}
BASE_MARKER = {"marker_position": "top_left", "marker_shape": "cross", "marker_class": 0, "marker_prob": 0.9}
SHORTCUTS: dict[str, dict[str, Any]] = {
    "base": {},
    "corner": {"marker_position": "bottom_right"},
    "marker_shape": {"marker_shape": "square"},
    "class": {"marker_class": -1},  # the last class
    "frequency": {"marker_prob": 0.6},
}
METHODS = ("latent_vae", "latent_gan", "svce", "pgd", "apgd", "dvce", "svce_robust", "apgd_robust")
ON_ROBUST = ("svce_robust", "apgd_robust")  # methods that explain the cell's robust model instead of its classifier
NEEDS_ROBUST = ("dvce", *ON_ROBUST)  # DVCE takes its cone from the robust model
THRESHOLD = 0.9
_BALL = {"svce": "l1_5", "pgd": "l2", "apgd": "l2"}
# methods with a radius: the norm it is calibrated in (a method on the robust model: its base method's)
PIXEL_BALL = {**_BALL, **{m: _BALL[m.removesuffix("_robust")] for m in ON_ROBUST}}
# mnist_all_methods.yaml's DVCE (the respaced chain comes from the run's settings)
DVCE_SETTINGS = {"cone_angle": 30.0, "classifier_lambda": 0.2, "distance_lambda": 0.15, "distance_p": 1.0,
                 "denoise_dist_input": True, "aug_num": 1}


def check_methods(names) -> tuple[str, ...]:
    """``names`` in the matrix's order; a one-line ``ValueError`` naming an unknown one and the known ones."""
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown matrix methods {unknown}; the methods are {list(METHODS)}")
    return tuple(m for m in METHODS if m in names)


def shared_models(s: Any) -> set[str]:
    """The seed-free models the selected methods need (the descriptor CNN always: it scores every method)."""
    methods = check_methods(s.matrix_methods)
    return {"descriptors", *(g for g in ("vae", "gan") if f"latent_{g}" in methods)}


def cells(s: Any) -> list[str]:
    """``"<cause>/<shortcut>"`` names, every pair unless ``s.matrix_cells`` names some."""
    names = [f"{c}/{k}" for c in CAUSES for k in SHORTCUTS]
    if s.matrix_cells is None:
        return names
    unknown = set(s.matrix_cells) - set(names)
    if unknown:
        raise ValueError(f"unknown matrix cells {sorted(unknown)}; the cells are {names}")
    return [n for n in names if n in s.matrix_cells]


def cell_data(cell: str) -> dict[str, Any]:
    """The ShapesDataset / ShapesDataModule arguments of a cell (marker class resolved)."""
    cause, shortcut = cell.split("/")
    spec = {**BASE_MARKER, **SHORTCUTS[shortcut], **CAUSES[cause]["data"]}
    if spec["marker_class"] < 0:
        spec["marker_class"] += len(CAUSES[cause]["classes"])
    return spec


def cell_kwargs(cell: str, s: Any) -> dict[str, Any]:
    """The cell's ShapesDataModule arguments: the spurious classifier's config with the cell's data (and the
    run's split sizes where ``s`` sets them)."""
    init = yaml.safe_load(sgt.TRAIN["classifier_marker"].read_text())["data"]["init_args"]
    keys = ("shapes", "colours", "size_range", "marker_prob_other", "seed", "n_train", "n_val", "n_test")
    out = {**{k: init[k] for k in keys}, **cell_data(cell)}
    out.update({k: v for k in ("n_train", "n_val", "n_test") if (v := getattr(s, k)) is not None})
    return out


def dataset(cell: str, s: Any, split: str = "test", n: int | None = None) -> ShapesDataset:
    """The cell's split (``n`` images, default the split's size)."""
    kw = cell_kwargs(cell, s)
    sizes = {k: kw.pop(k) for k in ("n_train", "n_val", "n_test")}
    return ShapesDataset(n or sizes[f"n_{split}"], split=split, **kw)


def _tag(kind: str, cell: str, seed: int) -> str:
    """The work directory name of a cell's model (seed 0 keeps the single-seed name)."""
    return f"{kind}_{cell.replace('/', '_')}" + (f"_seed{seed}" if seed else "")


def fit_cell(cell: str, s: Any, workdir: Path, seed: int = 0) -> dict[str, Any]:
    """Train the cell's classifier from ``shapes_classifier_marker.yaml`` with the cell's data."""
    return sgt.fit("classifier_marker", s, workdir, cell_overrides(cell), tag=_tag("cell", cell, seed), seed=seed)


def cell_overrides(cell: str) -> list[str]:
    """CLI overrides that train a shapes classifier config on the cell's data, with the cell's class count."""
    extra = [f"--data.init_args.{k}={v}" for k, v in cell_data(cell).items()]
    extra.append(f"--model.init_args.net_kwargs.num_classes={len(CAUSES[cell.split('/')[0]]['classes'])}")
    return extra


def fit_robust_cell(cell: str, s: Any, workdir: Path, seed: int = 0) -> dict[str, Any]:
    """Adversarially train the cell's robust model (``shapes_robust.yaml``, the cell's data), fit its ECE
    temperature on the cell's validation split and export it wrapped (``TemperatureWrapper``) as ``.pt``."""
    from cflight.models.classifiers import fit_temperature
    from cflight.models.registry import export_calibrated, load_net

    info = sgt.fit("robust", s, workdir, cell_overrides(cell), tag=_tag("robust", cell, seed), seed=seed)
    net = load_net(info["checkpoint"], "classifier")
    val = dataset(cell, s, split="val")
    with torch.no_grad():
        samples = [val[i] for i in range(len(val))]
        x = torch.stack([torch.as_tensor(v["image"]) for v in samples])
        labels = torch.tensor([int(v["label"]) for v in samples])
        temperature = fit_temperature(net(x), labels)
    hp = torch.load(info["checkpoint"], map_location="cpu", weights_only=True)["hyper_parameters"]
    path = str(Path(info["checkpoint"]).with_suffix(".pt"))
    export_calibrated(net, hp["net"], hp["net_kwargs"], temperature, path, {"temperature": temperature})
    return {**info, "checkpoint": path, "temperature": round(temperature, 4)}


def fit_ddpm(s: Any, workdir: Path) -> dict[str, Any]:
    """Train the shapes DDPM once (``shapes_ddpm.yaml``) and export its EMA network with its diffusion record."""
    from cflight.lit import export_checkpoint

    info = sgt.fit("ddpm", s, workdir)
    path = str(Path(info["checkpoint"]).with_suffix(".pt"))
    export_checkpoint(info["checkpoint"], path)
    return {**info, "checkpoint": path}


def shortcut_norms(cell: str, s: Any) -> dict[str, float]:
    """Mean ‖marked − unmarked‖ in l1.5 and l2 over the cell's unmarked test images outside the marked class."""
    ds = dataset(cell, s)
    c = ds.marker_class
    factors = [f for f in map(ds.factors, range(len(ds))) if ds.label(f) != c and not f.marker]
    delta = torch.stack([ds.render(dataclasses.replace(f, marker=True)) - ds.render(f) for f in factors])
    flat = delta.flatten(1).double()
    return {"l1_5": round(float(flat.abs().pow(1.5).sum(1).pow(1 / 1.5).mean()), 4),
            "l2": round(float(flat.norm(dim=1).mean()), 4), "n": len(factors)}


@torch.no_grad()
def reliance(cell: str, classifier: str, s: Any) -> dict[str, float]:
    """How much the cell's classifier leans on its shortcut: the share of unmarked other-class test images it
    calls the marked class once the marker is drawn (``reliance``), and its accuracy on unmarked images of the
    marked class (``accuracy_unmarked_marked_class``) and on all unmarked ones."""
    from cflight.models.registry import load_net

    ds = dataset(cell, s)
    clf = load_net(classifier, "classifier")
    c = ds.marker_class
    fs = [f for f in map(ds.factors, range(len(ds))) if not f.marker]
    others = [f for f in fs if ds.label(f) != c]
    own = [f for f in fs if ds.label(f) == c]
    marked = torch.stack([ds.render(dataclasses.replace(f, marker=True)) for f in others])

    def predict(batch: list) -> Tensor:
        return clf(torch.stack([ds.render(f) for f in batch])).argmax(1)

    return {"reliance": round(float((clf(marked).argmax(1) == c).float().mean()), 4),
            "accuracy_unmarked_marked_class": round(float((predict(own) == c).float().mean()), 4) if own else None,
            "accuracy_unmarked": round(float((predict(fs) == torch.tensor([ds.label(f) for f in fs]))
                                             .float().mean()), 4)}


def build_method(name: str, paths: dict[str, str], s: Any, radius: dict[str, float], seed: int):
    """The matrix's method ``name``; latent ones with ``latent_attack_shapes_marker.yaml``'s settings."""
    from cflight.methods import APGD, DVCE, PGD, LatentAttack, SparseAFW
    from cflight.models.generative import GANManifold

    if name.startswith("latent_"):
        cfg = yaml.safe_load(sgt.EXPLAIN["marker"].read_text())["model"]["init_args"]["method"]["init_args"]
        cfg = {**cfg, "seed": seed}
        if s.max_steps is not None:
            cfg["max_steps"] = s.max_steps
        cfg["generator"] = (paths["vae"] if name == "latent_vae" else
                            GANManifold(paths["gan"], steps=s.projection_steps, n_candidates=0))
        return LatentAttack(**cfg)
    if name == "dvce":  # mnist_all_methods.yaml's DVCE, through the cell's robust model
        return DVCE(denoiser=paths["ddpm"], robust_model=paths["robust"], timestep_respacing=s.dvce_respacing,
                    skip_timesteps=s.dvce_skip, seed=seed, **DVCE_SETTINGS)
    eps = s.matrix_radius_factor * radius[PIXEL_BALL[name]]
    name = name.removesuffix("_robust")  # the same method; the caller passes the robust model to explain
    if name == "svce":  # svce_mnist.yaml's settings, the radius calibrated to the shortcut
        return SparseAFW(eps=eps, p=1.5, steps=75, step_rule="v1", restarts=1, seed=seed)
    if name == "pgd":
        return PGD(eps=eps, norm="l2", steps=20, seed=seed)
    return APGD(eps=eps, norm="l2", steps=75, seed=seed)


def explain_cell(cell: str, method: str, paths: dict[str, str], s: Any, std: list[float],
                 radius: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """One method on one cell: validity, ranks, marker mass and cost (a worker task)."""
    from lightning.pytorch import Trainer, seed_everything

    from cflight.data import ShapesDataModule
    from cflight.lit import ExplainModule
    from cflight.targets import FixedClass

    t0 = time.perf_counter()
    seed_everything(seed, verbose=False)
    cause = cell.split("/")[0]
    spec = cell_data(cell)
    dm = ShapesDataModule(**cell_kwargs(cell, s), batch_size=100, predict_split="test",
                          predict_limit=s.matrix_n_explain)
    latent = method.startswith("latent_")
    module = ExplainModule(method=build_method(method, paths, s, radius, seed), model=paths["classifier"],
                           target_policy=FixedClass(spec["marker_class"], THRESHOLD),
                           class_names=CAUSES[cause]["classes"], descriptors=paths["descriptors"],
                           descriptor_space="image", reconstruction_filter="prediction" if latent else None)
    trainer = Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, callbacks=[],
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    batches = [b for b in trainer.predict(module, datamodule=dm, return_predictions=True) if b and "index" in b]
    if not batches:
        return {"n_explained": 0, "seconds": round(time.perf_counter() - t0, 1)}
    rows = {k: torch.cat([b[k] for b in batches]) for k in batches[0] if isinstance(batches[0][k], Tensor)}
    rows["faithful"] = torch.ones_like(rows["valid"])  # the reconstruction filter already dropped the others
    names = list(module.descriptors.names)  # the descriptor CNN the module loaded
    scores = rows["descriptor_delta"].double() / torch.tensor(std, dtype=torch.float64)
    by_target = sgt.global_ranking(scores, rows, names, CAUSES[cause]["classes"])
    cause_rank = marker_rank = None
    top: list = []
    if by_target:
        (entry,) = by_target  # one target: the marked class
        cause_rank, marker_rank = sgt.rank_of(entry, CAUSES[cause]["prefix"]), sgt.rank_of(entry, "marker")
        top = [[n, round(v, 3)] for n, v in entry["top"][:4]]
    valid = rows["valid"]
    start = rows["reconstruction"] if latent else rows["image"]
    mass = marker_mass(rows["x_cf"], start, torch.from_numpy(dataset(cell, s, n=1).marker_mask()))
    marker_after = (rows["descriptors_before"] + rows["descriptor_delta"])[:, names.index("marker")]

    def mean(v: Tensor) -> float | None:
        return round(float(v[valid].float().mean()), 4) if bool(valid.any()) else None

    return {"n_explained": int(valid.numel()), "validity": round(float(valid.float().mean()), 4),
            "n_ranked": int(valid.sum()), "cause_rank": cause_rank, "marker_rank": marker_rank, "top": top,
            "marker_mass": mean(mass), "marker_painted": mean(marker_after > 0.5),
            "mean_l2": mean(Fn.l2_distance(rows["x_cf"], start)),
            "eps": round(s.matrix_radius_factor * radius[PIXEL_BALL[method]], 4) if method in PIXEL_BALL else None,
            "seconds": round(time.perf_counter() - t0, 1)}


def marker_mass(x_cf: Tensor, start: Tensor, mask: Tensor) -> Tensor:
    """``[N]``: the share of each counterfactual's absolute change Σ_c |x' − x₀| (``[N, C, H, W]``) that lies in
    the marker's pixels ``mask`` (``[H, W]`` bool); 0 for an unchanged image."""
    change = (x_cf - start).abs().sum(1)  # [N, H, W]
    return (change * mask).flatten(1).sum(1) / change.flatten(1).sum(1).clamp_min(1e-12)


def cell_reliance_task(cell: str, classifier: str, s: Any) -> dict[str, Any]:
    return {**reliance(cell, classifier, s), "shortcut_norm": shortcut_norms(cell, s)}


def key_prefix(s: Any, seed: int) -> str:
    """Task keys of one seed: ``matrix/<cell>/...`` for the first of ``s.matrix_seeds`` (the single-seed names),
    ``matrix/seed_<n>/<cell>/...`` for the others."""
    return "matrix" if seed == s.matrix_seeds[0] else f"matrix/seed_{seed}"


def tasks(s: Any, workdir: Path, std: list[float]) -> list[Task]:
    """Every cell's classifier, its reliance and each method's explanation, per seed of ``s.matrix_seeds`` (after
    the base benchmark's tasks, so those come first; per seed the GAN explanations last, as they wait for the
    GAN). With DVCE: the shapes DDPM first (the longest of its models, trained once) and each cell's robust
    model after the cell's reliance."""
    methods = check_methods(s.matrix_methods)
    out: list[Task] = []
    if "dvce" in methods:
        out.append(Task("ddpm", fit_ddpm, lambda r: (s, workdir)))
    for seed in s.matrix_seeds:
        out += _seed_tasks(s, workdir, std, methods, seed)
    return out


def _seed_tasks(s: Any, workdir: Path, std: list[float], methods: tuple[str, ...], seed: int) -> list[Task]:
    """One seed's tasks: the cells' classifiers (and robust models) trained with ``seed``, the methods run with it."""
    pre = key_prefix(s, seed)
    out: list[Task] = []
    for cell in cells(s):
        k = f"{pre}/{cell}"
        out.append(Task(f"{k}/classifier", fit_cell, lambda r, c=cell: (c, s, workdir, seed)))
        out.append(Task(f"{k}/reliance", cell_reliance_task,
                        lambda r, c=cell, k=k: (c, r[f"{k}/classifier"]["checkpoint"], s), (f"{k}/classifier",)))
    if any(m in NEEDS_ROBUST for m in methods):
        out += [Task(f"{pre}/{cell}/robust", fit_robust_cell, lambda r, c=cell: (c, s, workdir, seed))
                for cell in cells(s)]
    if any(m in ON_ROBUST for m in methods):  # the explained robust model's own reliance on the shortcut
        out += [Task(f"{pre}/{cell}/robust_reliance", reliance,
                     lambda r, c=cell, k=f"{pre}/{cell}": (c, r[f"{k}/robust"]["checkpoint"], s),
                     (f"{pre}/{cell}/robust",))
                for cell in cells(s)]
    for method in [m for m in methods if m != "latent_gan"] + ["latent_gan"] * ("latent_gan" in methods):
        for cell in cells(s):
            k = f"{pre}/{cell}"
            needs = {"latent_gan": ["gan"], "latent_vae": ["vae"], "dvce": ["ddpm", f"{k}/robust"],
                     **{m: [f"{k}/robust"] for m in ON_ROBUST}}

            def args(r, c=cell, m=method, k=k):
                paths = {"classifier": r[f"{k}/classifier"]["checkpoint"],
                         **{n: r[n]["checkpoint"] for n in ("vae", "gan", "descriptors", "ddpm") if n in r}}
                if m == "dvce":
                    paths["robust"] = r[f"{k}/robust"]["checkpoint"]
                if m in ON_ROBUST:
                    paths["classifier"] = r[f"{k}/robust"]["checkpoint"]
                return c, m, paths, s, std, r[f"{k}/reliance"]["shortcut_norm"], seed

            out.append(Task(f"{k}/{method}", explain_cell, args,
                            (f"{k}/reliance", "descriptors", *needs.get(method, []))))
    return out


SPREAD_FIELDS = ("validity", "cause_rank", "marker_rank", "marker_mass")


def _seed_table(results: dict[str, Any], s: Any, methods: tuple[str, ...], seed: int) -> dict[str, Any]:
    """One seed's matrix: per cell the classifier's reliance and each method's figures."""
    pre = key_prefix(s, seed)
    table = {}
    for cell in cells(s):
        k = f"{pre}/{cell}"
        table[cell] = {"shortcut": cell_data(cell), **results[f"{k}/reliance"],
                       "classifier_val": results[f"{k}/classifier"]["val"],
                       "methods": {m: results[f"{k}/{m}"] for m in methods}}
        if any(m in NEEDS_ROBUST for m in methods):  # DVCE's cone / the explained robust model: its
            # validation (robust) accuracy and T, and (explained) its own reliance on the shortcut
            table[cell]["robust_model"] = {f: results[f"{k}/robust"][f] for f in ("val", "temperature", "seconds")}
            if f"{k}/robust_reliance" in results:
                table[cell]["robust_model"].update(results[f"{k}/robust_reliance"])
    return table


def seed_spread(tables: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, Any]:
    """Per cell, over the seeds' tables: the classifier's (and robust model's) reliance and each method's
    validity, cause rank, marker rank and marker mass, each as :func:`shapes_ground_truth.spread`."""
    out = {}
    for cell in tables[0]:
        rows = [t[cell] for t in tables]
        entry = {"reliance": sgt.spread([r["reliance"] for r in rows]),
                 "methods": {m: {f: sgt.spread([r["methods"][m].get(f) for r in rows]) for f in SPREAD_FIELDS}
                             for m in methods}}
        if "reliance" in rows[0].get("robust_model", {}):
            entry["robust_model_reliance"] = sgt.spread([r["robust_model"]["reliance"] for r in rows])
        out[cell] = entry
    return out


def summarise(results: dict[str, Any], s: Any, timeline: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The matrix of the first seed (``cells``); with several seeds also each other seed's (``per_seed``) and
    the spread over all of them (``spread``)."""
    methods = check_methods(s.matrix_methods)
    tables = [_seed_table(results, s, methods, seed) for seed in s.matrix_seeds]
    out = {"cells": tables[0], "methods": list(methods), "seeds": list(s.matrix_seeds), "threshold": THRESHOLD,
           "radius_factor": s.matrix_radius_factor, "n_explain_per_cell": s.matrix_n_explain,
           "marker_area_share": {k: round(float(dataset(c, s, n=1).marker_mask().mean()), 4)
                                 for k, c in (("cross", "shape/base"), ("square", "shape/marker_shape"))},
           "scoring": ("ranks: GlobalAttribution per target over valid counterfactuals, descriptor change / "
                       "ground-truth std; cause rank: best-ranked descriptor of the cause (shape_*, colour_* or "
                       "size); marker mass: share of Σ|x' − x₀| inside the marker's pixels"),
           "dvce": ({"ddpm": {k: results["ddpm"][k] for k in ("val", "seconds")},
                     "respacing": s.dvce_respacing, "skip": s.dvce_skip, **DVCE_SETTINGS}
                    if "dvce" in methods else "not run (not among --matrix-methods)"),
           "timeline": {k: v for k, v in timeline.items() if k.startswith("matrix/")}}
    if len(tables) > 1:
        out["per_seed"] = {str(seed): t for seed, t in zip(s.matrix_seeds[1:], tables[1:])}
        out["spread"] = seed_spread(tables, methods)
    return out


def markdown(matrix: dict[str, Any]) -> str:
    """The matrix as a table: one row per cell, per method 'cause rank / marker rank / marker mass (validity)';
    with several seeds each figure is the median over the seeds with its range, ``2 (1–4)``."""
    head = "| cell | reliance | " + " | ".join(matrix["methods"]) + " |"
    lines = [head, "|" + "---|" * (2 + len(matrix["methods"]))]
    spread = matrix.get("spread")

    def fmt(sp: dict[str, Any], digits: int | None) -> str:
        if sp["median"] is None:
            return "—"
        f = (lambda v: f"{v:g}") if digits is None else (lambda v: f"{v:.{digits}f}")
        return f(sp["median"]) + ("" if sp["min"] == sp["max"] else f" ({f(sp['min'])}–{f(sp['max'])})")

    for cell, row in matrix["cells"].items():
        parts = []
        for m in matrix["methods"]:
            if spread is not None:
                sp = spread[cell]["methods"][m]
                parts.append(f"{fmt(sp['cause_rank'], None)} / {fmt(sp['marker_rank'], None)} / "
                             f"{fmt(sp['marker_mass'], 2)} (v {fmt(sp['validity'], 2)})")
                continue
            r = row["methods"][m]
            mass = "—" if r.get("marker_mass") is None else f"{r['marker_mass']:.2f}"
            parts.append(f"{r.get('cause_rank') or '—'} / {r.get('marker_rank') or '—'} / {mass} "
                         f"(v {r.get('validity', 0):.2f})")
        rel = fmt(spread[cell]["reliance"], 2) if spread is not None else f"{row['reliance']:.2f}"
        lines.append(f"| {cell} | {rel} | " + " | ".join(parts) + " |")
    return "\n".join(lines)
