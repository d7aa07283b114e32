"""The shared base of every counterfactual method (DESIGN.md §3 "Methods")."""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from cflight.models.acceleration import Acceleration, accelerate
from cflight.models.generative.diffusion import GaussianDiffusion
from cflight.models.generative.training_schedule import resolve_schedule
from cflight.models.registry import load_net
from cflight.rng import Stream, per_sample_normal
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget
from cflight.validation import check_images, check_model_input, check_target

Target = ClassTarget | RegressionTarget


def denoiser_and_diffusion(denoiser: nn.Module | str, num_timesteps: int | None, schedule: str | None,
                           timestep_respacing: str | int | None, fixed_variance: str,
                           method: str) -> tuple[nn.Module, GaussianDiffusion]:
    """A diffusion method's denoiser (loaded when given as a path) and its respaced sampler, on the schedule
    the denoiser was trained with (:func:`~cflight.models.generative.training_schedule.resolve_schedule`)."""
    if isinstance(denoiser, str):
        denoiser = load_net(denoiser, expected_kind="denoiser")
    num_timesteps, schedule = resolve_schedule(denoiser, num_timesteps, schedule, method)
    return denoiser, GaussianDiffusion(num_timesteps, schedule, timestep_respacing, fixed_variance)


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

    From Python (no Lightning needed)::

        method = cflight.LatentAttack(generator, lr=0.1)       # generator: encode/decode, see LatentGenerator
        out = method(x, cflight.ClassTarget(classes, 0.5), my_classifier, index=idx)

    Args:
        max_batch_size: largest chunk processed at once (``None``: the whole batch).
        seed: job seed; each sample's randomness derives from ``(seed, index)`` (see :meth:`forward`).
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
            model: the explained network, any ``nn.Module`` (or callable) mapping ``x`` to ``[B, K]`` logits
                (a classifier; one logit = binary) or ``[B, 1]`` values (a regressor); it takes images in
                [0, 1], so any normalisation belongs inside its ``forward``. An ``in_channels`` /
                ``image_size`` attribute, where present, is checked against ``x``.
            index: ``[B]`` long, the *name* of each image's randomness: every random draw of a sample
                (random starts, reparameterised latents, diffusion noise, augmentations) is a stream keyed
                by ``(seed, index[b])``. The default ``arange(B)`` numbers the images by their position in
                this call, so a stochastic method's result for an image depends on where it sits in the
                batch (another batch composition, another result). Pass stable ids, e.g. dataset indices,
                to make each image's result independent of batching::

                    out = method(x, target, model, index=batch["index"])   # cflight batches carry them
                    out = method(x[5:7], target.select([5, 6]), model, index=torch.tensor([5, 6]))

                (the second gives rows 5 and 6 of a whole-batch call with ``index=torch.arange(len(x))``).
                Explanation jobs always pass the dataset's indices. Deterministic methods ignore it.
            pred: the model's output on ``x`` if the caller already has it (saves one forward).

        Returns:
            a :class:`CounterfactualOutput` with ``B`` rows, in the order of ``x``.
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

    def noise(self, like: Tensor, index: Tensor, stream: Stream, step: int) -> Tensor:
        """``N(0, I)`` like ``like`` ``[B, ...]`` from ``(seed, stream, index, step)`` per sample
        (:func:`~cflight.rng.per_sample_normal`), on its device and in its dtype."""
        return per_sample_normal(tuple(like.shape[1:]), self.seed, index, stream=stream, step=step,
                                 device=like.device, dtype=like.dtype)

    @abstractmethod
    def run(self, x: Tensor, target: Target, model: nn.Module, index: Tensor, pred: Tensor) -> CounterfactualOutput:
        """Compute counterfactuals for one validated chunk (gradients enabled, eval mode)."""
