"""Gaussian diffusion: β schedules, respacing, q/posterior, ε-prediction, DDPM and DDIM samplers, losses.

The semantics are those of improved-DDPM / ADM (Nichol & Dhariwal 2021, OpenAI ``guided-diffusion``), the
code DVCE, ACE and DiME build on (spec dvce_svce.md §2.1, latent_and_regression.md §5.2):

* ``linear`` β from ``1e-4·1000/T`` to ``0.02·1000/T``; ``cosine`` ᾱ(t) = cos²(((t/T + s)/(1 + s))·π/2),
  β clipped at 0.999.
* Respacing keeps original timesteps τ_0 < … < τ_{K−1} (:func:`space_timesteps`) and recomputes
  β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}; the denoiser is always called with the *original* timestep τ_i.
* ε-prediction; variance either fixed (``small`` = β̃_t, ``large`` = β_t) or *learned range*: the network
  outputs ``2C`` channels (ε̂, v) and log Σ = ((v+1)/2)·log β_t + (1 − (v+1)/2)·log β̃_t.

Design (diffusers' model/scheduler split, style_anchors §2): :class:`GaussianDiffusion` holds only the
schedule; the denoiser is passed to every call. It is **stateless in the timestep**: every function takes
the respaced index ``t`` explicitly (an int or a ``[B]`` long tensor) and no counter survives between
calls. Tensors here live in diffusion space [−1, 1]; callers map images with :func:`to_diffusion` /
:func:`from_diffusion`. The schedule is kept in float64 and cast to the input's dtype per call.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

SCHEDULES = ("linear", "cosine")
FIXED_VARIANCES = ("small", "large")


def to_diffusion(x: Tensor) -> Tensor:
    """Images in [0, 1] → diffusion space [−1, 1]."""
    return 2 * x - 1


def from_diffusion(x: Tensor) -> Tensor:
    """Diffusion space → [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


def linear_betas(num_timesteps: int) -> Tensor:
    """ADM's linear schedule, scaled so any ``T`` spans the same noise range as T = 1000 (float64)."""
    scale = 1000 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The cosine schedule of improved DDPM: β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta) (float64)."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def make_betas(schedule: str, num_timesteps: int) -> Tensor:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {schedule!r}; expected one of {SCHEDULES}")
    if not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    return linear_betas(num_timesteps) if schedule == "linear" else cosine_betas(num_timesteps)


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> list[int]:
    """The original timesteps kept by respacing (ADM ``respace.space_timesteps``), sorted ascending.

    ``section_counts``: ``"200"`` / ``200`` (200 evenly spaced steps, rounded: 0, 5, 10, …, 994, 999 of
    1000), ``"10,15,20"`` (the range split into equal sections, each spaced separately), or ``"ddimN"``
    (the stride ``s`` with ``len(range(0, T, s)) == N``: ``"ddim10"`` of 1000 gives 0, 100, …, 900).
    """
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec.startswith("ddim"):
            try:
                want = int(spec[4:])
            except ValueError:
                raise ValueError(f"bad respacing {section_counts!r}: expected 'ddim<N>'") from None
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == want:
                    return list(range(0, num_timesteps, stride))
            if want == num_timesteps:
                return list(range(num_timesteps))
            raise ValueError(f"cannot make exactly {want} DDIM steps from {num_timesteps} with an integer "
                             "stride")
        try:
            counts = [int(c) for c in spec.split(",")]
        except ValueError:
            raise ValueError(f"bad respacing {section_counts!r}: expected 'N', 'N1,N2,…' or 'ddimN'") from None
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        counts = [int(c) for c in section_counts]
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"respacing counts must be positive, got {section_counts!r}")
    size_per, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot take {count} steps from a section of {size} timesteps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))  # Python round (half to even), as the reference
            cur += stride
        start += size
    return sorted(set(kept))


