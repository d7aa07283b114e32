"""Evaluation metrics that are not torchmetrics built-ins."""
from cflight.metrics.fid import FrechetDistance, PenultimateFeatures, frechet_distance

__all__ = ["FrechetDistance", "PenultimateFeatures", "frechet_distance"]
