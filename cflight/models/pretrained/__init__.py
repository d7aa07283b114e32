"""Loaders of published weights (the user's files; nothing is downloaded): guided-diffusion ADM UNets,
Madry / RobustBench ResNets, timm models with their preprocessing, the Counterfactual Attacks MNIST files."""
from cflight.models.pretrained.guided_diffusion import PRESETS as GUIDED_DIFFUSION_PRESETS
from cflight.models.pretrained.guided_diffusion import load_guided_diffusion
from cflight.models.pretrained.classifiers import TorchvisionResNet, load_robust_resnet, load_timm_classifier
from cflight.models.pretrained.counterfactual_attacks import (CounterfactualAttacksVAE,
                                                              load_counterfactual_attacks_classifier,
                                                              load_counterfactual_attacks_vae)

__all__ = ["GUIDED_DIFFUSION_PRESETS", "load_guided_diffusion"]
__all__ += ["CounterfactualAttacksVAE", "TorchvisionResNet", "load_counterfactual_attacks_classifier",
            "load_counterfactual_attacks_vae", "load_robust_resnet", "load_timm_classifier"]
