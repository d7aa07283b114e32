"""LightningModules, callbacks and the prediction writer."""
from cflight.lit.explain import ExplainModule
from cflight.lit.loggers import AutoWandbLogger
from cflight.lit.writer import CounterfactualWriter

__all__ = ["AutoWandbLogger", "CounterfactualWriter", "ExplainModule"]
