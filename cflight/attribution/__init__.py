"""Descriptor attributions: local changes per counterfactual and their global aggregation."""
from cflight.attribution.global_attribution import GLOBAL_ROWS, GlobalAttribution, global_rows, summarise
from cflight.attribution.local import descriptor_change, image_attribution, latent_attribution, top_k

__all__ = ["GLOBAL_ROWS", "GlobalAttribution", "descriptor_change", "global_rows", "image_attribution",
           "latent_attribution", "summarise", "top_k"]
