"""cflight: visual counterfactual explanations of image classifiers and regressors on PyTorch Lightning."""
from cflight.methods import CounterfactualMethod, LatentAttack
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget

__version__ = "0.1.0"
__all__ = ["ClassTarget", "CounterfactualMethod", "CounterfactualOutput", "LatentAttack", "RegressionTarget"]
