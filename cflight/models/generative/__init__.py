"""Generative networks (plain ``nn.Module``s), registered on import."""
from cflight.models.generative.adapter import LatentGenerator
from cflight.models.generative.diffae import DiffAE, LatentProbe, SemanticEncoder
from cflight.models.generative.gan import ConvEncoder, DCGANDiscriminator, DCGANGenerator, GANLatentModel
from cflight.models.generative.projection import GANManifold
from cflight.models.generative.unet import UNet
from cflight.models.generative.vae import ConvVAE

__all__ = ["ConvEncoder", "ConvVAE", "DCGANDiscriminator", "DCGANGenerator", "DiffAE", "GANLatentModel", "GANManifold",
           "LatentGenerator", "LatentProbe", "SemanticEncoder"]
