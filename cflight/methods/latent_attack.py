"""Counterfactual Attack: an adversarial attack on the latent code of a generative model.

Goldwasser & Hooker, "Counterfactual Attacks", arXiv 2504.15479 (2025); semantics of the official code
(``generate_counterfactual`` and the MNIST notebook, spec latent_and_regression.md §1.3).
"""
from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod, _eval_mode
from cflight.models.acceleration import Acceleration
from cflight.models.registry import load_net
from cflight.rng import Stream, per_sample_normal
from cflight.types import ClassTarget, CounterfactualOutput, RegressionTarget
from cflight.validation import check_model_input


class LatentAttack(CounterfactualMethod):
    """Adam on the latent ``z`` of a decoder ``G`` until the explained model crosses the threshold.

    Per iteration (spec §1.3): decode ``x = G(z)``; if the target probability already passed τ the sample
    stops (checked *before* any update, strict inequality); otherwise take one Adam step on
    ``loss = −d·score(f(x))``. There is no distance term: the manifold and early stopping are the only
    regularisers, as in the paper's code.

    Generator protocol: ``decode(z) -> [B, C, H, W]`` in [0, 1]; ``encode(x)`` returning ``(mu, logvar)``
    (a VAE) or a latent ``[B, D]`` directly.

    Args:
        generator: the decoder / generator with the protocol above, or the path of a cflight checkpoint.
        lr: Adam step size η; paper default 0.01 (0.1 for the MNIST digit→digit edits).
        max_steps: K_max, most Adam updates per sample; paper default 1000 (500 CelebA, 5000 digit edits).
        objective: ``"prob"`` (default, the raw probability as in the paper), ``"logit"`` or ``"log_prob"``.
        latent_init: ``"sample"`` (default, as the reference: ``encoder(x)[0]`` is a reparameterised sample,
            here drawn deterministically from ``(seed, index)``) or ``"mean"`` (μ).
        betas, eps: Adam's, PyTorch defaults as in the reference.
        acceleration: speed options for the generator (:class:`~cflight.models.acceleration.Acceleration`);
            the latents, Adam and the objective stay fp32.
        snapshot_every: ``k > 0`` also returns the progression (the paper's MNIST figure: every 50 steps)
            as ``extras["snapshots"]`` ``[B, S, C, H, W]`` (the decoded image after ``0, k, 2k, …`` Adam
            steps, ``S = max_steps // k + 1``, so the shape does not depend on the batch), padded with the
            final image after a sample stopped, ``extras["snapshot_latents"]`` ``[B, S, D]`` and
            ``extras["snapshot_steps"]`` ``[B, S]`` (the step each snapshot shows; padding repeats the final
            step). ``0`` (default): none. Render with :func:`cflight.viz.progression.progression_strip`.

    Binary direction: the rule "increase if p < 0.5, else decrease" is the target policy's
    (:class:`~cflight.targets.FlipBinary`), which by default reads the prediction on this method's
    reconstruction ``G(E(x))`` (:meth:`reconstruct`), as the reference's ``generate_cfs.py`` does. Deciding on
    the original instead (``direction_from="original"``) lets a sample whose reconstruction already crossed τ
    "succeed" after 0 steps with the reconstruction as its counterfactual, which explains the generator, not
    the model; so the reference's rule is the default.

    Deviations, documented: (1) the reference stops on a zero gradient only when ``sum(grad) == 0`` and
    returns ``None`` for the whole call; here a sample stops when its gradient is exactly all zeros and is
    reported per sample in ``extras["zero_grad"]``. (2) The last iterate after ``K_max`` updates is also
    scored (the reference never looks at it), so ``success`` describes the returned image. (3) Adam runs
    per sample (rows of one batch never share moments), so a batch gives the same result as a loop.

    Regression targets push ``−d·|f(x) − y*|²`` with success ``|f(x) − y*| ≤ δ``.
    """

    def __init__(self, generator: nn.Module | str, lr: float = 0.01, max_steps: int = 1000, objective: str = "prob",
                 latent_init: str = "sample", betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 max_batch_size: int | None = None, seed: int = 0,
                 acceleration: Acceleration | None = None, snapshot_every: int = 0) -> None:
        super().__init__(max_batch_size=max_batch_size, seed=seed, acceleration=acceleration)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {tuple(betas)}")
        if not eps > 0:
            raise ValueError(f"eps (Adam's) must be > 0, got {eps}")
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        if objective not in Fn.OBJECTIVES:
            raise ValueError(f"objective must be one of {Fn.OBJECTIVES}, got {objective!r}")
        if int(snapshot_every) != snapshot_every or snapshot_every < 0:
            raise ValueError(f"snapshot_every must be an integer >= 0 (0: no snapshots), got {snapshot_every!r}")
        if latent_init not in ("sample", "mean"):
            raise ValueError(f"latent_init must be 'sample' or 'mean', got {latent_init!r}")
        if isinstance(generator, str):
            generator = load_net(generator, expected_kind="generator")
        for attr in ("encode", "decode"):
            if not callable(getattr(generator, attr, None)):
                raise TypeError(f"generator {type(generator).__name__} has no {attr}() method")
        self.generator = self.accelerate(generator.requires_grad_(False))
        # A projecting generator (e.g. GANManifold) seeds its candidates per sample from the dataset index.
        self._encode_takes_index = "index" in inspect.signature(generator.encode).parameters
        self.lr, self.max_steps, self.objective = lr, max_steps, objective
        self.latent_init, self.betas, self.eps = latent_init, tuple(betas), eps
        self.snapshot_every = int(snapshot_every)
        # (index, x, z0) of the last reconstruct() call: run() reuses those latents for the same images, so a
        # policy that reads the reconstruction does not encode twice (a GAN inversion costs hundreds of steps).
        self._z0_cache: tuple[Tensor, Tensor, Tensor] | None = None

    def check_inputs(self, x: Tensor) -> None:
        check_model_input(x, self.generator, name="generator")

    def initial_latent(self, x: Tensor, index: Tensor) -> Tensor:
        """``z0`` ``[B, D]``: the encoder's output (a reparameterised sample by default)."""
        enc = self.generator.encode(x, index=index) if self._encode_takes_index else self.generator.encode(x)
        if isinstance(enc, Tensor):
            return enc.detach()
        mu, logvar = enc[0], enc[1]
        if self.latent_init == "mean":
            return mu.detach()
        noise = per_sample_normal(tuple(mu.shape[1:]), self.seed, index, stream=Stream.LATENT_INIT,
                                  device=mu.device, dtype=mu.dtype)
        return (mu + (0.5 * logvar).exp() * noise).detach()

    @torch.no_grad()
    def reconstruct(self, x: Tensor, index: Tensor) -> Tensor:
        """``G(z0)`` ``[B, C, H, W]``: the image the attack starts from (its 0-step counterfactual), with the same
        ``z0`` as :meth:`run` for these dataset indices."""
        self.check_inputs(x)
        index = index.to(x.device)
        with _eval_mode(self):
            z0 = self.initial_latent(x, index)
            recon = self.generator.decode(z0)
        self._z0_cache = (index.clone(), x.detach().clone(), z0)
        return recon

    def _start_latent(self, x: Tensor, index: Tensor) -> Tensor:
        """``z0`` for ``x``: from the last :meth:`reconstruct` call when it saw these very images, else encoded."""
        cache = self._z0_cache
        if cache is not None and len(index) and cache[0].device == index.device:
            idx, xs, zs = cache
            match = index[:, None] == idx[None, :]
            if bool(match.any(1).all()):
                pos = match.int().argmax(1)
                if torch.equal(xs[pos], x):
                    return zs[pos].clone()
        return self.initial_latent(x, index)

    def forward(self, x: Tensor, target: ClassTarget | RegressionTarget, model: nn.Module,
                index: Tensor | None = None, pred: Tensor | None = None) -> CounterfactualOutput:
        try:
            return super().forward(x, target, model, index=index, pred=pred)
        finally:
            self._z0_cache = None  # one batch only: never reused for a later call

    def _progress(self, out: Tensor, target: ClassTarget | RegressionTarget) -> tuple[Tensor, Tensor]:
        """``(score to maximise [B], reached [B])`` for the model outputs ``out``."""
        if isinstance(target, ClassTarget):
            p = Fn.class_probability(out, target.classes)
            reached = Fn.threshold_reached(p, target.threshold, target.direction)
            score = p if self.objective == "prob" else Fn.class_score(out, target.classes, self.objective)
            return target.direction.to(score.dtype) * score, reached
        err = out[:, 0] - target.value
        tol = torch.as_tensor(target.tolerance, dtype=err.dtype, device=err.device)
        return -(err**2), err.abs() <= tol

    def run(self, x: Tensor, target: ClassTarget | RegressionTarget, model: nn.Module, index: Tensor,
            pred: Tensor) -> CounterfactualOutput:
        with torch.no_grad():
            z0 = self._start_latent(x, index)
        n = z0.shape[0]
        z, m, v = z0.clone(), torch.zeros_like(z0), torch.zeros_like(z0)
        active = torch.ones(n, dtype=torch.bool, device=z0.device)
        steps = torch.zeros(n, dtype=torch.long, device=z0.device)
        success = torch.zeros_like(active)
        zero_grad = torch.zeros_like(active)
        x_cf, pred_cf, recon = torch.empty_like(x), torch.empty_like(pred), torch.empty_like(x)
        k = self.snapshot_every
        if k:  # slot s holds the iterate after s·k updates; filled while the sample runs, padded after
            n_snap = self.max_steps // k + 1
            snaps = x.new_empty((n, n_snap, *x.shape[1:]))
            snap_z = z0.new_empty((n, n_snap, *z0.shape[1:]))

        for i in range(self.max_steps + 1):
            rows = active.nonzero().squeeze(1)  # only unfinished samples cost anything
            if rows.numel() == 0:
                break
            last = i == self.max_steps
            z_r = z[rows].requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                x_r = self.generator.decode(z_r)
                out = model(x_r)
                score, reached = self._progress(out, target.select(rows))
            if i == 0:
                recon[rows] = x_r.detach()
            if k and i % k == 0:  # every active sample has taken exactly i updates
                snaps[rows, i // k], snap_z[rows, i // k] = x_r.detach(), z_r.detach()
            done = reached | last
            if not bool(done.all()):
                grad = torch.autograd.grad(score[~done].sum(), z_r)[0]
                stalled = (grad.abs().amax(dim=1) == 0) & ~done
                zero_grad[rows[stalled]] = True
                done = done | stalled
                upd = rows[~done]
                # Gradient ascent on the score == Adam descent on loss = −d·score; every still-active
                # sample has taken exactly i updates, so the bias correction uses step i + 1.
                z[upd], m[upd], v[upd] = Fn.adam_step(z[upd], -grad[~done], m[upd], v[upd], i + 1,
                                                      self.lr, self.betas, self.eps)
                steps[upd] += 1
            fin = rows[done]
            x_cf[fin], pred_cf[fin] = x_r.detach()[done], out.detach()[done]
            success[fin] = reached[done]
            active[fin] = False

        extras = {"reconstruction": recon, "latent0": z0, "zero_grad": zero_grad}
        if k:
            extras.update(snapshot_padding(snaps, snap_z, x_cf, z.detach(), steps, k))
        return CounterfactualOutput(
            x_cf=x_cf, pred=pred, pred_cf=pred_cf, success=success, steps=steps, latent=z.detach(), extras=extras,
        )


def snapshot_padding(snaps: Tensor, snap_z: Tensor, x_final: Tensor, z_final: Tensor, steps: Tensor,
                     every: int) -> dict[str, Tensor]:
    """Complete a progression: slots after a sample stopped show its final image and latent.

    Args: ``snaps`` ``[B, S, C, H, W]`` and ``snap_z`` ``[B, S, D]`` (slot ``s`` valid where ``s·every ≤
    steps``), the final ``x_final`` ``[B, C, H, W]`` / ``z_final`` ``[B, D]``, ``steps`` ``[B]`` updates taken.
    Returns ``snapshots``, ``snapshot_latents`` and ``snapshot_steps`` ``[B, S]`` (``min(s·every, steps)``).
    """
    grid = torch.arange(snaps.shape[1], device=steps.device) * every
    after = grid[None, :] > steps[:, None]  # [B, S]: slots the sample never reached
    img_mask = after.view(*after.shape, *([1] * (snaps.ndim - 2)))
    z_mask = after.view(*after.shape, *([1] * (snap_z.ndim - 2)))
    return {"snapshots": torch.where(img_mask, x_final[:, None], snaps),
            "snapshot_latents": torch.where(z_mask, z_final[:, None], snap_z),
            "snapshot_steps": torch.minimum(grid[None, :], steps[:, None])}
