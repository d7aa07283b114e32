"""The Counterfactual Attacks MNIST files (mnist_autoencoder.ipynb's Classifier and VAE state dicts) through
load_net and the explicit loaders: random weights in the published layouts against a float64 reference forward
written from the spec's layer list (latent_and_regression.md §1.5)."""
import pytest
import torch
import torch.nn.functional as F

from cflight.models.classifiers import MNISTCNN
from cflight.models.generative.vae import ConvVAE
from cflight.models.pretrained import (CounterfactualAttacksVAE, load_counterfactual_attacks_classifier,
                                       load_counterfactual_attacks_vae)
from cflight.models.registry import load_net
from cflight.validation import BadInputError

# MNIST's statistics as cflight stores them (float32 buffers), so the float64 comparison is exact
MEAN, STD = (float(torch.tensor(v, dtype=torch.float32)) for v in (0.1307, 0.3081))


def _random(shapes: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * (0.5 / max(1, s[1:].numel()) ** 0.5 if len(s) > 1 else 0.1)
            for k, s in shapes.items()}


def classifier_state(seed: int = 0, first: int = 32) -> dict:
    """The notebook's ``Classifier``: ``network = Sequential(Conv, ReLU, Pool, Conv, ReLU, Pool, Flatten, Linear,
    ReLU, Linear)``."""
    shapes = {"network.0.weight": (first, 1, 3, 3), "network.0.bias": (first,),
              "network.3.weight": (64, 32, 3, 3), "network.3.bias": (64,),
              "network.7.weight": (128, 3136), "network.7.bias": (128,),
              "network.9.weight": (10, 128), "network.9.bias": (10,)}
    return _random({k: torch.Size(s) for k, s in shapes.items()}, seed)


def vae_state(seed: int = 1) -> dict:
    """The notebook's ``VAE``: ``encoder_conv`` (convs at 0, 2, 4), ``fc_mu``, ``fc_logvar``, ``decoder_input``,
    ``decoder_net`` (Unflatten at 0, transposed convs at 1, 3, 5)."""
    shapes = {"encoder_conv.0.weight": (16, 1, 3, 3), "encoder_conv.0.bias": (16,),
              "encoder_conv.2.weight": (32, 16, 3, 3), "encoder_conv.2.bias": (32,),
              "encoder_conv.4.weight": (64, 32, 3, 3), "encoder_conv.4.bias": (64,),
              "fc_mu.weight": (64, 1024), "fc_mu.bias": (64,),
              "fc_logvar.weight": (64, 1024), "fc_logvar.bias": (64,),
              "decoder_input.weight": (1024, 64), "decoder_input.bias": (1024,),
              "decoder_net.1.weight": (64, 32, 3, 3), "decoder_net.1.bias": (32,),
              "decoder_net.3.weight": (32, 16, 3, 3), "decoder_net.3.bias": (16,),
              "decoder_net.5.weight": (16, 1, 2, 2), "decoder_net.5.bias": (1,)}
    return _random({k: torch.Size(s) for k, s in shapes.items()}, seed)


def reference_classifier(w: dict, x: torch.Tensor) -> torch.Tensor:
    """Conv(1→32,k3,p1)-ReLU-MaxPool2 → Conv(32→64,k3,p1)-ReLU-MaxPool2 → FC(3136→128)-ReLU → FC(128→10)."""
    w = {k: v.double() for k, v in w.items()}
    h = F.max_pool2d(F.relu(F.conv2d(x, w["network.0.weight"], w["network.0.bias"], padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, w["network.3.weight"], w["network.3.bias"], padding=1)), 2)
    h = F.relu(F.linear(h.flatten(1), w["network.7.weight"], w["network.7.bias"]))
    return F.linear(h, w["network.9.weight"], w["network.9.bias"])


