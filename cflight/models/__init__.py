"""cflight's networks. Subpackages are imported where used; the loaders below are imported lazily (on first
access) so that importing ``cflight.models.<submodule>`` pulls in nothing else."""
from __future__ import annotations

from typing import Any

__all__ = ["load_guided_diffusion", "load_official_diffae"]


def __getattr__(name: str) -> Any:
    if name == "load_guided_diffusion":
        from cflight.models.pretrained.guided_diffusion import load_guided_diffusion

        return load_guided_diffusion
    if name == "load_official_diffae":
        from cflight.models.pretrained.diffae_official import load_official_diffae

        return load_official_diffae
    raise AttributeError(f"module 'cflight.models' has no attribute {name!r}")
