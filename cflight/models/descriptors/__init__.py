"""Descriptor models on latents and on images."""
from cflight.models.descriptors.heads import ImageDescriptorCNN, LatentDescriptorHeads

__all__ = ["ImageDescriptorCNN", "LatentDescriptorHeads"]
