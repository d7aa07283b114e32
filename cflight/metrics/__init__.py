"""Evaluation metrics that are not torchmetrics built-ins (counterfactual quality, realism, cost)."""
from cflight.metrics.attributes import MNAC, CorrelationDifference, QueryCorrelation, attributes_changed
from cflight.metrics.cost import EvaluationCounter
from cflight.metrics.cout import COUT, cout_scores, insertion_curves
from cflight.metrics.distances import ImageDistances, changed_fraction, image_distances
from cflight.metrics.fid import FrechetDistance, PenultimateFeatures, frechet_distance
from cflight.metrics.perceptual import LPIPS, LPIPSNetwork, lpips_distance, lpips_network
from cflight.metrics.realism import (InceptionFeatures, KernelDistance, SplitFrechetDistance, inception_features,
                                     polynomial_mmd)
from cflight.metrics.regression import RegressionSuccess, regression_columns
from cflight.metrics.validity import OracleValidity, Validity, flipped, predicted_class

__all__ = [
    "COUT", "LPIPS", "MNAC", "CorrelationDifference", "EvaluationCounter", "FrechetDistance", "ImageDistances",
    "InceptionFeatures", "KernelDistance", "LPIPSNetwork", "OracleValidity", "PenultimateFeatures",
    "QueryCorrelation", "RegressionSuccess", "SplitFrechetDistance", "Validity", "attributes_changed",
    "changed_fraction", "cout_scores", "flipped", "frechet_distance", "image_distances", "inception_features",
    "insertion_curves", "lpips_distance", "lpips_network", "polynomial_mmd", "predicted_class",
    "regression_columns",
]
