"""The published MNIST weights of Counterfactual Attacks (Goldwasser & Hooker 2025) as cflight networks.

The files are plain state dicts saved by ``MNIST/Code/mnist_autoencoder.ipynb`` of
``jeremy-goldwasser/counterfactual-attacks`` (``MNIST/Data/mnist_classifier_weights.pth`` and
``mnist_autoencoder_weights.pth``). Their parameter names were read from that notebook's classes:

* ``Classifier``: one ``self.network = nn.Sequential(Conv, ReLU, MaxPool, Conv, ReLU, MaxPool, Flatten, Linear,
  ReLU, Linear)``, so the weights are ``network.{0,3,7,9}.{weight,bias}``;
* ``VAE``: ``encoder_conv = Sequential(Conv, LReLU, Conv, LReLU, Conv, LReLU, Flatten)``, ``fc_mu``,
  ``fc_logvar``, ``decoder_input`` (Linear 64→1024) and ``decoder_net = Sequential(Unflatten, ConvT, LReLU,
  ConvT, LReLU, ConvT, Sigmoid)``, so ``encoder_conv.{0,2,4}``, ``decoder_net.{1,3,5}``.

cflight's ``mnist_cnn`` and ``conv_vae`` are the same networks up to these names (spec latent_and_regression.md
§1.5); :data:`CLASSIFIER_NAMES` and :data:`VAE_NAMES` are the whole correspondence.

**Normalisation.** Both networks were trained on MNIST normalised with ``(0.1307, 0.3081)``, but the paper's
counterfactual loop feeds the *decoder's* [0, 1] outputs to the classifier un-normalised (spec §1.5 "Quirk"),
while the latents it starts from are encodings of *normalised* images. The faithful defaults are therefore: the
classifier does **not** normalise (``normalize_inputs=False``; pass ``True`` for the training distribution), and
the VAE's encoder **does** normalise its [0, 1] inputs (``normalize_encoder_inputs=True``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from cflight.models.classifiers.base import Normalize
from cflight.models.classifiers.cnn import MNIST_MEAN, MNIST_STD, MNISTCNN
from cflight.models.generative.vae import ConvVAE
from cflight.models.pretrained.published import Net, Published, load_into, read_checkpoint, unwrap_state_dict
from cflight.models.registry import register_net
from cflight.validation import BadInputError

# The notebook's module names -> cflight's (each with ``.weight`` and ``.bias``). Correct them here only.
CLASSIFIER_NAMES = {"network.0": "features.0", "network.3": "features.3",
                    "network.7": "classifier.0", "network.9": "classifier.2"}
VAE_NAMES = {"encoder_conv.0": "encoder.0", "encoder_conv.2": "encoder.2", "encoder_conv.4": "encoder.4",
             "fc_mu": "fc_mu", "fc_logvar": "fc_logvar", "decoder_input": "fc_dec",
             "decoder_net.1": "decoder.0", "decoder_net.3": "decoder.2", "decoder_net.5": "decoder.4"}

CLASSIFIER_LAYOUT = ("the Counterfactual Attacks MNIST classifier (mnist_autoencoder.ipynb's Classifier: keys "
                     "'network.{0,3,7,9}.weight/bias')")
VAE_LAYOUT = ("the Counterfactual Attacks MNIST VAE (mnist_autoencoder.ipynb's VAE: keys 'encoder_conv.*', "
              "'fc_mu', 'fc_logvar', 'decoder_input', 'decoder_net.*')")
_FIX = "pass the notebook's own mnist_classifier_weights.pth / mnist_autoencoder_weights.pth"


@register_net("counterfactual_attacks_vae", kind="generator")
class CounterfactualAttacksVAE(ConvVAE):
    """``conv_vae`` whose encoder normalises its [0, 1] inputs, as the paper's encoder saw MNIST (spec §1.5).

    The decoder still emits [0, 1] images; the state dict is ``conv_vae``'s (the statistics are constructor
    arguments, not weights).

    :param latent_dim: size of ``z``.
    :param in_channels: image channels.
    :param image_size: 28 or 32.
    :param mean: per-channel (or scalar) mean subtracted before the encoder.
    :param std: per-channel (or scalar) std divided by before the encoder.
    """

    def __init__(self, latent_dim: int = 64, in_channels: int = 1, image_size: int | Sequence[int] = 28,
                 mean: float | Sequence[float] = MNIST_MEAN, std: float | Sequence[float] = MNIST_STD) -> None:
        super().__init__(latent_dim, in_channels, image_size)
        self.normalize = Normalize(mean, std, in_channels)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images in [0, 1] ``[B, C, H, W]`` → ``(mu, logvar)``, each ``[B, latent_dim]``."""
        return super().encode(self.normalize(x))


