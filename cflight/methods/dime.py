"""DiME: Diffusion Models for Counterfactual Explanations.

Jeanneret, Simon & Jurie, ACCV 2022 (arXiv 2203.15636); semantics of the official code
(``guillaumejs2403/DiME``, ``main.py``, ``core/sample_utils.py``), spec latent_and_regression.md §3.1, §5.4.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod, denoiser_and_diffusion
from cflight.models.acceleration import Acceleration
from cflight.models.generative.diffusion import from_diffusion, to_diffusion
from cflight.rng import Stream
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget
from cflight.validation import check_model_input

OBJECTIVES = ("log_prob", "logit")


def _image(x: Tensor) -> Tensor:
    """Diffusion space → [0, 1] without clamping (a clamp would zero the gradient at the box's faces)."""
    return (x + 1) / 2


class DiME(CounterfactualMethod):
    """Guided DDPM sampling whose classifier gradient is taken at a *clean* estimate (spec §3.1).

    Per sample and scale ``s`` of ``scales``: ``z ← z_τ = q_sample(2x − 1, τ)`` (respaced ``τ = start_step``),
    ``x̂ ← 2x − 1``; for ``t = τ−1 … 0``: one denoiser forward gives ``p(z_{t−1} | z_t) = N(μ, Σ)`` (x̂0
    clipped); the guidance is ``g = ∇_x̂ s·L_cls(f(x̂), y)/√ᾱ_t + ∇_z [λ1‖z − x‖₁ + λ2 Σ_pixels ‖z − x‖₂]``
    (+ ``∇_x̂ λ_perc·MSE(φ(x̂), φ(x))/√ᾱ_t`` with a feature network φ), taken at the clean estimate and the
    current ``z`` — no backward pass through the denoiser; ``z ← μ − Σ⊙g + [t > 0]·√Σ⊙ε``; then, for
    ``t > 0``, the next clean estimate ``x̂`` is the *unguided* ancestral chain from ``z`` down to 0 (the
    paper's brute-force estimate, stochastic). The counterfactual is the last ``z``. Samples whose
    counterfactual reaches the target keep it; the others are retried from the same ``z_τ`` with the next
    scale (the reference's test: the model's decision is the target); after the last scale the rest keep its
    result.

    ``L_cls``: for a :class:`ClassTarget` ``−d·log p(y)`` (``objective="log_prob"``: the reference's
    ``−log σ(±logit)`` for one logit) or ``−d·logit`` (``"logit"``, the reference's ``use_logits``: the
    log-odds ``log p − log(1 − p)``, ``±logit`` for one logit); for a :class:`RegressionTarget` ``(f − y*)²``.

    Defaults are the README's (the code's own ``l1 = l_perc = 0`` differ; spec: use the README): respacing
    200 of the denoiser's steps, ``start_step`` 60, scales 8, 10, 15, λ1 0.05, λ_perc 30 at VGG19
    ``features[:18]``, seed 4. VGG19 weights are the user's: without ``perceptual`` the perceptual term is
    off (a documented deviation; give any feature network, e.g. torchvision's VGG19 ``features[:18]`` with
    its normalisation inside). Tiny models need other values (configs, not code).

    Cost: ``τ(τ + 1)/2`` denoiser forwards per scale and sample (τ for the guided chain, ``t`` for the clean
    estimate after step ``t``), no denoiser backward; one classifier forward and backward per step.

    Reproduced quirk (spec): the noise is added at respaced index τ while denoising starts at τ − 1.
    Deviations, documented: noise draws come from ``(seed, stream, dataset index, step)`` per sample
    (:mod:`cflight.rng`; the guided chain ``Stream.DIME_STEP``, step ``scale·τ + t``; the clean estimate
    ``Stream.DIME_CLEAN``, step ``(scale·τ + t)·τ + t'``), not a global RNG, so batch composition does not
    change results; success is cflight's (``ClassTarget`` threshold / regression tolerance) rather than the
    argmax.

    Args:
        denoiser: ε-prediction network (a ``"unet"``) or the path of a cflight denoiser checkpoint.
        num_timesteps, schedule: the diffusion the denoiser was trained with (``None``: from its file).
        timestep_respacing: :func:`~cflight.models.generative.diffusion.space_timesteps` spec (``"200"``).
        start_step: τ, the respaced index the chain starts from (``1 ≤ τ ≤`` respaced steps − 1).
        scales: classifier scales tried in turn on the samples not yet at their target.
        l1_lambda: λ1 of ``‖z − x‖₁``. l2_lambda: λ2 of the per-pixel channel l2 norm ``Σ ‖z − x‖₂``.
        perceptual_lambda: λ_perc of ``MSE(φ(x̂), φ(x))``, used when ``perceptual`` is given.
        perceptual: a feature network φ on images in [0, 1] (``None``: no perceptual term).
        objective: ``"log_prob"`` (default) or ``"logit"`` (the reference's ``use_logits``).
        fixed_variance: Σ for a denoiser without a variance output (``"small"`` β̃_t or ``"large"`` β_t).
        acceleration: speed options for the denoiser (:class:`~cflight.models.acceleration.Acceleration`).
    """

    def __init__(self, denoiser: nn.Module | str, num_timesteps: int | None = None,
                 schedule: str | None = None, timestep_respacing: str | int = "200", start_step: int = 60,
                 scales: Sequence[float] = (8.0, 10.0, 15.0), l1_lambda: float = 0.05, l2_lambda: float = 0.0,
                 perceptual_lambda: float = 30.0, perceptual: nn.Module | None = None,
                 objective: str = "log_prob", fixed_variance: str = "small",
                 max_batch_size: int | None = None, seed: int = 4,
                 acceleration: Acceleration | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, seed=seed, acceleration=acceleration)
        denoiser, self.diffusion = denoiser_and_diffusion(denoiser, num_timesteps, schedule,
                                                          timestep_respacing, fixed_variance, "DiME")
        steps = self.diffusion.num_steps
        if not isinstance(start_step, int) or not 1 <= start_step < steps:
            raise ValueError(f"start_step must be an int in [1, {steps - 1}] (respaced steps), "
                             f"got {start_step!r}")
        scales = [float(s) for s in scales]
        if not scales or any(s < 0 for s in scales):
            raise ValueError(f"scales must be one or more values >= 0, got {scales}")
        if min(l1_lambda, l2_lambda, perceptual_lambda) < 0:
            raise ValueError(f"l1_lambda, l2_lambda and perceptual_lambda must be >= 0, got {l1_lambda}, "
                             f"{l2_lambda}, {perceptual_lambda}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.denoiser = self.accelerate(denoiser.requires_grad_(False))
        self.perceptual = None if perceptual is None else perceptual.requires_grad_(False)
        self.start_step, self.scales = start_step, scales
        self.l1_lambda, self.l2_lambda, self.perceptual_lambda = l1_lambda, l2_lambda, perceptual_lambda
        self.objective = objective

    @property
    def denoiser_calls_per_scale(self) -> int:
        """``τ(τ + 1)/2``: the guided chain's τ forwards and the clean estimates' ``Σ_{t=1}^{τ−1} t``."""
        return self.start_step * (self.start_step + 1) // 2

    def check_inputs(self, x: Tensor) -> None:
        check_model_input(x, self.denoiser, name="denoiser")

    def class_loss(self, out: Tensor, target: ClassTarget | RegressionTarget) -> Tensor:
        """Per-sample ``L_cls`` ``[B]`` the guidance descends (class docstring)."""
        if isinstance(target, RegressionTarget):
            return (out[:, 0] - target.value.to(out.dtype)) ** 2
        return -target.direction.to(out.dtype) * Fn.class_score(out, target.classes, self.objective)

    @property
    def uses_perceptual(self) -> bool:
        return self.perceptual is not None and self.perceptual_lambda > 0

    def guidance(self, z: Tensor, x_hat: Tensor, x0: Tensor, t: int, scale: float,
                 target: ClassTarget | RegressionTarget, model: nn.Module,
                 ref: Tensor | None = None) -> Tensor:
        """``g`` at respaced index ``t`` (diffusion space, like ``z``): the step moves the mean by −Σ⊙g.
        ``ref``: the perceptual features φ(x) of the originals (with ``perceptual``)."""
        inv_sqrt_abar = float(self.diffusion.sqrt_recip_alphas_cumprod[t])  # 1/√ᾱ_t: the shortcut x̂ → z
        g = torch.zeros_like(z)
        if scale > 0 or self.uses_perceptual:
            xh = x_hat.detach().requires_grad_(True)
            loss = xh.new_zeros(())
            if scale > 0:
                loss = loss + scale * self.class_loss(model(_image(xh)), target).sum()
            if self.uses_perceptual:
                per_sample = (self.perceptual(_image(xh)) - ref).pow(2).flatten(1).mean(1)
                loss = loss + self.perceptual_lambda * per_sample.sum()
            (grad,) = torch.autograd.grad(loss, xh)
            g = g + grad * inv_sqrt_abar
        if self.l1_lambda > 0 or self.l2_lambda > 0:
            zg = z.detach().requires_grad_(True)
            d = zg - x0
            dist = self.l1_lambda * d.abs().sum()
            if self.l2_lambda > 0:  # Σ over pixels of the l2 norm over channels
                dist = dist + self.l2_lambda * d.pow(2).sum(1).clamp_min(1e-20).sqrt().sum()
            (grad,) = torch.autograd.grad(dist, zg)
            g = g + grad
        return g

    @torch.no_grad()
    def clean_estimate(self, z: Tensor, t: int, index: Tensor, step: int) -> Tensor:
        """The unguided ancestral chain from ``z`` (at index ``t − 1``) down to 0: ``t`` denoiser forwards."""
        for i in range(t - 1, -1, -1):
            noise = self.noise(z, index, Stream.DIME_CLEAN, step * self.start_step + i)
            z, _ = self.diffusion.p_sample(self.denoiser, z, i, noise, clip_denoised=True)
        return z

    def chain(self, z: Tensor, x0: Tensor, scale: float, k: int, target: ClassTarget | RegressionTarget,
              model: nn.Module, index: Tensor) -> Tensor:
        """One guided chain of scale number ``k`` from ``z = z_τ``: the counterfactual in diffusion space."""
        diff, x_hat = self.diffusion, x0
        ref = None
        if self.uses_perceptual:
            with torch.no_grad():
                ref = self.perceptual(from_diffusion(x0))
        for t in range(self.start_step - 1, -1, -1):
            step = k * self.start_step + t
            with torch.no_grad():
                eps, v = diff.model_output(self.denoiser, z, t)
                out = diff.p_mean_variance(z, t, eps, v, clip_denoised=True)
            g = self.guidance(z, x_hat, x0, t, scale, target, model, ref)
            noise = self.noise(z, index, Stream.DIME_STEP, step) if t > 0 else torch.zeros_like(z)
            z = diff.p_sample_step(out, t, noise, shift=-g).detach()
            if t > 0:
                x_hat = self.clean_estimate(z, t, index, step)
        return z

    def run(self, x: Tensor, target: ClassTarget | RegressionTarget, model: nn.Module, index: Tensor,
            pred: Tensor) -> CounterfactualOutput:
        n = x.shape[0]
        x0 = to_diffusion(x)
        z_tau = self.diffusion.q_sample(x0, self.start_step, self.noise(x, index, Stream.DIME_START, 0))
        x_cf, pred_cf = x.clone(), pred.clone()  # every row is overwritten by the first scale
        scale_used = torch.full((n,), float("nan"), dtype=x.dtype, device=x.device)
        todo = torch.arange(n, device=x.device)  # rows not at their target yet
        for k, scale in enumerate(self.scales):
            rows_target = target.select(todo)
            z = self.chain(z_tau[todo], x0[todo], scale, k, rows_target, model, index[todo])
            image = from_diffusion(z)
            with torch.no_grad():
                out = model(image)
            x_cf[todo], pred_cf[todo], scale_used[todo] = image, out, scale
            flipped = Fn.decision_reached(out, rows_target)  # the reference retries on the prediction
            todo = todo[~flipped]
            if todo.numel() == 0:
                break
        steps = torch.full((n,), self.start_step, dtype=torch.long, device=x.device)
        return CounterfactualOutput(x_cf=x_cf, pred=pred, pred_cf=pred_cf,
                                    success=Fn.target_reached(pred_cf, target), steps=steps,
                                    extras={"scale": scale_used})
