"""Counterfactual methods: one class per file sharing :class:`CounterfactualMethod`."""
from cflight.methods.base import CounterfactualMethod
from cflight.methods.interfacegan import InterFaceGANEdit
from cflight.methods.latent_attack import LatentAttack

__all__ = ["CounterfactualMethod", "InterFaceGANEdit", "LatentAttack"]