class MeanVariance(NamedTuple):
    """Reverse-step distribution p(x_{t−1} | x_t) and the denoised estimate, in diffusion space."""

    mean: Tensor
    variance: Tensor
    log_variance: Tensor
    pred_x0: Tensor


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp()
                  + (mean1 - mean2) ** 2 * (-logvar2).exp())


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log-likelihood of 8-bit data ``x`` in [−1, 1] under a Gaussian discretised to 256 bins (elementwise).

    The edge bins extend to ±∞. Uses the exact normal CDF (ADM uses a tanh approximation).
    """
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centered + 1 / 255))
    cdf_min = torch.special.ndtr(inv_std * (centered - 1 / 255))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class GaussianDiffusion(nn.Module):
    """A (possibly respaced) Gaussian diffusion schedule with stateless samplers.

    Args:
        num_timesteps: T of the trained diffusion (1000 in ADM / DVCE).
        schedule: ``"linear"`` or ``"cosine"``.
        respacing: ``None`` (all T steps) or a :func:`space_timesteps` spec (``"200"``, ``"ddim50"``);
            indices ``t`` passed to every method are then respaced indices ``0..K−1``.
        fixed_variance: Σ used when the denoiser predicts no variance: ``"small"`` (β̃_t, the posterior
            variance) or ``"large"`` (β_t, with β̃_1 at t = 0 as ADM).
        betas: explicit base betas (overrides ``schedule``; length T).
    """

    def __init__(self, num_timesteps: int = 1000, schedule: str = "linear",
                 respacing: str | int | Sequence[int] | None = None, fixed_variance: str = "small",
                 betas: Tensor | None = None) -> None:
        super().__init__()
        if fixed_variance not in FIXED_VARIANCES:
            raise ValueError(f"fixed_variance must be one of {FIXED_VARIANCES}, got {fixed_variance!r}")
        if betas is None:
            base = make_betas(schedule, num_timesteps)
        else:
            base = torch.as_tensor(betas, dtype=torch.float64)
        if base.ndim != 1 or not bool(((base > 0) & (base < 1)).all()):
            raise ValueError(f"betas must be a 1-D tensor with values in (0, 1) (T={len(base)} is too short "
                             f"for the {schedule!r} schedule?)")
        self.num_timesteps, self.schedule, self.fixed_variance = len(base), schedule, fixed_variance
        self.respacing = respacing
        base_abar = torch.cumprod(1 - base, dim=0)
        kept = list(range(len(base))) if respacing is None else space_timesteps(len(base), respacing)
        abar = base_abar[kept]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        betas = 1 - abar / prev
        post_var = betas * (1 - prev) / (1 - abar)
        first = post_var[1] if len(kept) > 1 else betas[0]
        buffers = {
            "timestep_map": torch.tensor(kept, dtype=torch.long),
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - abar).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / abar).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / abar - 1).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": torch.cat([first.reshape(1), post_var[1:]]).log(),
            "posterior_mean_coef1": betas * prev.sqrt() / (1 - abar),
            "posterior_mean_coef2": (1 - prev) * (1 - betas).sqrt() / (1 - abar),
            "log_betas": betas.log(),
            "log_betas_large": torch.cat([first.reshape(1), betas[1:]]).log(),
            "base_betas": base,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def num_steps(self) -> int:
        """K, the number of (respaced) steps; valid indices are ``0..K−1``."""
        return int(self.betas.numel())

    def respaced(self, respacing: str | int | Sequence[int] | None) -> "GaussianDiffusion":
        """The same base schedule with another respacing (``None``: all T steps)."""
        return GaussianDiffusion(schedule=self.schedule, respacing=respacing,
                                 fixed_variance=self.fixed_variance, betas=self.base_betas.cpu()).to(self.betas.device)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "GaussianDiffusion":
        """Device moves apply, dtype casts do not: the schedule stays float64 (``.half()`` or a "16-true"
        Lightning precision would otherwise round ᾱ); values are cast to the input's dtype per call."""

        def keep_float64(t: Tensor) -> Tensor:
            out = fn(t)
            if t.dtype == torch.float64 and out.is_floating_point() and out.device.type != "mps":
                return out.to(torch.float64)
            return out

        return super()._apply(keep_float64, recurse)

    def index(self, t: int | Tensor, batch: int, device: torch.device) -> Tensor:
        """``t`` as a ``[batch]`` long tensor of respaced indices, checked to lie in ``0..K−1``."""
        if isinstance(t, int):
            if not 0 <= t < self.num_steps:
                raise ValueError(f"timestep index {t} out of range 0..{self.num_steps - 1}")
            return torch.full((batch,), t, dtype=torch.long, device=device)
        t = torch.as_tensor(t, dtype=torch.long, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"timestep index must be a scalar or have shape [{batch}], got {tuple(t.shape)}")
        # range check only where it costs no device synchronisation
        if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(f"timestep index out of range 0..{self.num_steps - 1}")
        return t

    def model_timesteps(self, t: Tensor) -> Tensor:
        """The original timesteps τ_t (float) the denoiser is conditioned on."""
        return self.timestep_map.to(t.device)[t].float()

    def _extract(self, name: str, t: Tensor, x: Tensor) -> Tensor:
        arr = getattr(self, name).to(device=x.device)[t].to(x.dtype)
        return arr.reshape(-1, *([1] * (x.ndim - 1)))

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x0: Tensor, t: int | Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·noise."""
        t = self.index(t, x0.shape[0], x0.device)
        return self._extract("sqrt_alphas_cumprod", t, x0) * x0 + self._extract(
            "sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance β̃_t and clipped log-variance of q(x_{t−1} | x_t, x0)."""
        t = self.index(t, xt.shape[0], xt.device)
        mean = (self._extract("posterior_mean_coef1", t, xt) * x0
                + self._extract("posterior_mean_coef2", t, xt) * xt)
        var = self._extract("posterior_variance", t, xt)
        return mean, var, self._extract("posterior_log_variance_clipped", t, xt)

    def predict_x0(self, xt: Tensor, t: int | Tensor, eps: Tensor) -> Tensor:
        """x̂0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε̂ (not clipped)."""
        t = self.index(t, xt.shape[0], xt.device)
        return self._extract("sqrt_recip_alphas_cumprod", t, xt) * xt - self._extract(
            "sqrt_recipm1_alphas_cumprod", t, xt) * eps

    def predict_eps(self, xt: Tensor, t: int | Tensor, x0: Tensor) -> Tensor:
        t = self.index(t, xt.shape[0], xt.device)
        return (self._extract("sqrt_recip_alphas_cumprod", t, xt) * xt - x0) / self._extract(
            "sqrt_recipm1_alphas_cumprod", t, xt)

    # ------------------------------------------------------------------ reverse process
    def model_output(self, net: nn.Module, xt: Tensor, t: int | Tensor,
                     model_kwargs: dict[str, Any] | None = None) -> tuple[Tensor, Tensor | None]:
        """One denoiser forward: ``(ε̂, v)``, ``v`` the variance interpolation (``None`` for 1× channels)."""
        t = self.index(t, xt.shape[0], xt.device)
        out = net(xt, self.model_timesteps(t), **(model_kwargs or {}))
        c = xt.shape[1]
        if out.shape[1] == 2 * c:
            return out[:, :c], out[:, c:]
        if out.shape[1] != c:
            raise ValueError(f"denoiser returned {out.shape[1]} channels for {c}-channel inputs "
                             f"(expected {c} or {2 * c})")
        return out, None

    def log_variance(self, t: Tensor, x: Tensor, v: Tensor | None) -> Tensor:
        """log Σ_t: learned range from ``v`` or the fixed variance (broadcastable to ``x``)."""
        if v is None:
            name = "posterior_log_variance_clipped" if self.fixed_variance == "small" else "log_betas_large"
            return self._extract(name, t, x)
        min_log = self._extract("posterior_log_variance_clipped", t, x)
        max_log = self._extract("log_betas", t, x)
        frac = (v + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    def p_mean_variance(self, xt: Tensor, t: int | Tensor, eps: Tensor, v: Tensor | None = None,
                        clip_denoised: bool = False) -> MeanVariance:
        """p(x_{t−1} | x_t) from the denoiser's outputs (no forward here: callers reuse one forward)."""
        t = self.index(t, xt.shape[0], xt.device)
        pred_x0 = self.predict_x0(xt, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(pred_x0, xt, t)
        log_var = self.log_variance(t, xt, v)
        return MeanVariance(mean, log_var.exp(), log_var, pred_x0)

    def p_sample_step(self, out: MeanVariance, t: int | Tensor, noise: Tensor,
                      shift: Tensor | None = None) -> Tensor:
        """x_{t−1} = μ + Σ ⊙ shift + [t > 0]·√Σ ⊙ noise (``shift``: a guidance gradient, as Sohl-Dickstein)."""
        t = self.index(t, noise.shape[0], noise.device)
        mean = out.mean if shift is None else out.mean + out.variance * shift
        nonzero = (t != 0).to(noise.dtype).reshape(-1, *([1] * (noise.ndim - 1)))
        return mean + nonzero * (0.5 * out.log_variance).exp() * noise

    def p_sample(self, net: nn.Module, xt: Tensor, t: int | Tensor, noise: Tensor, clip_denoised: bool = False,
                 cond_fn: Callable[..., Tensor] | None = None,
                 model_kwargs: dict[str, Any] | None = None) -> tuple[Tensor, Tensor]:
        """One ancestral step ``(x_{t−1}, x̂0)``; ``cond_fn(xt, t, eps, pred_x0) -> shift`` adds guidance."""
        eps, v = self.model_output(net, xt, t, model_kwargs)
        out = self.p_mean_variance(xt, t, eps, v, clip_denoised)
        shift = None if cond_fn is None else cond_fn(xt, t, eps, out.pred_x0)
        return self.p_sample_step(out, t, noise, shift), out.pred_x0

    def ddpm_sample(self, net: nn.Module, x: Tensor, t_start: int | None = None,
                    generator: torch.Generator | None = None, clip_denoised: bool = True,
                    model_kwargs: dict[str, Any] | None = None) -> Tensor:
        """Ancestral sampling from ``x`` at index ``t_start`` (default K−1) to a clean sample (diffusion space)."""
        t_start = self.num_steps - 1 if t_start is None else t_start
        for i in range(t_start, -1, -1):
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x, _ = self.p_sample(net, x, i, noise, clip_denoised, model_kwargs=model_kwargs)
        return x

    # ------------------------------------------------------------------ DDIM
    def ddim_step(self, xt: Tensor, t: int | Tensor, eps: Tensor, eta: float = 0.0, noise: Tensor | None = None,
                  clip_denoised: bool = False) -> tuple[Tensor, Tensor]:
        """DDIM update (Song et al. 2021) from index ``t`` to ``t − 1``: ``(x_{t−1}, x̂0)``.

        σ_t = η·√((1 − ᾱ_{t−1})/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_{t−1}); η = 1 gives σ_t² = β̃_t.
        """
        t = self.index(t, xt.shape[0], xt.device)
        pred_x0 = self.predict_x0(xt, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
            eps = self.predict_eps(xt, t, pred_x0)
        abar, abar_prev = self._extract("alphas_cumprod", t, xt), self._extract("alphas_cumprod_prev", t, xt)
        sigma = eta * ((1 - abar_prev) / (1 - abar)).sqrt() * (1 - abar / abar_prev).sqrt()
        x_prev = pred_x0 * abar_prev.sqrt() + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0:
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs noise")
            nonzero = (t != 0).to(xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))
            x_prev = x_prev + nonzero * sigma * noise
        return x_prev, pred_x0

    def ddim_reverse_step(self, x: Tensor, t: int | Tensor, eps: Tensor, clip_denoised: bool = False) -> Tensor:
        """Deterministic DDIM inversion step: from noise level ᾱ_{t−1} (ᾱ_{−1} = 1) up to ᾱ_t.

        ``eps`` is the denoiser's output at ``(x, τ_t)``, the usual approximation ε̂(x_{t−1}, t) ≈ ε̂(x_t, t).
        With ``clip_denoised`` x̂0 is clamped to [−1, 1] and ε re-derived from it and ``x`` (as
        :meth:`ddim_step` does, and as Diff-AE's ``ddim_reverse_sample``), so ``x`` stays on the line through
        the clipped x̂0.
        """
        t = self.index(t, x.shape[0], x.device)
        abar, abar_prev = self._extract("alphas_cumprod", t, x), self._extract("alphas_cumprod_prev", t, x)
        pred_x0 = (x - (1 - abar_prev).sqrt() * eps) / abar_prev.sqrt()
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
            # at ᾱ_prev = 1 (the first step from a clean image) x = x̂0 and ε is kept: 1 − ᾱ_prev = 0
            eps = torch.where(abar_prev < 1, (x - abar_prev.sqrt() * pred_x0)
                              / (1 - abar_prev).clamp(min=1e-30).sqrt(), eps)
        return abar.sqrt() * pred_x0 + (1 - abar).sqrt() * eps

    def ddim_sample(self, net: nn.Module, x: Tensor, t_start: int | None = None, eta: float = 0.0,
                    generator: torch.Generator | None = None, clip_denoised: bool = False,
                    model_kwargs: dict[str, Any] | None = None) -> Tensor:
        """DDIM from ``x`` at index ``t_start`` (default K−1) to a clean sample (ᾱ = 1)."""
        t_start = self.num_steps - 1 if t_start is None else t_start
        for i in range(t_start, -1, -1):
            eps, _ = self.model_output(net, x, i, model_kwargs)
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) if eta > 0 else None
            x, _ = self.ddim_step(x, i, eps, eta, noise, clip_denoised)
        return x

    def ddim_invert(self, net: nn.Module, x0: Tensor, t_end: int | None = None, clip_denoised: bool = False,
                    model_kwargs: dict[str, Any] | None = None) -> Tensor:
        """Deterministic DDIM encoding of a clean ``x0`` to noise level ᾱ_{t_end} (default K−1).

        The exact counterpart of :meth:`ddim_sample` (η = 0) from ``t_end``: ``ddim_sample(net,
        ddim_invert(net, x0, k), k) ≈ x0`` with an error that shrinks as steps get finer.
        """
        t_end = self.num_steps - 1 if t_end is None else t_end
        x = x0
        for i in range(t_end + 1):
            eps, _ = self.model_output(net, x, i, model_kwargs)
            x = self.ddim_reverse_step(x, i, eps, clip_denoised)
        return x

    # ------------------------------------------------------------------ training
    def training_losses(self, net: nn.Module, x0: Tensor, t: Tensor, noise: Tensor, lambda_vlb: float = 0.001,
                        model_kwargs: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Per-sample losses ``[B]``: ``mse`` (L_simple), ``vb`` (the VLB term L_t in bits/dim), ``loss``.

        With a learned variance, ``loss = mse + λ·T·vb`` (improved DDPM's hybrid loss, λ = 0.001; T·L_t
        estimates L_vlb), the vb term seeing the mean through a stop-gradient so it trains only the
        variance. With a fixed variance, ``loss = mse`` and ``vb`` is reported detached.
        """
        t = self.index(t, x0.shape[0], x0.device)
        xt = self.q_sample(x0, t, noise)
        eps, v = self.model_output(net, xt, t, model_kwargs)
        mse = (noise - eps).pow(2).flatten(1).mean(1)
        out = self.p_mean_variance(xt, t, eps.detach(), v)
        true_mean, _, true_logvar = self.q_posterior(x0, xt, t)
        kl = normal_kl(true_mean, true_logvar, out.mean, out.log_variance).flatten(1).mean(1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, out.mean, 0.5 * out.log_variance)
        nll = nll.flatten(1).mean(1) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        if v is None:
            return {"loss": mse, "mse": mse, "vb": vb.detach()}
        return {"loss": mse + lambda_vlb * self.num_timesteps * vb, "mse": mse, "vb": vb}


__all__ = ["FIXED_VARIANCES", "SCHEDULES", "GaussianDiffusion", "MeanVariance", "cosine_betas",
           "discretized_gaussian_log_likelihood", "from_diffusion", "linear_betas", "make_betas", "normal_kl",
           "space_timesteps", "to_diffusion"]
