"""AC-RE and ACE: signed PGD on the image through a short stochastic DDPM chain, then RePaint-style inpainting.

AC-RE: Ha & Bender, "Diffusion Counterfactuals for Image Regressors", XAI 2025 (arXiv 2503.20595), official code
``related_work/ACE/main_regression_*.py``; ACE: Jeanneret, Simon & Jurie, CVPR 2023 (``guillaumejs2403/ACE``).
Spec latent_and_regression.md §2.3 (algorithm, defaults, notes), §2.9 (quirks), §3.2 (ACE).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod, denoiser_and_diffusion
from cflight.methods.early_stop import FrozenSamples
from cflight.models.acceleration import Acceleration
from cflight.models.generative.diffusion import from_diffusion, to_diffusion
from cflight.rng import Stream
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget
from cflight.validation import check_model_input

__all__ = ["ACE", "ACRE"]


class ACRE(CounterfactualMethod):
    """AC-RE (spec §2.3): PGD on ``x'`` through ``R_τ``, change mask, dilation, inpainting pass.

    ``R_τ(x')``: ``u = q_sample(2x' − 1, τ − 1)``, then ``τ`` stochastic DDPM steps (x̂0 clipped to [−1, 1],
    learned or fixed Σ) down to ``t = 0``, returned as ``(u + 1)/2``; the whole chain stays in the graph (every
    UNet call is differentiated; ``acceleration.checkpoint_chain`` recomputes them in the backward instead of
    storing activations). PGD: ``x' ← clamp(proj_ε(x' − α·sign(∇ℓ)), 0, 1)``, ``ℓ = (f(R_τ(x')) − ỹ)²`` for a
    :class:`RegressionTarget`, ACE's CE / BCE-with-logits (:func:`~cflight.methods.functional.acre_class_loss`)
    for a :class:`ClassTarget`, plus ``λ1‖x − x'‖₁ + λ2‖x − x'‖₂`` before the sign. Then ``pe = x'``, ``M =
    Σ_c|x − pe| / max``, ``M_d = maxpool_k(M)``, ``B = 1[M_d < γ]``, and one graph-free chain from
    ``q_sample(2pe − 1, τ − 1)`` whose known region (``B = 1``) is re-noised from the original at every step;
    the result keeps ``x`` exactly where ``B = 1``.

    Defaults are the published CelebA-HQ age script (``run_age_celebahq_allval.sh``): respacing 25 with
    fraction 0.2 (τ = 5), α = 1/255, ε = 1 (only the [0, 1] clamp), 200 iterations, stochastic, γ = 0.15,
    dilation 15, λ1 = λ2 = 0, seed 0. The Square script: respacing 50, fraction 0.1, α = 2/255, 100
    iterations, dilation 5 (configs, not code). δ is the target's tolerance (0.05 in the paper).

    Decisions (spec §2.9, documented deviations):

    1. Quirk 1, success check: with ``early_stop`` (default, the reference's), a sample is frozen at the first
       iterate whose stochastic prediction ``f(R_τ(x'))`` reaches the target, *without* the extra step the
       reference applies after success (``reference_extra_step=True`` reproduces it). ``steps`` = PGD updates
       applied. The final image is re-checked: ``success`` is judged on ``f(ce)`` (the framework's meaning);
       the reference's flag ("some evaluated prediction reached", §5.2.2) is ``extras["attack_reached"]``.
    2. Quirk 2, NaN guard: ``pe == x`` (no step, or steps that cancel) gives ``M ≡ 0`` instead of 0/0, i.e.
       the whole image is kept (``ce = x`` exactly, for any γ > 0).
    3. Noise comes from ``(seed, stream, dataset index, step)`` (:class:`~cflight.rng.Stream` ``ACRE_CHAIN``,
       ``ACRE_INPAINT``), not a global RNG, so results do not depend on batch composition; ``stochastic=False``
       zeroes the noise of both chains. ``extras["chain_reconstruction"] = R_τ(x)`` is the first PGD forward
       (same noise), not an extra chain.
    4. Losses are per sample and summed, so each row's gradient is its own and ``sign(g)`` does not depend on
       the batch. The reference averages the main loss over the batch but sums the distance over it (ACE
       ``main.py::get_dist_fn``): a reference run at batch size ``B`` with ``λ`` equals ``dist_l1 = B·λ`` here
       (ACE's 0.001 at its default batch 16 is 0.016); with λ = 0 (AC-RE's published runs) nothing differs.
    5. The final paste uses ``where(B, x, ·)`` so kept pixels equal ``x`` bit for bit (the reference's
       ``(2x − 1 + 1)/2`` rounds).

    Extras (``[B, ...]``): ``pre_explanation`` (pe), ``change_mask`` (M, ``[B, 1, H, W]``), ``inpaint_mask``
    (1 − B: regenerated pixels), ``chain_reconstruction`` (R_τ(x)), ``attack_reached`` (bool), ``attack_pred``
    (``f(R_τ(x'))`` at the last evaluation).

    Args:
        denoiser: ε-prediction network ``net(x_t, t_orig)`` (``C`` or ``2C`` output channels) or a checkpoint path.
        num_timesteps, schedule: the training diffusion; ``None`` reads them from the denoiser file.
        timestep_respacing: :func:`~cflight.models.generative.diffusion.space_timesteps` spec (``"25"``).
        sampling_time_fraction: ``τ = int(fraction · K)`` respaced steps of the chain (K from the respacing).
        step_size: α. epsilon: l∞ budget around ``x`` (1 = none). max_iterations: N_iter.
        dist_l1, dist_l2: λ1, λ2. stochastic: noise in the chains. inpaint: γ. dilation: odd max-pool kernel.
        early_stop: freeze each sample at the first iterate that reaches its target.
        reference_extra_step: reproduce quirk 1 (a sample that reached still takes that iteration's step).
        fixed_variance: Σ for a denoiser without a variance output. acceleration: speed options for the denoiser.
    """

    def __init__(self, denoiser: nn.Module | str, num_timesteps: int | None = None, schedule: str | None = None,
                 timestep_respacing: str | int = "25", sampling_time_fraction: float = 0.2,
                 step_size: float = 1 / 255, epsilon: float = 1.0, max_iterations: int = 200,
                 dist_l1: float = 0.0, dist_l2: float = 0.0, stochastic: bool = True, inpaint: float = 0.15,
                 dilation: int = 15, early_stop: bool = True, reference_extra_step: bool = False,
                 fixed_variance: str = "small", max_batch_size: int | None = None, seed: int = 0,
                 acceleration: Acceleration | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, seed=seed, acceleration=acceleration)
        name = type(self).__name__
        denoiser, self.diffusion = denoiser_and_diffusion(denoiser, num_timesteps, schedule,
                                                          timestep_respacing, fixed_variance, name)
        k = self.diffusion.num_steps
        if not 0 < sampling_time_fraction <= 1 or int(sampling_time_fraction * k) < 1:
            raise ValueError(f"sampling_time_fraction must be in (0, 1] with int(fraction * {k}) >= 1, "
                             f"got {sampling_time_fraction}")
        if step_size <= 0 or epsilon <= 0:
            raise ValueError(f"step_size and epsilon must be > 0, got {step_size}, {epsilon}")
        if not isinstance(max_iterations, int) or max_iterations < 0:
            raise ValueError(f"max_iterations must be an int >= 0, got {max_iterations!r}")
        if dist_l1 < 0 or dist_l2 < 0:
            raise ValueError(f"dist_l1 and dist_l2 must be >= 0, got {dist_l1}, {dist_l2}")
        if not isinstance(dilation, int) or dilation < 1 or dilation % 2 == 0:
            raise ValueError(f"dilation must be an odd int >= 1, got {dilation!r}")
        self.tau = int(sampling_time_fraction * k)
        if max_iterations * (self.tau + 1) >= 2**24:
            raise ValueError(f"max_iterations * (tau + 1) must be < 2^24 (noise step counter), got "
                             f"{max_iterations} * {self.tau + 1}")
        self.denoiser = self.accelerate(denoiser.requires_grad_(False))
        self.step_size, self.epsilon, self.max_iterations = step_size, epsilon, max_iterations
        self.dist_l1, self.dist_l2, self.stochastic = dist_l1, dist_l2, bool(stochastic)
        self.inpaint, self.dilation = inpaint, dilation
        self.early_stop, self.reference_extra_step = bool(early_stop), bool(reference_extra_step)

    def check_inputs(self, x: Tensor) -> None:
        check_model_input(x, self.denoiser, name="denoiser")

    def noise(self, like: Tensor, index: Tensor, stream: Stream, step: int) -> Tensor:
        """``N(0, I)`` ``[B, C, H, W]`` from ``(seed, stream, index, step)``; zeros when not ``stochastic``."""
        if not self.stochastic:
            return torch.zeros_like(like)
        return super().noise(like, index, stream, step)

    def denoise_step(self, u: Tensor, t: int, noise: Tensor) -> Tensor:
        """One ancestral step ``x_t → x_{t−1}`` with x̂0 clipped (``clip_denoised=True``), diffusion space."""
        eps, v = self.diffusion.model_output(self.denoiser, u, t)
        out = self.diffusion.p_mean_variance(u, t, eps, v, clip_denoised=True)
        return self.diffusion.p_sample_step(out, t, noise)

    def chain(self, x: Tensor, index: Tensor, iteration: int) -> Tensor:
        """``R_τ(x)`` ``[B, C, H, W]`` (unclamped, as the reference) with PGD iteration ``iteration``'s noise."""
        base = iteration * (self.tau + 1)
        u = to_diffusion(x)
        u = self.diffusion.q_sample(u, self.tau - 1, self.noise(u, index, Stream.ACRE_CHAIN, base))
        for t in range(self.tau - 1, -1, -1):
            u = self.denoise_step(u, t, self.noise(u, index, Stream.ACRE_CHAIN, base + 1 + t))
        return (u + 1) / 2

    def loss(self, out: Tensor, target: ClassTarget | RegressionTarget, x: Tensor, x_adv: Tensor) -> Tensor:
        """Per-sample objective ``[B]`` (to minimise), distance penalty included."""
        if isinstance(target, RegressionTarget):
            main = Fn.regression_loss(out, target.value)
        else:
            main = Fn.acre_class_loss(out, target.classes, target.direction)
        return main + Fn.distance_penalty(x, x_adv, self.dist_l1, self.dist_l2)

    @torch.no_grad()
    def inpaint_pass(self, x: Tensor, pe: Tensor, keep: Tensor, index: Tensor) -> Tensor:
        """Spec §2.3 lines 13–15: denoise ``pe`` from ``τ − 1`` with the kept region ``keep`` ``[B, 1, H, W]``
        re-noised from ``x`` at every step; returns ``[B, C, H, W]`` in [0, 1], equal to ``x`` where kept."""
        known = to_diffusion(x)
        u = self.diffusion.q_sample(to_diffusion(pe), self.tau - 1, self.noise(x, index, Stream.ACRE_INPAINT, 0))
        for t in range(self.tau - 1, -1, -1):
            renoised = self.diffusion.q_sample(known, t, self.noise(x, index, Stream.ACRE_INPAINT, 1 + t))
            u = torch.where(keep, renoised, u)
            u = self.denoise_step(u, t, self.noise(x, index, Stream.ACRE_INPAINT, 1 + self.tau + t))
        return torch.where(keep, x, from_diffusion(u))

    def attack(self, x: Tensor, target: ClassTarget | RegressionTarget, model: nn.Module,
               index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The PGD stage: ``(pe, steps [B], attack_reached [B], attack_pred [B, K], R_τ(x))``."""
        n = x.shape[0]
        frozen = FrozenSamples(n, x.device)
        ever = torch.zeros(n, dtype=torch.bool, device=x.device)
        x_adv, x0, idx, tgt = x, x, index, target
        recon = None
        for i in range(self.max_iterations):
            xg = x_adv.detach().requires_grad_(True)
            image = self.chain(xg, idx, i)
            out = model(image)
            grad, = torch.autograd.grad(self.loss(out, tgt, x0, xg).sum(), xg)
            out, image = out.detach(), image.detach()
            if i == 0:
                recon = image  # R_τ(x): every sample is active at iteration 0
            reached = Fn.target_reached(out, tgt)
            ever[frozen.ids[reached]] = True
            done = reached if self.early_stop else torch.zeros_like(reached)
            moving = None if self.reference_extra_step else ~done
            x_adv = Fn.signed_step(xg.detach(), grad, x0, self.step_size, self.epsilon, moving)
            steps = i + 1 if self.reference_extra_step else i  # updates applied to the rows that stop now
            keep = frozen.freeze(done, steps, pe=x_adv, pred=out)
            if keep is not None:  # finished samples leave: later iterations compute the others only
                x_adv, x0, idx, tgt = x_adv[keep], x0[keep], idx[keep], tgt.select(keep)
                if frozen.empty:
                    break
            last_out = out if keep is None else out[keep]
        if recon is None:  # no iteration: the reconstruction alone, with iteration 0's noise
            with torch.no_grad():
                recon = self.chain(x, index, 0)
                last_out = model(recon)
        if not frozen.empty:  # the rest ran every iteration
            frozen.freeze(torch.ones(len(frozen.ids), dtype=torch.bool, device=x.device), self.max_iterations,
                          pe=x_adv.detach(), pred=last_out)
        return frozen.out["pe"], frozen.steps, ever, frozen.out["pred"], recon

    def run(self, x: Tensor, target: ClassTarget | RegressionTarget, model: nn.Module, index: Tensor,
            pred: Tensor) -> CounterfactualOutput:
        pe, steps, reached, attack_pred, recon = self.attack(x, target, model, index)
        with torch.no_grad():
            mask = Fn.change_mask(x, pe)
            keep = Fn.keep_region(Fn.dilate_mask(mask, self.dilation), self.inpaint)
            x_cf = x.clone()  # an image kept everywhere (e.g. pe == x) is x: its pass is skipped
            rows = (~keep).flatten(1).any(1)
            if bool(rows.any()):
                x_cf[rows] = self.inpaint_pass(x[rows], pe[rows], keep[rows], index[rows])
            pred_cf = model(x_cf)
        extras = {"pre_explanation": pe, "change_mask": mask, "inpaint_mask": (~keep).to(x.dtype),
                  "chain_reconstruction": recon, "attack_reached": reached, "attack_pred": attack_pred}
        return CounterfactualOutput(x_cf=x_cf, pred=pred, pred_cf=pred_cf,
                                    success=Fn.target_reached(pred_cf, target), steps=steps, extras=extras)



class ACE(ACRE):
    """ACE (Jeanneret et al. CVPR 2023, spec §3.2): AC-RE's pipeline for a classifier, with ACE's defaults.

    ``celebahq-attack.sh``: respacing 25, fraction 0.2 (τ = 5), 50 PGD iterations of α = 1/255, ε = 1,
    ``dist_l1 = 0.001`` (per sample here, see :class:`ACRE` decision 4), γ = 0.15, dilation 15, stochastic,
    seed 4 (``main.py``), and **no early stopping** (the reference always runs every iteration;
    ``early_stop=True`` turns it on). Success is judged on the final image, as ACE's own statistics do.
    Other scripts: ImageNet 100 iterations; BDD respacing 100, fraction 0.05, γ = 0.05. A
    :class:`RegressionTarget` is refused (that is :class:`ACRE`).
    """

    def __init__(self, denoiser: nn.Module | str, num_timesteps: int | None = None, schedule: str | None = None,
                 timestep_respacing: str | int = "25", sampling_time_fraction: float = 0.2,
                 step_size: float = 1 / 255, epsilon: float = 1.0, max_iterations: int = 50,
                 dist_l1: float = 0.001, dist_l2: float = 0.0, stochastic: bool = True, inpaint: float = 0.15,
                 dilation: int = 15, early_stop: bool = False, reference_extra_step: bool = False,
                 fixed_variance: str = "small", max_batch_size: int | None = None, seed: int = 4,
                 acceleration: Acceleration | None = None) -> None:
        super().__init__(denoiser, num_timesteps, schedule, timestep_respacing, sampling_time_fraction, step_size,
                         epsilon, max_iterations, dist_l1, dist_l2, stochastic, inpaint, dilation, early_stop,
                         reference_extra_step, fixed_variance, max_batch_size, seed, acceleration)

    def run(self, x: Tensor, target: ClassTarget | RegressionTarget, model: nn.Module, index: Tensor,
            pred: Tensor) -> CounterfactualOutput:
        if not isinstance(target, ClassTarget):
            raise ValueError("ACE explains classifiers (ClassTarget); use ACRE for a RegressionTarget")
        return super().run(x, target, model, index, pred)
