"""DVCE: Diffusion Visual Counterfactual Explanations.

Augustin, Boreiko, Croce & Hein, NeurIPS 2022 (arXiv 2210.11841); semantics of the official code
(``valentyn1boreiko/DVCEs``, ``dff_attack.py::DiffusionAttack``), spec dvce_svce.md §2.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod, denoiser_and_diffusion
from cflight.methods.early_stop import FrozenSamples
from cflight.models.acceleration import Acceleration
from cflight.models.generative.diffusion import MeanVariance, from_diffusion, to_diffusion
from cflight.models.registry import load_net
from cflight.rng import Stream, per_sample_uniform
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget
from cflight.validation import check_model_input

_AUG_STREAMS = (Stream.AUGMENT, Stream.AUGMENT_ROBUST)  # augmentation draws of the explained / robust model


class DVCE(CounterfactualMethod):
    """Classifier guidance on the denoised estimate x̂0 of a late-started DDPM chain (spec §2.6).

    Per sample: ``x_t ← q_sample(2x − 1, K − 1)`` with ``K = T_resp − skip`` (late start); then for
    ``t = K−1 … 0``: one denoiser forward gives ε̂ (and the variance interpolation v), x̂0 and
    p(x_{t−1} | x_t) = N(μ, Σ); the guidance ``g = ‖ε̂‖₂·(λ_c·ĝ_c − λ_d·ĝ_d)`` uses gradients w.r.t.
    ``x_t`` *through the denoiser* of the target objective on the unclamped ``(x̂0 + 1)/2`` and of the
    l_p distance of x̂0 to the original; ``x_{t−1} = μ + Σ⊙g + [t > 0]·√Σ⊙z``. The output is the last
    x̂0 mapped to [0, 1] and clamped.

    Models: the explained ``model`` (per call) and an optional ``robust_model`` held here. ``robust_model
    is None``: the explained model guides. ``robust_model`` with ``cone_angle``: the robust gradient is
    projected onto the cone of half-angle α around the explained model's gradient (code semantics of
    §2.4, θ logged per sample). ``robust_model`` with ``cone_angle=None``: the robust model guides alone
    (the "DVCE for Madry+FT" setting). Temperature scaling is the models' business (wrap them).

    Objectives: :class:`ClassTarget` pushes ``d·log p(y)`` (log-softmax, or log-sigmoid for one logit);
    :class:`RegressionTarget` pushes ``−(f(x) − y*)²``. Success is judged on the explained model's output
    for the returned image (``ClassTarget`` threshold / regression tolerance). By default there is no early
    stopping: the reference always runs the whole chain. ``early_stop=True`` checks after every step
    whether the explained model's output on that step's x̂0 (mapped to [0, 1] and clamped: the image that
    would be returned) reaches the target; a sample that does is frozen — that image is returned, ``steps``
    counts the reverse steps it ran, and later steps skip it. This costs one extra forward (no backward) of
    the explained model per step on the active samples and saves the denoiser and classifier passes of the
    frozen ones. An x̂0 from early in the chain is a blurred image: early stopping trades realism for cost.

    Defaults are the reference's (``configs/default.yml``, README): 1000-step linear schedule respaced to
    200, ``skip=100`` (start at original t = 497), λ_c = 0.1, λ_d = 0.15, p = 1, α = 30°, ``aug_num`` 1 (the
    README uses 16 for cone runs), ``denoise_dist_input=True``, seed 1. Tiny models need other values
    (configs, not code).

    Cost: ``two_pass=False`` (default) evaluates the denoiser **once** per step with a graph and reuses
    (ε̂, v) for the sampler's mean — the same numbers as the reference, which runs a second, graph-free
    forward for the sampler (``two_pass=True`` reproduces that form). Backward passes through the
    denoiser per step: 1 per guidance term (classifier, distance with ``denoise_dist_input``, +1 for the
    cone); a term with λ = 0 costs nothing.

    Deviations, documented: (1) the timestep is the respaced index, passed explicitly (the reference
    recovers it as ⌊t_orig·200/1000⌋); (2) noise and augmentation draws come from ``(seed, stream, dataset
    index, step)`` per sample (:mod:`cflight.rng`) instead of a global RNG re-seeded per call, so batch
    composition does not change results; (3) augmentations are reimplemented with
    ``affine_grid``/``grid_sample`` (no kornia) and do not
    resize to 224 (the classifier sees the image at its own size); (4) the distance term is computed per
    sample and the classifier objective summed over the batch — identical after the per-sample
    renormalisation (spec §2.3 "batch behaviour"); (5) the reference's cone, inside the cone, returns ĝ_n
    (not g_r): kept, and ``extras["cone_inside"]`` reports how often that branch ran.

    Args:
        denoiser: ε-prediction network ``net(x_t, t_orig) -> [B, C or 2C, H, W]`` (a ``"unet"``), or the path
            of a cflight denoiser checkpoint. ``2C`` outputs = learned-range variance.
        robust_model: the perceptually aligned guiding model (module or checkpoint path), or ``None``.
        num_timesteps, schedule: the diffusion the denoiser was trained with; ``None`` (default) reads them from
            the denoiser file (:mod:`~cflight.models.generative.training_schedule`), and a value that
            contradicts the file is a one-line error. A denoiser without a record: 1000, ``"linear"``.
        timestep_respacing: :func:`~cflight.models.generative.diffusion.space_timesteps` spec (``"200"``).
        skip_timesteps: late start; ``T_resp − skip`` reverse steps (0 returns the input unchanged).
        classifier_lambda: λ_c. distance_lambda: λ_d. distance_p: p of the l_p distance (1).
        cone_angle: α in degrees, used when ``robust_model`` is set (``None``: the robust model alone).
        aug_num: classifier copies per sample (1 = off); copy 0 is unaugmented, each model draws its own.
        denoise_dist_input: distance gradient through the denoiser (README commands) or, ``False``, the
            analytic subgradient w.r.t. x̂0 used as a gradient w.r.t. ``x_t`` (Sept-2022 default).
        fixed_variance: Σ for a denoiser without a variance output (``"small"`` β̃_t or ``"large"`` β_t).
        two_pass: reproduce the reference's two denoiser forwards per step.
        early_stop: freeze each sample at the first step whose x̂0 reaches the target (default ``False``).
        acceleration: speed options for the denoiser (:class:`~cflight.models.acceleration.Acceleration`);
            the sampler's arithmetic, guidance and models stay fp32.
    """

    def __init__(self, denoiser: nn.Module | str, robust_model: nn.Module | str | None = None,
                 num_timesteps: int | None = None, schedule: str | None = None, timestep_respacing: str | int = "200",
                 skip_timesteps: int = 100, classifier_lambda: float = 0.1, distance_lambda: float = 0.15,
                 distance_p: float = 1.0, cone_angle: float | None = 30.0, aug_num: int = 1,
                 denoise_dist_input: bool = True, fixed_variance: str = "small", two_pass: bool = False,
                 early_stop: bool = False, max_batch_size: int | None = None, seed: int = 1,
                 acceleration: Acceleration | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, seed=seed, acceleration=acceleration)
        denoiser, self.diffusion = denoiser_and_diffusion(denoiser, num_timesteps, schedule,
                                                          timestep_respacing, fixed_variance, "DVCE")
        steps = self.diffusion.num_steps
        if not isinstance(skip_timesteps, int) or not 0 <= skip_timesteps <= steps:
            raise ValueError(f"skip_timesteps must be an int in [0, {steps}] (respaced steps), "
                             f"got {skip_timesteps!r}")
        if classifier_lambda < 0 or distance_lambda < 0:
            raise ValueError(f"classifier_lambda and distance_lambda must be >= 0, got {classifier_lambda}, "
                             f"{distance_lambda}")
        if distance_p < 1:
            raise ValueError(f"distance_p must be >= 1, got {distance_p}")
        if cone_angle is not None and not 0 <= cone_angle < 90:
            raise ValueError(f"cone_angle must be in [0, 90) degrees or None, got {cone_angle}")
        if not isinstance(aug_num, int) or aug_num < 1:
            raise ValueError(f"aug_num must be an int >= 1, got {aug_num!r}")
        if isinstance(robust_model, str):
            robust_model = load_net(robust_model)
        self.denoiser = self.accelerate(denoiser.requires_grad_(False))
        self.robust_model = None if robust_model is None else robust_model.requires_grad_(False)
        self.skip_timesteps = skip_timesteps
        self.classifier_lambda, self.distance_lambda = classifier_lambda, distance_lambda
        self.distance_p, self.cone_angle, self.aug_num = distance_p, cone_angle, aug_num
        self.denoise_dist_input, self.two_pass = denoise_dist_input, two_pass
        self.early_stop = bool(early_stop)

    @property
    def num_reverse_steps(self) -> int:
        return self.diffusion.num_steps - self.skip_timesteps

    @property
    def uses_cone(self) -> bool:
        return self.robust_model is not None and self.cone_angle is not None

    def check_inputs(self, x: Tensor) -> None:
        check_model_input(x, self.denoiser, name="denoiser")
        if self.robust_model is not None:
            check_model_input(x, self.robust_model, name="robust_model")

    def _objective(self, model: nn.Module, image: Tensor, target: ClassTarget | RegressionTarget, index: Tensor,
                   step: int, which: int) -> Tensor:
        """Σ over the batch of the per-sample objective (mean over augmented copies)."""
        if self.aug_num > 1:
            u = per_sample_uniform((self.aug_num - 1, Fn.AUG_PARAMS), self.seed, index,
                                   stream=_AUG_STREAMS[which], step=step, device=image.device, dtype=image.dtype)
            image = Fn.augment_copies(image, u)
        out = model(image)
        n = self.aug_num
        if isinstance(target, ClassTarget):
            classes = target.classes.repeat_interleave(n)
            direction = target.direction.repeat_interleave(n).to(out.dtype)
            score = Fn.class_score(out, classes, "log_prob") * direction
        else:
            score = -(out[:, 0] - target.value.to(out.dtype).repeat_interleave(n)) ** 2
        return score.sum() / n

    def guidance(self, xt: Tensor, t: int, x0: Tensor, target: ClassTarget | RegressionTarget, model: nn.Module,
                 index: Tensor) -> tuple[Tensor, MeanVariance, Tensor | None]:
        """One step's ``(shift g, p(x_{t−1} | x_t), θ [B] in degrees or None)`` at respaced index ``t``."""
        diff = self.diffusion
        if self.two_pass:  # the reference: a graph-free forward for the sampler ...
            with torch.no_grad():
                eps, v = diff.model_output(self.denoiser, xt, t)
        xg = xt.detach().requires_grad_(True)
        eps_g, v_g = diff.model_output(self.denoiser, xg, t)  # ... and one with a graph for the guidance
        if not self.two_pass:
            eps, v = eps_g.detach(), None if v_g is None else v_g.detach()
        out = diff.p_mean_variance(xt, t, eps, v)
        pred_x0 = diff.predict_x0(xg, t, eps_g)

        objectives: list[Tensor] = []
        if self.classifier_lambda > 0:
            image = (pred_x0 + 1) / 2  # not clamped (spec §8)
            if self.robust_model is not None:
                objectives.append(self._objective(self.robust_model, image, target, index, t, 1))
            if self.robust_model is None or self.cone_angle is not None:
                objectives.append(self._objective(model, image, target, index, t, 0))
        dist_through = self.distance_lambda > 0 and self.denoise_dist_input
        if dist_through:
            objectives.append(pred_x0.sub(x0).abs().pow(self.distance_p).sum())
        grads = [torch.autograd.grad(obj, xg, retain_graph=k < len(objectives) - 1)[0]
                 for k, obj in enumerate(objectives)]

        g_class, theta = None, None
        if self.classifier_lambda > 0:
            if self.uses_cone:
                g_class, theta = Fn.cone_projection(grads[0], grads[1], self.cone_angle)
            else:
                g_class = grads[0]
        g_dist = None
        if dist_through:
            g_dist = grads[-1]
        elif self.distance_lambda > 0:
            g_dist = Fn.lp_subgradient(pred_x0.detach(), x0, self.distance_p)
        g = Fn.scaled_guidance(g_class, g_dist, eps, self.classifier_lambda, self.distance_lambda)
        return g, out, theta

    def run(self, x: Tensor, target: ClassTarget | RegressionTarget, model: nn.Module, index: Tensor,
            pred: Tensor) -> CounterfactualOutput:
        n, k = x.shape[0], self.num_reverse_steps
        steps = torch.full((n,), k, dtype=torch.long, device=x.device)
        extras: dict[str, Tensor] = {}
        pred_cf, target_all = None, target  # the loop narrows ``target`` to the unfinished samples
        if k == 0:
            x_cf = x.clone()
        else:
            x0 = to_diffusion(x)
            xt = self.diffusion.q_sample(x0, k - 1, self.noise(x, index, Stream.DIFFUSION_START, 0))
            thetas = []
            frozen = FrozenSamples(n, x.device) if self.early_stop else None
            for t in range(k - 1, -1, -1):
                g, out, theta = self.guidance(xt, t, x0, target, model, index)
                noise = self.noise(xt, index, Stream.DIFFUSION_STEP, t) if t > 0 else torch.zeros_like(xt)
                xt = self.diffusion.p_sample_step(out, t, noise, shift=g).detach()
                pred_x0 = out.pred_x0.detach()  # the output is the last x̂0, before the last shift
                if theta is not None:
                    thetas.append(theta.detach() if frozen is None else frozen.spread(theta.detach()))
                if frozen is not None:
                    image = from_diffusion(pred_x0)  # what would be returned now
                    with torch.no_grad():
                        out_image = model(image)
                    done = Fn.target_reached(out_image, target) | (t == 0)  # t = 0: everyone's last step
                    keep = frozen.freeze(done, k - t, x_cf=image, pred_cf=out_image)
                    if keep is not None:  # frozen samples leave: later steps run on the others only
                        xt, x0, index, target = xt[keep], x0[keep], index[keep], target.select(keep)
                        if frozen.empty:
                            break
            if frozen is None:
                x_cf = from_diffusion(pred_x0)
            else:
                x_cf, pred_cf, steps = frozen.out["x_cf"], frozen.out["pred_cf"], frozen.steps
            if thetas:
                theta_all = torch.stack(thetas, 1)
                if frozen is None:
                    extras["cone_theta"] = theta_all.mean(1)  # mean angle ∠(g_robust, g_explained), degrees
                    extras["cone_inside"] = (theta_all <= self.cone_angle).to(x.dtype).mean(1)
                else:  # over the steps each sample ran (NaN where it was frozen)
                    inside = (theta_all <= self.cone_angle).to(x.dtype)
                    inside = inside.masked_fill(theta_all.isnan(), math.nan)
                    extras["cone_theta"], extras["cone_inside"] = theta_all.nanmean(1), inside.nanmean(1)
        if pred_cf is None:
            with torch.no_grad():
                pred_cf = model(x_cf)
        return CounterfactualOutput(x_cf=x_cf, pred=pred, pred_cf=pred_cf,
                                    success=Fn.target_reached(pred_cf, target_all), steps=steps, extras=extras)
