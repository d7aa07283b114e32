"""The CelebA-HQ networks of ACE and AC-RE behind cflight's contract (images in [0, 1], any size).

* **STEEX decision model** (Jacob et al. 2022, ``valeoai/STEEX`` ``checkpoints_decision_densenet.tar.gz``,
  ``celebamaskhq/checkpoint.tar``; ACE's CelebA-HQ classifier, ``ACE/models/steex/DecisionDensenetModel.py``):
  ``{"model_state_dict": DecisionDensenetModel(3).state_dict(), ...}`` with keys
  ``feat_extract.feat_extract.features.*`` (a torchvision DenseNet-121 whose ``classifier`` is an identity)
  and ``classifier.weight/bias`` ``[K, 1024]``. ACE wraps it in ``Normalizer(mean 0.5, std 0.5)`` and reads one
  logit: for CelebA-HQ ``K = 3`` with rows Male (ACE ``label_query`` 20), Smiling (31), Young (39)
  (``ACE/models/__init__.py::get_classifier``). A 40-row head is read with CelebA's attribute order.
* **Ha & Bender's age regressor** (``Diffusion-Counterfactuals-for-Image-Regressors``
  ``diff_cf_ir/models.py::DenseNetRegression``, a Lightning checkpoint; the weights are not released, its
  training script is): ``state_dict`` keys ``model.mu/sigma`` ``[1, 3, 1, 1]`` (the normaliser, 0.5/0.5),
  ``model.classifier.0.feat_extract.features.*`` (the STEEX DenseNet) and ``model.classifier.1.weight``
  ``[1, 1024]``; output ``age / 100``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torchvision
from torch import Tensor, nn

from cflight.models.classifiers.base import Normalize
from cflight.models.pretrained.published import Published, load_into, read_checkpoint, unwrap_state_dict
from cflight.models.registry import register_net
from cflight.validation import BadInputError

__all__ = ["CELEBA_ATTRIBUTES", "STEEX_CELEBAHQ_ATTRIBUTES", "DecisionDenseNet", "DecisionDenseNetFile",
           "DenseNetRegressor", "DenseNetRegressorFile", "load_decision_densenet", "load_densenet_regressor"]

# list_attr_celeba.txt's column order (ACE's label_query indexes it: 20 Male, 31 Smiling, 39 Young)
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
STEEX_CELEBAHQ_ATTRIBUTES = ("Male", "Smiling", "Young")  # the 3-row head of celebamaskhq/checkpoint.tar
FEATURES = 1024
DECISION = ("the STEEX DenseNet-121 decision model (ACE's CelebA-HQ classifier: {'model_state_dict': keys "
            "'feat_extract.feat_extract.features.*', 'classifier.weight' [K, 1024]})")
REGRESSOR = ("Ha & Bender's DenseNetRegression Lightning checkpoint (state_dict keys 'model.mu', "
             "'model.classifier.0.feat_extract.features.*', 'model.classifier.1.weight' [1, 1024])")
_FIX_DECISION = "pass STEEX's celebamaskhq/checkpoint.tar (checkpoints_decision_densenet.tar.gz) unmodified"
_FIX_REGRESSOR = "pass the .ckpt written by the paper's DenseNetRegression training (4_train_regressors.sh)"
# torchvision < 0.3 named the dense layers' modules 'norm.1' / 'conv.2'; torchvision renames them on load too
_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                     r"([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


class _DenseNet121(nn.Module):
    """STEEX's ``DenseNet121``: torchvision's DenseNet-121 with an identity classifier (1024 features)."""

    def __init__(self) -> None:
        super().__init__()
        self.feat_extract = torchvision.models.densenet121(weights=None)
        self.feat_extract.classifier = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.feat_extract(x)


def _attribute_index(attribute: str | int | None, num_classes: int) -> int | None:
    names = STEEX_CELEBAHQ_ATTRIBUTES if num_classes == 3 else CELEBA_ATTRIBUTES if num_classes == 40 else ()
    if attribute is None:
        return None
    if isinstance(attribute, int):
        if not 0 <= attribute < num_classes:
            raise BadInputError(f"attribute index {attribute} is outside the model's {num_classes} outputs")
        return attribute
    if attribute not in names:
        raise BadInputError(f"attribute {attribute!r} is not an output of this {num_classes}-attribute DenseNet; "
                            f"choose one of {list(names) or list(range(num_classes))}")
    return names.index(attribute)


@register_net("decision_densenet", kind="classifier")
class DecisionDenseNet(nn.Module):
    """STEEX's ``DecisionDensenetModel`` behind ACE's normaliser: ``classifier(densenet((x − 0.5)/0.5))``.

    The state dict has the published keys (``feat_extract.feat_extract.*``, ``classifier.*``). With
    ``attribute`` the forward returns that attribute's logit ``[B, 1]`` (a binary classifier: cflight's
    one-logit convention, ``FlipBinary`` / ``FixedClass``), else all ``[B, num_classes]`` logits.

    :param num_classes: head rows (3 for the CelebA-HQ file: Male, Smiling, Young).
    :param attribute: the explained attribute: a name (``"Smiling"``, ``"Young"``) or a row index.
    """

    def __init__(self, num_classes: int = 3, attribute: str | int | None = None) -> None:
        super().__init__()
        self.in_channels = 3
        self.query = _attribute_index(attribute, num_classes)
        self.attribute = attribute
        self.num_classes = 1 if self.query is not None else num_classes
        self.normalize = Normalize(0.5, 0.5, 3)
        self.feat_extract = _DenseNet121()
        self.classifier = nn.Linear(FEATURES, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Images in [0, 1] ``[B, 3, H, W]`` → logits ``[B, 1]`` (with ``attribute``) or ``[B, K]``."""
        logits = self.classifier(self.feat_extract(self.normalize(x)))
        return logits if self.query is None else logits[:, self.query:self.query + 1]


