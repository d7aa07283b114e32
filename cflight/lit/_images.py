"""Logging image grids to every logger that can take images (W&B); others are skipped."""
from __future__ import annotations

from lightning.pytorch import LightningModule
from torch import Tensor


def log_grid(module: LightningModule, key: str, images: Tensor, nrow: int, caption: str) -> None:
    """Log ``images`` ``[N, C, H, W]`` in [0, 1] as one uint8 grid under ``key`` at the current step."""
    loggers = [lg for lg in module.loggers if callable(getattr(lg, "log_image", None))]
    if not loggers or module.trainer.sanity_checking:
        return
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=1)
    array = (grid * 255).round().byte().permute(1, 2, 0).numpy()
    for logger in loggers:
        logger.log_image(key=key, images=[array], step=module.global_step, caption=[caption])
