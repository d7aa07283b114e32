"""Descriptor models on latents and on images."""
from cflight.models.descriptors.generic import GenericImageDescriptors
from cflight.models.descriptors.heads import ImageDescriptorCNN, LatentDescriptorHeads
from cflight.models.descriptors.morphometric import MorphometricDescriptors

__all__ = ["GenericImageDescriptors", "ImageDescriptorCNN", "LatentDescriptorHeads", "MorphometricDescriptors"]
