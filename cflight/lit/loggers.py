"""A W&B logger that works without an account: online when credentials exist, offline otherwise."""
from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_has_credentials() -> bool:
    """True if an API key is configured (environment or ~/.netrc entry for the W&B host)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        with open(netrc) as f:
            return "api.wandb.ai" in f.read()
    except OSError:
        return False


class AutoWandbLogger(WandbLogger):
    """``WandbLogger`` whose default mode follows ``WANDB_MODE``, else online only with credentials.

    A user without a W&B account runs the same config unchanged: the run is written offline under
    ``save_dir`` and can be uploaded later with ``wandb sync``.
    """

    def __init__(self, project: str = "cflight", save_dir: str = "outputs/wandb", offline: bool | None = None,
                 **kwargs: Any) -> None:
        if offline is None:
            mode = os.environ.get("WANDB_MODE")
            offline = mode in ("offline", "disabled") if mode else not wandb_has_credentials()
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(project=project, save_dir=save_dir, offline=offline, **kwargs)
