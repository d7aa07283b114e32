"""MethodComparison: several counterfactual methods on the same batch, for side-by-side galleries."""
from __future__ import annotations

import re

from torch import Tensor, nn

from cflight.methods.base import CounterfactualMethod, Target
from cflight.types import CounterfactualOutput

# Names become results.csv columns and shard keys ("<name>/x_cf"), so they stay plain.
_NAME = re.compile(r"[A-Za-z0-9_-]+")


class MethodComparison(CounterfactualMethod):
    """Runs every method on the same images, targets, dataset indices and model outputs.

    The primary method's result fills the returned :class:`~cflight.types.CounterfactualOutput`; the others'
    go to its ``comparisons``, by name, in the order given. Because every method sees the same dataset
    indices, each draws the same per-sample randomness it would draw alone (DESIGN.md §3 "Determinism"), so a
    comparison shows exactly the counterfactuals the separate jobs would give. Each method keeps its own
    ``max_batch_size`` and seed; the cost is the sum of the methods' costs.

    Example (the DVCE paper's Fig. 4 setting: explained-model guidance vs robust guidance vs the cone)::

        MethodComparison({"plain": DVCE(unet), "robust": DVCE(unet, robust, cone_angle=None),
                          "cone": DVCE(unet, robust, cone_angle=30)}, primary="cone")

    Args:
        methods: name → method; names are letters, digits, ``_`` or ``-``.
        primary: the method whose result is the job's counterfactual (default: the first).

    Attributes:
        names: the method names, the primary first, then the others in the order given.
    """

    def __init__(self, methods: dict[str, CounterfactualMethod], primary: str | None = None) -> None:
        super().__init__()
        if not methods:
            raise ValueError("MethodComparison needs at least one method")
        for name, method in methods.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"method name {name!r} must be letters, digits, '_' or '-'")
            if not isinstance(method, CounterfactualMethod):
                raise TypeError(f"method {name!r} is a {type(method).__name__}, expected a CounterfactualMethod")
            if isinstance(method, MethodComparison):
                raise ValueError(f"method {name!r} is itself a MethodComparison; list its methods instead")
        primary = next(iter(methods)) if primary is None else primary
        if primary not in methods:
            raise ValueError(f"primary {primary!r} is not one of the methods {list(methods)}")
        order = [primary] + [name for name in methods if name != primary]  # the primary first
        # A ModuleList, not a ModuleDict: names such as "half" or "cuda" would clash with nn.Module attributes.
        self.methods = nn.ModuleList([methods[name] for name in order])
        self.names = order
        self.primary = primary

    def check_inputs(self, x: Tensor) -> None:
        for method in self.methods:
            method.check_inputs(x)

    def run(self, x: Tensor, target: Target, model: nn.Module, index: Tensor, pred: Tensor) -> CounterfactualOutput:
        # Each method's own forward: its validation is cheap and its chunking is its own.
        outs = {name: method(x, target, model, index=index, pred=pred)
                for name, method in zip(self.names, self.methods)}
        main = outs.pop(self.primary)
        main.comparisons = outs
        return main
