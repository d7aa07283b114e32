"""cflight: visual counterfactual explanations of image classifiers and regressors on PyTorch Lightning.

The public Python API, in three lines with your own classifier and generator (no cflight checkpoint, no
Lightning)::

    import cflight
    method = cflight.LatentAttack(cflight.LatentGenerator(decode=my_decoder, encode=my_encoder), lr=0.1)
    out = method(x, cflight.ClassTarget(classes, threshold=0.5), my_classifier, index=dataset_indices)

``x`` is ``[B, C, H, W]`` in [0, 1]; ``my_classifier(x)`` returns ``[B, K]`` logits (a regressor ``[B, 1]``
values, with a :class:`RegressionTarget`); ``out`` is a :class:`CounterfactualOutput` (``x_cf``, ``pred``,
``pred_cf``, ``success``, ``steps``, ``latent``, ``extras``). ``index`` names each image's randomness; see
:meth:`CounterfactualMethod.forward`.

Names exported here, by group (each is also importable from the submodule named in brackets):

* methods [``cflight.methods``]: :class:`CounterfactualMethod` (the base), :class:`LatentAttack`,
  :class:`DVCE`, :class:`DiME`, :class:`SparseAFW` (SVCE), :class:`PGD`, :class:`APGD`, :class:`ACE`,
  :class:`ACRE`, :class:`DiffAERE`, :class:`InterFaceGANEdit`, :class:`MethodComparison`;
* targets and outputs [``cflight.types``]: :class:`ClassTarget`, :class:`RegressionTarget`,
  :class:`CounterfactualOutput`;
* target policies, what a job explains each image toward [``cflight.targets``]: :class:`TargetPolicy`,
  :class:`SecondMostLikely`, :class:`FixedClass`, :class:`TrueLabel`, :class:`FlipBinary`,
  :class:`FixedValue`, :class:`SeveralValues`, :class:`SquaresMirror`, :class:`PairTargets`,
  :class:`IndexTargets`, :class:`LabelValues`;
* networks [``cflight.models``]: :func:`load_net` (any cflight weight file), :func:`export_net`,
  :func:`load_guided_diffusion` (published ADM UNets), :func:`load_official_diffae` (the official Diff-AE),
  :class:`LatentGenerator` (your own encoder/decoder in the latent-method protocol), :class:`GANManifold`
  (a GAN with projection by optimisation), :class:`Acceleration` (GPU speed options);
* Lightning [``cflight.lit``]: :class:`ExplainModule`, :class:`CounterfactualWriter`,
  :func:`export_checkpoint`;
* evaluation [``cflight.metrics``, ``cflight.attribution``]: :class:`Validity`, :class:`OracleValidity`,
  :class:`ImageDistances`, :class:`RegressionSuccess`, :class:`FrechetDistance`, :class:`KernelDistance`,
  :class:`MNAC`, :class:`COUT`, :class:`GlobalAttribution`;
* errors [``cflight.validation``]: :class:`BadInputError`.

Importing ``cflight`` is light: every name (and every submodule, e.g. ``cflight.lit``) is imported on first
use, so ``import cflight`` does not pull in torch, Lightning, timm or W&B until something needs them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_EXPORTS: dict[str, str] = {
    # methods
    "CounterfactualMethod": "cflight.methods",
    "LatentAttack": "cflight.methods",
    "DVCE": "cflight.methods",
    "DiME": "cflight.methods",
    "SparseAFW": "cflight.methods",
    "PGD": "cflight.methods",
    "APGD": "cflight.methods",
    "ACE": "cflight.methods",
    "ACRE": "cflight.methods",
    "DiffAERE": "cflight.methods",
    "InterFaceGANEdit": "cflight.methods",
    "MethodComparison": "cflight.methods",
    # targets and outputs
    "ClassTarget": "cflight.types",
    "RegressionTarget": "cflight.types",
    "CounterfactualOutput": "cflight.types",
    # target policies
    "TargetPolicy": "cflight.targets",
    "SecondMostLikely": "cflight.targets",
    "FixedClass": "cflight.targets",
    "TrueLabel": "cflight.targets",
    "FlipBinary": "cflight.targets",
    "FixedValue": "cflight.targets",
    "SeveralValues": "cflight.targets",
    "SquaresMirror": "cflight.targets",
    "PairTargets": "cflight.targets",
    "IndexTargets": "cflight.targets",
    "LabelValues": "cflight.targets",
    # networks
    "load_net": "cflight.models.registry",
    "export_net": "cflight.models.registry",
    "load_guided_diffusion": "cflight.models.pretrained.guided_diffusion",
    "load_official_diffae": "cflight.models.pretrained.diffae_official",
    "LatentGenerator": "cflight.models.generative.adapter",
    "GANManifold": "cflight.models.generative.projection",
    "Acceleration": "cflight.models.acceleration",
    # Lightning
    "ExplainModule": "cflight.lit",
    "CounterfactualWriter": "cflight.lit",
    "export_checkpoint": "cflight.lit.export",
    # evaluation
    "Validity": "cflight.metrics",
    "OracleValidity": "cflight.metrics",
    "ImageDistances": "cflight.metrics",
    "RegressionSuccess": "cflight.metrics",
    "FrechetDistance": "cflight.metrics",
    "KernelDistance": "cflight.metrics",
    "MNAC": "cflight.metrics",
    "COUT": "cflight.metrics",
    "GlobalAttribution": "cflight.attribution",
    # errors
    "BadInputError": "cflight.validation",
}

# submodules reachable as attributes after a bare ``import cflight`` (e.g. ``cflight.lit.VAEModule``)
_SUBMODULES = ("attribution", "cli", "data", "lit", "methods", "metrics", "models", "rng", "targets", "types",
               "validation", "viz")

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"cflight.{name}")
    else:
        raise AttributeError(f"module 'cflight' has no attribute {name!r}")
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from cflight.attribution import GlobalAttribution
    from cflight.lit import CounterfactualWriter, ExplainModule
    from cflight.lit.export import export_checkpoint
    from cflight.methods import (ACE, ACRE, APGD, DVCE, PGD, CounterfactualMethod, DiffAERE, DiME,
                                 InterFaceGANEdit, LatentAttack, MethodComparison, SparseAFW)
    from cflight.metrics import (COUT, MNAC, FrechetDistance, ImageDistances, KernelDistance, OracleValidity,
                                 RegressionSuccess, Validity)
    from cflight.models.acceleration import Acceleration
    from cflight.models.generative.adapter import LatentGenerator
    from cflight.models.generative.projection import GANManifold
    from cflight.models.pretrained.diffae_official import load_official_diffae
    from cflight.models.pretrained.guided_diffusion import load_guided_diffusion
    from cflight.models.registry import export_net, load_net
    from cflight.targets import (FixedClass, FixedValue, FlipBinary, IndexTargets, LabelValues, PairTargets,
                                 SecondMostLikely, SeveralValues, SquaresMirror, TargetPolicy, TrueLabel)
    from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget
    from cflight.validation import BadInputError
