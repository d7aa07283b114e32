"""Image regressors (plain ``nn.Module``s, images in [0, 1], normalised inside ``forward``, ``[B, 1]`` out),
registered on import under kind ``"regressor"``."""
from cflight.models.regressors.cnn import CNNRegressor
from cflight.models.regressors.resnet import SquaresResNet18
from cflight.models.regressors.timm_wrapper import TimmRegressor

__all__ = ["CNNRegressor", "SquaresResNet18", "TimmRegressor"]
