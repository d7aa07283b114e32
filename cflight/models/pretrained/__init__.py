"""Loaders of published weights (the user's files; nothing is downloaded): guided-diffusion ADM UNets,
Madry / RobustBench ResNets, timm models with their preprocessing, the Counterfactual Attacks MNIST files, the
CelebA-HQ DenseNets of ACE / AC-RE; ``*File`` classes wrap the loaders for YAML configs."""
from cflight.models.pretrained.guided_diffusion import PRESETS as GUIDED_DIFFUSION_PRESETS
from cflight.models.pretrained.guided_diffusion import GuidedDiffusionFile, load_guided_diffusion
from cflight.models.pretrained.classifiers import (RobustResNetFile, TimmClassifierFile, TorchvisionResNet,
                                                   load_robust_resnet, load_timm_classifier)
from cflight.models.pretrained.celebahq import (DecisionDenseNet, DecisionDenseNetFile, DenseNetRegressor,
                                                DenseNetRegressorFile, load_decision_densenet,
                                                load_densenet_regressor)
from cflight.models.pretrained.counterfactual_attacks import (CounterfactualAttacksVAE,
                                                              load_counterfactual_attacks_classifier,
                                                              load_counterfactual_attacks_vae)
from cflight.models.pretrained.published import PUBLISHED_FILES, download_hint
from cflight.models.pretrained.diffae_official import PRESETS as DIFFAE_PRESETS
from cflight.models.pretrained.diffae_official import OfficialDiffAE, load_official_diffae

__all__ = ["GUIDED_DIFFUSION_PRESETS", "GuidedDiffusionFile", "load_guided_diffusion"]
__all__ += ["CounterfactualAttacksVAE", "RobustResNetFile", "TimmClassifierFile", "TorchvisionResNet",
            "load_counterfactual_attacks_classifier", "load_counterfactual_attacks_vae", "load_robust_resnet",
            "load_timm_classifier"]
__all__ += ["DecisionDenseNet", "DecisionDenseNetFile", "DenseNetRegressor", "DenseNetRegressorFile",
            "load_decision_densenet", "load_densenet_regressor", "PUBLISHED_FILES", "download_hint"]
__all__ += ["DIFFAE_PRESETS", "OfficialDiffAE", "load_official_diffae"]