@register_net("densenet_regressor", kind="regressor")
class DenseNetRegressor(nn.Module):
    """Ha & Bender's ``DenseNetRegression``: ``Linear(1024 → 1)(densenet((x − μ)/σ))`` ``[B, 1]``.

    The state dict is the Lightning module's (``model.mu``, ``model.sigma``, ``model.classifier.0.*``,
    ``model.classifier.1.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_channels = 3
        self.model = _Normalizer()

    def forward(self, x: Tensor) -> Tensor:
        """Images in [0, 1] ``[B, 3, H, W]`` → predictions ``[B, 1]`` (age / 100 for the paper's model)."""
        return self.model(x)


class _Normalizer(nn.Module):
    """ACE's ``Normalizer`` (buffers ``mu``, ``sigma`` in the file) around ``Sequential(DenseNet, Linear)``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mu", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("sigma", torch.full((1, 3, 1, 1), 0.5))
        self.classifier = nn.Sequential(_DenseNet121(), nn.Linear(FEATURES, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier((x - self.mu) / self.sigma)


def _modern(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {_LEGACY.sub(r"\1\2", k): v for k, v in state.items()}


def _state(path: str) -> dict[str, Tensor] | None:
    return unwrap_state_dict(read_checkpoint(path), keys=("model_state_dict", "state_dict", "model"))


def identify(state: Mapping[str, Tensor]) -> Published | None:
    """The CelebA-HQ DenseNet layout of ``state`` (``load_net``: all logits / the regressor), or ``None``."""
    if "classifier.weight" in state and any(k.startswith("feat_extract.feat_extract.") for k in state):
        return Published("classifier", DECISION, lambda path: _build_decision(dict(state), path, None))
    if "model.classifier.1.weight" in state and "model.mu" in state:
        return Published("regressor", REGRESSOR, lambda path: _build_regressor(dict(state), path))
    return None


def _build_decision(state: dict[str, Tensor], path: str, attribute: str | int | None) -> DecisionDenseNet:
    head = state.get("classifier.weight")
    if head is None or head.ndim != 2 or head.shape[1] != FEATURES:
        raise BadInputError(f"checkpoint {path!r} is not {DECISION} (no 'classifier.weight' [K, {FEATURES}]); "
                            f"{_FIX_DECISION}")
    net = DecisionDenseNet(int(head.shape[0]), attribute)
    return load_into(net, _modern(state), path, DECISION, _FIX_DECISION)


def _build_regressor(state: dict[str, Tensor], path: str) -> DenseNetRegressor:
    return load_into(DenseNetRegressor(), _modern(state), path, REGRESSOR, _FIX_REGRESSOR)


def load_decision_densenet(path: str, attribute: str | int | None = "Smiling") -> DecisionDenseNet:
    """STEEX's CelebA-HQ decision DenseNet (``celebamaskhq/checkpoint.tar``), strictly loaded, in eval mode,
    explaining ``attribute`` (its one logit; ``None``: all logits)."""
    state = _state(path)
    if state is None:
        raise BadInputError(f"checkpoint {path!r} holds no state dict (expected {DECISION}); {_FIX_DECISION}")
    return _build_decision(state, path, attribute)


def load_densenet_regressor(path: str) -> DenseNetRegressor:
    """Ha & Bender's DenseNet age regressor (its Lightning ``.ckpt``), strictly loaded, in eval mode."""
    state = _state(path)
    if state is None or "model.classifier.1.weight" not in state:
        raise BadInputError(f"checkpoint {path!r} is not {REGRESSOR}; {_FIX_REGRESSOR}")
    return _build_regressor(state, path)


class DecisionDenseNetFile(DecisionDenseNet):
    """:func:`load_decision_densenet` as a class, for YAML configs (``model: {class_path:
    cflight.models.pretrained.DecisionDenseNetFile, init_args: {path: ..., attribute: Smiling}}``)."""

    def __init__(self, path: str, attribute: str | int | None = "Smiling") -> None:
        net = load_decision_densenet(path, attribute)
        super().__init__(net.classifier.out_features, attribute)
        self.load_state_dict(net.state_dict())
        self.path = path
        self.eval()


class DenseNetRegressorFile(DenseNetRegressor):
    """:func:`load_densenet_regressor` as a class, for YAML configs."""

    def __init__(self, path: str) -> None:
        net = load_densenet_regressor(path)
        super().__init__()
        self.load_state_dict(net.state_dict())
        self.path = path
        self.eval()
