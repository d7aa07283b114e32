"""The DVCE explanation configs parse (``--print_config``) and instantiate with stand-in checkpoints.

The shipped checkpoints they name may not exist yet, so instantiation uses randomly initialised networks of the
shipped architectures written to a temporary directory (never to checkpoints/).
"""
import pytest
import yaml

from cflight.cli import CflightCLI, main
from cflight.lit import CounterfactualWriter
from cflight.methods import DVCE, MethodComparison
from cflight.models.registry import build_net, export_net

CONFIGS = ["configs/explain/dvce_mnist.yaml", "configs/explain/dvce_cone_mnist.yaml",
           "configs/explain/dvce_compare_mnist.yaml"]
# The shipped DDPM (configs/train/ddpm_mnist.yaml) and classifiers (configs/train/{classifier,robust}_mnist.yaml).
UNET = {"in_channels": 1, "image_size": 28, "model_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
        "attention_resolutions": [7], "head_channels": 32, "dropout": 0.1, "learn_sigma": True}
CNN = {"in_channels": 1, "image_size": 28, "num_classes": 10, "width": 32, "hidden": 128}


def _printed(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "-c", path, "--print_config"])
    assert exc.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def _dvce(init):
    return {k: init[k] for k in ("denoiser", "timestep_respacing", "skip_timesteps", "classifier_lambda",
                                 "distance_lambda", "distance_p", "denoise_dist_input")}


SHARED = {"denoiser": "checkpoints/mnist_ddpm.pt", "timestep_respacing": "100", "skip_timesteps": 50,
          "classifier_lambda": 0.2, "distance_lambda": 0.15, "distance_p": 1.0, "denoise_dist_input": True}


def test_configs_print(capsys):
    single, cone, compare = (_printed(p, capsys) for p in CONFIGS)
    for cfg in (single, cone, compare):
        writer = cfg["trainer"]["callbacks"][0]["init_args"]
        assert writer["fid_feature_net"] == "checkpoints/mnist_classifier.pt"
        assert cfg["data"]["init_args"]["predict_limit"] == 64 and cfg["data"]["init_args"]["predict_split"] == "test"
        assert cfg["model"]["init_args"]["target_policy"]["class_path"] == "cflight.targets.SecondMostLikely"
    m = single["model"]["init_args"]
    assert m["model"] == "checkpoints/mnist_robust.pt" and m["method"]["init_args"]["robust_model"] is None
    assert _dvce(m["method"]["init_args"]) == SHARED
    m = cone["model"]["init_args"]
    assert m["model"] == "checkpoints/mnist_classifier.pt"
    assert m["method"]["init_args"]["robust_model"] == "checkpoints/mnist_robust.pt"
    assert m["method"]["init_args"]["cone_angle"] == 30 and _dvce(m["method"]["init_args"]) == SHARED
    m = compare["model"]["init_args"]
    methods = m["method"]["init_args"]["methods"]
    assert m["model"] == "checkpoints/mnist_classifier.pt" and set(methods) == {"plain", "robust", "cone"}
    assert all(_dvce(v["init_args"]) == SHARED for v in methods.values())
    assert methods["plain"]["init_args"]["robust_model"] is None
    assert methods["robust"]["init_args"]["cone_angle"] is None
    assert methods["cone"]["init_args"]["cone_angle"] == 30


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    out = tmp_path_factory.mktemp("standins")
    export_net("unet", UNET, build_net("unet", **UNET).state_dict(), str(out / "mnist_ddpm.pt"))
    export_net("mnist_cnn", CNN, build_net("mnist_cnn", **CNN).state_dict(), str(out / "mnist_classifier.pt"))
    robust = {"net": "mnist_cnn", "net_kwargs": CNN, "temperature": 1.5}  # as scripts/train_shipped.py exports it
    export_net("temperature", robust, build_net("temperature", **robust).state_dict(), str(out / "mnist_robust.pt"))
    return out


@pytest.mark.parametrize("path", CONFIGS)
def test_configs_instantiate_with_standin_checkpoints(path, standins, tmp_path):
    text = open(path).read().replace("checkpoints/", f"{standins}/").replace("outputs/explain/", f"{tmp_path}/")
    text = text.replace("return_predictions: false\n", "")  # a `predict` argument; run=False parses no subcommand
    config = tmp_path / "config.yaml"
    config.write_text(text)
    cli = CflightCLI(args=["-c", str(config), "--trainer.logger=false"], run=False)
    method = cli.model.method
    dvces = list(method.methods) if isinstance(method, MethodComparison) else [method]
    assert all(isinstance(d, DVCE) and d.num_reverse_steps == 50 for d in dvces)
    assert all(d.denoiser.learn_sigma for d in dvces)  # learned-range variance, as the shipped DDPM
    writer = next(cb for cb in cli.trainer.callbacks if isinstance(cb, CounterfactualWriter))
    assert writer.fid_features is not None and writer.fid_features.num_features == 128
    if isinstance(method, MethodComparison):
        assert method.names == ["cone", "plain", "robust"] and cli.model.method_names == method.names
        assert [d.uses_cone for d in dvces] == [True, False, False]
        assert dvces[1].robust_model is None and dvces[2].robust_model is not None
