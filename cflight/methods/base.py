"""The shared base of every counterfactual method (DESIGN.md §3 "Methods")."""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from cflight.models.acceleration import Acceleration, accelerate
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget
from cflight.validation import check_images, check_model_input, check_target

Target = ClassTarget | RegressionTarget


@contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode and restore each one's previous mode afterwards."""
    modes = [[(m, m.training) for m in mod.modules()] for mod in modules]
    for mod in modules:
        mod.eval()
    try:
        yield
    finally:
        for pairs in modes:
            for m, was_training in pairs:
                m.training = was_training


class CounterfactualMethod(nn.Module, ABC):
    """Base class: ``method(x, target, model, index) -> CounterfactualOutput``.

    Hyper-parameters and generative parts live on the method; the explained ``model`` comes with each
    call. The base validates inputs before any work, puts the method and model in eval mode, enables
    gradients (Lightning's predict loop runs without them), and splits the batch into chunks of at most
    ``max_batch_size``. It never moves tensors between devices: inputs, model and method must share one.

    Args:
        max_batch_size: largest chunk processed at once (``None``: the whole batch).
        seed: job seed; each sample's randomness derives from ``(seed, index)``.
        acceleration: speed options (autocast, channels_last, compile, checkpointing) for the method's
            generative networks, which a subclass wraps with :meth:`accelerate`; ``None``: all off.
    """

    def __init__(self, max_batch_size: int | None = None, seed: int = 0,
                 acceleration: Acceleration | None = None) -> None:
        super().__init__()
        self.acceleration = acceleration or Acceleration()
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.seed = seed

    def forward(self, x: Tensor, target: Target, model: nn.Module, index: Tensor | None = None,
                pred: Tensor | None = None) -> CounterfactualOutput:
        """Explain ``model`` at images ``x`` ``[B, C, H, W]`` in [0, 1].

        Args:
            target: a :class:`ClassTarget` or :class:`RegressionTarget` with ``B`` entries.
            index: ``[B]`` dataset indices that seed per-sample randomness (default ``arange(B)``).
            pred: the model's output on ``x`` if the caller already has it (saves one forward).
        """
        check_images(x)
        check_model_input(x, model)
        self.check_inputs(x)
        self.acceleration.check_device(x.device)
        if index is None:
            index = torch.arange(x.shape[0], device=x.device)
        with _eval_mode(self, model):
            if pred is None:
                with torch.no_grad():
                    pred = model(x)
            check_target(target, pred)
            target = target.to(x.device)
            step = self.max_batch_size or max(x.shape[0], 1)
            outs = []
            with torch.enable_grad():
                for start in range(0, x.shape[0], step):
                    rows = torch.arange(start, min(start + step, x.shape[0]), device=x.device)
                    outs.append(self.run(x[rows], target.select(rows), model, index[rows], pred[rows].detach()))
        return outs[0] if len(outs) == 1 else CounterfactualOutput.cat(outs)

    def accelerate(self, net: nn.Module) -> nn.Module:
        """``net`` (a generative network) with this method's acceleration options (itself when all off)."""
        return accelerate(net, self.acceleration)

    def check_inputs(self, x: Tensor) -> None:
        """Method-specific checks of ``x`` against the method's own networks (override as needed)."""

    @abstractmethod
    def run(self, x: Tensor, target: Target, model: nn.Module, index: Tensor, pred: Tensor) -> CounterfactualOutput:
        """Compute counterfactuals for one validated chunk (gradients enabled, eval mode)."""
