"""Descriptor attributions: local changes per counterfactual and their global aggregation."""
from cflight.attribution.global_attribution import GlobalAttribution, summarise
from cflight.attribution.local import descriptor_change, image_attribution, latent_attribution, top_k

__all__ = ["GlobalAttribution", "descriptor_change", "image_attribution", "latent_attribution", "summarise", "top_k"]