def _keys(names: Mapping[str, str]) -> set[str]:
    return {f"{module}.{p}" for module in names for p in ("weight", "bias")}


def _rename(key: str, names: Mapping[str, str]) -> str:
    """``key`` with its module (all but the parameter name) renamed by ``names``, if listed there."""
    module, _, param = key.rpartition(".")
    return f"{names[module]}.{param}" if module in names else key


def _load(net: Net, state: Mapping[str, Tensor], names: Mapping[str, str], path: str, layout: str) -> Net:
    back = {v: k for k, v in names.items()}  # cflight -> notebook, to name the file's tensors in errors
    mapped = {_rename(k, names): v for k, v in state.items()}
    return load_into(net, mapped, path, layout, _FIX, lambda k: _rename(k, back))


def build_classifier(state: Mapping[str, Tensor], path: str, normalize_inputs: bool = False) -> MNISTCNN:
    """``mnist_cnn`` with the notebook classifier's weights; normalising inside ``forward`` only if asked."""
    stats = dict(mean=MNIST_MEAN, std=MNIST_STD) if normalize_inputs else dict(mean=0.0, std=1.0)
    return _load(MNISTCNN(**stats), state, CLASSIFIER_NAMES, path, CLASSIFIER_LAYOUT)


def build_vae(state: Mapping[str, Tensor], path: str, normalize_encoder_inputs: bool = True) -> ConvVAE:
    """``conv_vae`` (or, normalising the encoder's inputs, :class:`CounterfactualAttacksVAE`) with the weights."""
    net = CounterfactualAttacksVAE() if normalize_encoder_inputs else ConvVAE()
    return _load(net, state, VAE_NAMES, path, VAE_LAYOUT)


def identify(state: Mapping[str, Tensor]) -> Published | None:
    """The published layout ``state`` has (by its distinctive keys), with the faithful defaults; else ``None``."""
    keys = set(state)
    if "network.0.weight" in keys and len(keys & _keys(CLASSIFIER_NAMES)) >= len(keys) // 2:
        return Published("classifier", CLASSIFIER_LAYOUT, lambda path: build_classifier(state, path))
    if {"encoder_conv.0.weight", "decoder_net.1.weight"} <= keys:
        return Published("generator", VAE_LAYOUT, lambda path: build_vae(state, path))
    return None


def _state(path: str, layout: str, wanted: str) -> dict[str, Tensor]:
    state = unwrap_state_dict(read_checkpoint(path))
    found = identify(state) if state is not None else None
    if found is None or found.layout != layout:
        raise BadInputError(f"checkpoint {path!r} is not {wanted}: {layout} expected"
                            f"{f', found {found.layout}' if found else ''}; {_FIX}")
    return state


def load_counterfactual_attacks_classifier(path: str, normalize_inputs: bool = False) -> MNISTCNN:
    """The paper's MNIST classifier file as ``mnist_cnn`` (images in [0, 1] ``[B, 1, 28, 28]`` → 10 logits).

    :param normalize_inputs: ``False`` (faithful to the paper's CF loop, which fed [0, 1] decoder outputs):
        no normalisation; ``True``: ``(x − 0.1307) / 0.3081`` inside ``forward`` (its training distribution).
    """
    return build_classifier(_state(path, CLASSIFIER_LAYOUT, "the Counterfactual Attacks classifier"), path,
                            normalize_inputs)


def load_counterfactual_attacks_vae(path: str, normalize_encoder_inputs: bool = True) -> ConvVAE:
    """The paper's MNIST VAE file as ``conv_vae`` (``encode``: [0, 1] images → μ, log σ²; ``decode`` → [0, 1]).

    :param normalize_encoder_inputs: ``True`` (faithful: the paper encoded normalised images): the encoder
        normalises with MNIST's statistics; ``False``: a plain ``conv_vae`` that encodes the raw [0, 1] input.
    """
    return build_vae(_state(path, VAE_LAYOUT, "the Counterfactual Attacks VAE"), path, normalize_encoder_inputs)

