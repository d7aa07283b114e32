"""Counterfactual methods: one class per file sharing :class:`CounterfactualMethod`."""
from cflight.methods.acre import ACE, ACRE
from cflight.methods.base import CounterfactualMethod
from cflight.methods.compare import MethodComparison
from cflight.methods.diffae_re import DiffAERE
from cflight.methods.dime import DiME
from cflight.methods.dvce import DVCE
from cflight.methods.interfacegan import InterFaceGANEdit
from cflight.methods.latent_attack import LatentAttack
from cflight.methods.pgd import APGD, PGD
from cflight.methods.svce import SparseAFW

__all__ = ["ACE", "ACRE", "APGD", "DVCE", "DiME", "DiffAERE", "PGD", "CounterfactualMethod", "InterFaceGANEdit", "LatentAttack",
           "MethodComparison", "SparseAFW"]
