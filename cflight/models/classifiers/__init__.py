"""Image classifiers (plain ``nn.Module``s, normalisation inside ``forward``), registered on import."""
from cflight.models.classifiers.base import Normalize
from cflight.models.classifiers.cnn import MNISTCNN, SimpleCNN
from cflight.models.classifiers.temperature import TemperatureWrapper, expected_calibration_error, fit_temperature
from cflight.models.classifiers.timm_wrapper import TimmClassifier

__all__ = ["MNISTCNN", "Normalize", "SimpleCNN", "TimmClassifier"]