def reference_encode(w: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv(1→16)→LReLU(0.2)→Conv(16→32)→LReLU→Conv(32→64)→LReLU (k3 s2 p1) → Flatten(1024) → μ, logvar."""
    w = {k: v.double() for k, v in w.items()}
    h = x
    for i in (0, 2, 4):
        h = F.leaky_relu(F.conv2d(h, w[f"encoder_conv.{i}.weight"], w[f"encoder_conv.{i}.bias"], stride=2,
                                  padding=1), 0.2)
    h = h.flatten(1)
    return (F.linear(h, w["fc_mu.weight"], w["fc_mu.bias"]),
            F.linear(h, w["fc_logvar.weight"], w["fc_logvar.bias"]))


def reference_decode(w: dict, z: torch.Tensor) -> torch.Tensor:
    """Linear(64→1024)→Unflatten(64,4,4)→ConvT(64→32,k3 s2 p1 op1)→LReLU→ConvT(32→16,…)→LReLU→ConvT(16→1,k2 s2 p2)
    →Sigmoid."""
    w = {k: v.double() for k, v in w.items()}
    h = F.linear(z, w["decoder_input.weight"], w["decoder_input.bias"]).reshape(-1, 64, 4, 4)
    for i in (1, 3):
        h = F.leaky_relu(F.conv_transpose2d(h, w[f"decoder_net.{i}.weight"], w[f"decoder_net.{i}.bias"], stride=2,
                                            padding=1, output_padding=1), 0.2)
    return torch.sigmoid(F.conv_transpose2d(h, w["decoder_net.5.weight"], w["decoder_net.5.bias"], stride=2,
                                            padding=2))


def _save(tmp_path, state: dict, name: str) -> str:
    path = str(tmp_path / name)
    torch.save(state, path)
    return path


def test_classifier_file_through_load_net_is_the_papers_cf_loop_network(tmp_path):
    state = classifier_state()
    path = _save(tmp_path, state, "mnist_classifier_weights.pth")
    net = load_net(path, "classifier")
    assert isinstance(net, MNISTCNN) and not net.training
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    # faithful default: no normalisation inside forward (the paper's CF loop fed [0, 1] decoder outputs)
    torch.testing.assert_close(net.double()(x), reference_classifier(state, x), rtol=1e-10, atol=1e-10)
    normalised = load_counterfactual_attacks_classifier(path, normalize_inputs=True).double()
    torch.testing.assert_close(normalised(x), reference_classifier(state, (x - MEAN) / STD), rtol=1e-10,
                               atol=1e-10)


def test_vae_file_through_load_net_encodes_normalised_and_decodes_to_unit_range(tmp_path):
    state = vae_state()
    path = _save(tmp_path, state, "mnist_autoencoder_weights.pth")
    net = load_net(path, "generator")
    assert isinstance(net, CounterfactualAttacksVAE) and isinstance(net, ConvVAE) and not net.training
    net = net.double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    mu, logvar = net.encode(x)
    ref_mu, ref_logvar = reference_encode(state, (x - MEAN) / STD)  # the paper encoded normalised images
    torch.testing.assert_close(mu, ref_mu, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logvar, ref_logvar, rtol=1e-10, atol=1e-10)
    z = torch.randn(2, 64, dtype=torch.float64)
    torch.testing.assert_close(net.decode(z), reference_decode(state, z), rtol=1e-10, atol=1e-10)
    x_rec, _, _ = net(x, noise=torch.zeros_like(mu))
    torch.testing.assert_close(x_rec, reference_decode(state, ref_mu), rtol=1e-10, atol=1e-10)
    plain = load_counterfactual_attacks_vae(path, normalize_encoder_inputs=False).double()
    assert type(plain) is ConvVAE
    torch.testing.assert_close(plain.encode(x)[0], reference_encode(state, x)[0], rtol=1e-10, atol=1e-10)


def test_state_dict_of_the_loaded_vae_is_conv_vae_layout(tmp_path):
    net = load_counterfactual_attacks_vae(_save(tmp_path, vae_state(), "vae.pth"))
    assert set(net.state_dict()) == set(ConvVAE().state_dict())


def test_wrong_kind_and_mismatching_files_are_one_line(tmp_path):
    classifier = _save(tmp_path, classifier_state(), "classifier.pth")
    with pytest.raises(BadInputError, match=r"holds a classifier \(the Counterfactual Attacks MNIST classifier.*"
                                            r"expected a generator; pass a generator checkpoint here"):
        load_net(classifier, "generator")
    bad = _save(tmp_path, classifier_state(first=16), "bad.pth")
    with pytest.raises(BadInputError) as err:
        load_net(bad, "classifier")
    message = str(err.value)
    assert "\n" not in message and "bad.pth" in message
    assert "was read as the Counterfactual Attacks MNIST classifier" in message
    assert "'network.0.weight': file (16, 1, 3, 3), expected (32, 1, 3, 3)" in message
    with pytest.raises(BadInputError, match=r"'.*classifier\.pth' is not the Counterfactual Attacks VAE"):
        load_counterfactual_attacks_vae(classifier)
    partial = vae_state()
    del partial["decoder_net.5.bias"]  # errors name the file's (the notebook's) tensors
    with pytest.raises(BadInputError, match=r"was read as the Counterfactual Attacks MNIST VAE .*1 missing tensors "
                                            r"\(e\.g\. 'decoder_net\.5\.bias'\)"):
        load_net(_save(tmp_path, partial, "partial.pth"), "generator")
