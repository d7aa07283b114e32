"""ExplainModule: an explanation job as a Lightning ``predict`` loop (DESIGN.md §3 "Lightning wiring")."""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from cflight.methods import functional as Fn
from cflight.methods.base import CounterfactualMethod
from cflight.models.registry import load_net
from cflight.targets import SecondMostLikely, TargetPolicy
from cflight.types import IMAGE, INDEX, LABEL, ClassTarget
from cflight.validation import check_images, check_model_input


class ExplainModule(LightningModule):
    """Runs a counterfactual method over every predict batch: target policy → method → checks.

    ``predict_step`` returns a dict of detached CPU tensors, one row per explained image, that
    :class:`~cflight.lit.writer.CounterfactualWriter` stores as a shard. Images whose dataset index is in
    ``skip_indices`` (set by the writer from finished shards) are not recomputed.

    Args:
        method: the counterfactual method (holds its own generative networks).
        model: the explained classifier, as a module or the path of a cflight checkpoint.
        target_policy: how targets are chosen (default: second most likely class, τ = 0.5).
        class_names: optional names for captions and tables.
    """

    def __init__(self, method: CounterfactualMethod, model: nn.Module | str,
                 target_policy: TargetPolicy | None = None, class_names: list[str] | None = None) -> None:
        super().__init__()
        if isinstance(model, str):
            model = load_net(model, expected_kind="classifier")
        self.method = method
        self.model = model.eval().requires_grad_(False)
        self.target_policy = target_policy or SecondMostLikely()
        self.class_names = class_names
        self.skip_indices: set[int] = set()
        self.save_hyperparameters(ignore=["method", "model", "target_policy"])

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_predict_start(self) -> None:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("explanations need gradients: build the Trainer with inference_mode=False")
        self.model.eval()
        self.method.eval()

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0, dataloader_idx: int = 0) -> dict[str, Tensor] | None:
        index = batch[INDEX].long()
        todo = torch.tensor([int(i) not in self.skip_indices for i in index.tolist()], dtype=torch.bool)
        if not bool(todo.any()):
            return None
        rows = todo.nonzero().squeeze(1).to(index.device)
        x, index = batch[IMAGE][rows], index[rows]
        check_images(x)
        check_model_input(x, self.model)
        with torch.no_grad():
            logits = self.model(x)
        target, keep = self.target_policy(logits, {k: v[rows] for k, v in batch.items() if isinstance(v, Tensor)})
        if not bool(keep.any()):
            return None
        sel = keep.nonzero().squeeze(1)
        x, index, logits, target = x[sel], index[sel], logits[sel], target.select(sel)
        out = self.method(x, target, self.model, index=index, pred=logits)
        with torch.no_grad():  # score the returned image again: validity is what a user would see
            logits_check = self.model(out.x_cf.detach())
        result = {
            "index": index, "image": x, "x_cf": out.x_cf, "logits": logits, "logits_cf": logits_check,
            "success": out.success, "steps": out.steps,
            "valid": self._reached(logits_check, target),
            "l1": Fn.l1_distance(out.x_cf, x), "l2": Fn.l2_distance(out.x_cf, x),
            "target_class": target.classes,
            "threshold": torch.as_tensor(target.threshold, dtype=torch.float32).expand(len(target)).clone(),
            "direction": target.direction,
        }
        if LABEL in batch:
            result["label"] = batch[LABEL][rows][sel].long()
        if out.latent is not None:
            result["latent"] = out.latent
        for key, value in out.extras.items():
            if isinstance(value, Tensor) and value.shape[:1] == index.shape:
                result[key] = value
        return {k: v.detach().cpu() for k, v in result.items()}

    @staticmethod
    def _reached(logits: Tensor, target: ClassTarget) -> Tensor:
        p = Fn.class_probability(logits, target.classes)
        return Fn.threshold_reached(p, target.threshold, target.direction)
