"""LightningModules, callbacks and the prediction writer."""
from cflight.lit.classifier import ClassifierModule
from cflight.lit.ddpm import DDPMModule
from cflight.lit.descriptor import DescriptorModule
from cflight.lit.explain import ExplainModule
from cflight.lit.gan import GANModule
from cflight.lit.export import export_checkpoint
from cflight.lit.loggers import AutoWandbLogger
from cflight.lit.robust import AdversarialTrainingModule
from cflight.lit.vae import VAEModule
from cflight.lit.writer import CounterfactualWriter

__all__ = ["AutoWandbLogger", "ClassifierModule", "CounterfactualWriter", "DescriptorModule", "ExplainModule", "GANModule", "VAEModule",
           "export_checkpoint"]
