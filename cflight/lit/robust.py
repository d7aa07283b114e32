"""PGD adversarial training (Madry et al. 2018) of a cflight classifier: the robust models SVCE/DVCE need."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from cflight.lit.classifier import ClassifierModule
from cflight.methods import functional as Fn
from cflight.rng import Stream, per_sample_normal

ATTACK_NORMS = ("l2", "linf")
EVAL_SEED = 0  # key of the evaluation attacks' random starts: the same start for a sample every epoch


class AdversarialTrainingModule(ClassifierModule):
    """Trains ``self.net`` on PGD adversarial examples; logs clean and robust accuracy.

    Every training batch is replaced by its PGD adversarial examples (untargeted: maximise the
    cross-entropy of the true label) inside the ``attack_norm`` ball of radius ``attack_eps`` ∩ [0,1],
    computed with the network in eval mode (as the robustness library) and a random start; the network is
    then trained on them with the usual (BCE for one logit) loss. Validation/test log the clean ``acc`` and
    ``loss`` of :class:`ClassifierModule` plus ``robust_acc``, the accuracy under a PGD attack with
    ``eval_steps`` steps. ``train/robust_acc`` is the accuracy on the training attack's examples.

    The network and its hyper-parameters are stored as in :class:`ClassifierModule` (``net``, ``net_kwargs``),
    so ``load_net(ckpt, "classifier")`` rebuilds the robust network. Works under Lightning's default
    ``inference_mode=True`` for validation (the attack leaves inference mode locally).

    Spec dvce_svce.md §5.2 item 4: l2 threat, radius scaled to the resolution (ImageNet ε = 3 at d = 150528;
    CIFAR ε = 0.5 at d = 3072; MNIST commonly ε = 1.5–2). Defaults: Madry et al.'s 7 training steps, step
    ``2.5·ε/steps`` (robustness library), ε = 0.5.

    :param attack_norm: ``"l2"`` or ``"linf"``.
    :param attack_eps: radius ε of the threat model (images in [0, 1]).
    :param attack_steps: PGD steps during training.
    :param attack_step_size: PGD step; default ``2.5·ε/attack_steps``.
    :param eval_steps: PGD steps for ``val/robust_acc`` and ``test/robust_acc`` (default ``attack_steps``).
    :param eval_step_size: step of the evaluation attack; default ``2.5·ε/eval_steps``.
    :param random_start: start each attack at a random point of the ball (train and eval).
    Other parameters as :class:`ClassifierModule`.
    """

    def __init__(self, net: str | nn.Module = "mnist_cnn", net_kwargs: dict[str, Any] | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.0, label_smoothing: float = 0.0,
                 scheduler: str | None = None, attack_norm: str = "l2", attack_eps: float = 0.5,
                 attack_steps: int = 7, attack_step_size: float | None = None, eval_steps: int | None = None,
                 eval_step_size: float | None = None, random_start: bool = True) -> None:
        if attack_norm not in ATTACK_NORMS:
            raise ValueError(f"attack_norm must be one of {ATTACK_NORMS}, got {attack_norm!r}")
        if not attack_eps > 0:
            raise ValueError(f"attack_eps must be > 0, got {attack_eps}")
        if attack_steps < 1 or (eval_steps is not None and eval_steps < 1):
            raise ValueError(f"attack_steps and eval_steps must be >= 1, got {attack_steps}, {eval_steps}")
        for name, val in (("attack_step_size", attack_step_size), ("eval_step_size", eval_step_size)):
            if val is not None and not val > 0:
                raise ValueError(f"{name} must be > 0, got {val}")
        super().__init__(net, net_kwargs, lr, weight_decay, label_smoothing, scheduler)
        for stage in ("train", "val", "test"):
            acc = BinaryAccuracy() if self.binary else MulticlassAccuracy(self.num_classes, average="micro")
            setattr(self, f"{stage}_robust_acc", acc)

    def _attack_loss(self, logits: Tensor, label: Tensor) -> Tensor:
        """Per-sample loss the attack maximises: CE (BCE for one logit) of the true label."""
        if self.binary:
            return F.binary_cross_entropy_with_logits(logits[:, 0], label.to(logits.dtype), reduction="none")
        return F.cross_entropy(logits, label.long(), reduction="none")

    def attack(self, x: Tensor, label: Tensor, steps: int, step_size: float | None,
               index: Tensor | None = None) -> Tensor:
        """PGD adversarial examples of ``x`` for the true ``label`` (network in eval mode, restored after).

        ``index`` ``[B]`` (dataset indices) draws each sample's random start from ``(EVAL_SEED, index)``, so
        evaluation does not depend on batch size or process count; ``None`` uses the global RNG (training).
        """
        hp = self.hparams
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.inference_mode(False), torch.enable_grad():
                x = x.clone()
                label = label.clone()
                x_init = None
                if hp.random_start:
                    if index is None:
                        noise = torch.randn_like(x)
                    else:
                        noise = per_sample_normal(tuple(x.shape[1:]), EVAL_SEED, index,
                                                  stream=Stream.EVAL_ATTACK, device=x.device, dtype=x.dtype)
                    x_init = Fn.random_start(x, noise, hp.attack_eps, hp.attack_norm)

                def loss_grad(z: Tensor) -> tuple[Tensor, Tensor, None]:
                    z = z.detach().requires_grad_(True)
                    loss = self._attack_loss(self.net(z), label)
                    (g,) = torch.autograd.grad(loss.sum(), z)
                    return loss.detach(), g, None

                res = Fn.pgd(x, loss_grad, hp.attack_eps, hp.attack_norm, steps, step_size, x_init, keep_best=False)
        finally:
            self.net.train(was_training)
        return res.x.detach()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        hp = self.hparams
        label = batch["label"]
        x_adv = self.attack(batch["image"], label, hp.attack_steps, hp.attack_step_size)
        logits = self(x_adv)
        loss = self.loss(logits, label)
        self.train_robust_acc((logits.squeeze(1) if self.binary else logits).detach(), label.long())
        self.train_loss(loss.detach(), weight=label.shape[0])
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
        self.log("train/robust_acc", self.train_robust_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _robust_step(self, batch: dict[str, Tensor], stage: str, batch_idx: int) -> None:
        self._step(batch, stage)
        hp = self.hparams
        steps = hp.eval_steps or hp.attack_steps
        # evaluation starts are drawn per sample, so val/robust_acc is the same every epoch and batching
        x_adv = self.attack(batch["image"], batch["label"], steps, hp.eval_step_size, index=batch["index"])
        with torch.no_grad():
            logits = self(x_adv)
        acc = getattr(self, f"{stage}_robust_acc")
        acc(logits.squeeze(1) if self.binary else logits, batch["label"].long())
        self.log(f"{stage}/robust_acc", acc, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._robust_step(batch, "val", batch_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._robust_step(batch, "test", batch_idx)
