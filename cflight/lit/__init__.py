"""LightningModules, callbacks and the prediction writer."""
from cflight.lit._warnings import silence_known_warnings

silence_known_warnings()

from cflight.lit.classifier import ClassifierModule
from cflight.lit.ddpm import DDPMModule
from cflight.lit.descriptor import DescriptorModule
from cflight.lit.diffae import DiffAEModule
from cflight.lit.diffae_probe import DiffAEProbeModule
from cflight.lit.explain import ExplainModule
from cflight.lit.gan import GANModule
from cflight.lit.regressor import RegressorModule
from cflight.lit.export import export_checkpoint
from cflight.lit.loggers import AutoWandbLogger
from cflight.lit.progress import ExplainProgressBar
from cflight.lit.robust import AdversarialTrainingModule
from cflight.lit.vae import VAEModule
from cflight.lit.writer import CounterfactualWriter

__all__ = ["AdversarialTrainingModule", "AutoWandbLogger", "ClassifierModule", "CounterfactualWriter", "DDPMModule",
           "DescriptorModule", "DiffAEModule", "DiffAEProbeModule", "ExplainModule", "ExplainProgressBar", "GANModule",
           "RegressorModule", "VAEModule", "export_checkpoint"]
