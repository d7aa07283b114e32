"""configs/benchmark/shapes_ground_truth.yaml: it parses, every class resolves, and every checkpoint it reads is
the one a shapes training config writes (the README's `cflight fit` commands, then `cflight benchmark`)."""
import os

import yaml

from cflight.benchmark.runner import instantiate, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs/benchmark/shapes_ground_truth.yaml")


def _written_checkpoints() -> set[str]:
    """``<dirpath>/last.ckpt`` of every configs/train/shapes_*.yaml's ModelCheckpoint (they all save_last)."""
    out = set()
    for name in os.listdir(os.path.join(ROOT, "configs/train")):
        if name.startswith("shapes_"):
            spec = yaml.safe_load(open(os.path.join(ROOT, "configs/train", name)))
            for cb in spec["trainer"]["callbacks"]:
                if cb["class_path"].endswith("ModelCheckpoint") and cb["init_args"].get("save_last"):
                    out.add(cb["init_args"]["dirpath"] + "/last.ckpt")
    return out


def _paths(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _paths(v)
    elif isinstance(value, list):
        for v in value:
            yield from _paths(v)
    elif isinstance(value, str) and value.endswith(".ckpt"):
        yield value


def test_shapes_benchmark_config_reads_what_the_training_configs_write():
    cfg = load_config(CONFIG)
    assert [m["name"] for m in cfg.methods] == ["latent_attack_vae", "latent_attack_gan", "svce", "pgd_l2",
                                                 "apgd_l2"]
    used = set(_paths(cfg.raw))
    assert used and used <= _written_checkpoints(), used - _written_checkpoints()
    assert cfg.module["model"] != cfg.module["oracle"]  # the oracle is the classifier that cannot use the marker
    policy = instantiate(cfg.module["target_policy"])
    assert (policy.target_class, policy.threshold) == (0, 0.9)
    data = instantiate(cfg.data)  # the explained model's training distribution: the marker on circles only
    ds = data.dataset("test")
    assert (ds.marker_class, ds.marker_prob, ds.marker_prob_other) == (0, 0.9, 0.0)


def test_pixel_radii_are_calibrated_to_the_marker():
    """1.5 x the white cross's mean norm over the explained images (closed form: 27 changed values of 1 − b)."""
    cfg = load_config(CONFIG)
    data = instantiate(cfg.data)
    ds = data.dataset("test")
    gaps = [1 - f.background for f in map(ds.factors, range(150)) if f.shape != 0 and not f.marker]
    mean_gap = sum(gaps) / len(gaps)
    eps = {m["name"]: m["method"]["init_args"]["eps"] for m in cfg.methods if "eps" in m["method"]["init_args"]}
    assert abs(eps["svce"] - 1.5 * 27 ** (2 / 3) * mean_gap) < 0.2
    assert abs(eps["pgd_l2"] - 1.5 * 27 ** 0.5 * mean_gap) < 0.15 and eps["apgd_l2"] == eps["pgd_l2"]
