"""A W&B logger that works without an account (online when credentials exist, offline otherwise), and what an
explanation job logs to W&B."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
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
        super().__init__(project=project, save_dir=save_dir, offline=offline, **kwargs)

    @property
    def experiment(self) -> Any:
        # save_dir is made when the run starts, not at construction: a job that stops while its config is
        # instantiated (e.g. a missing checkpoint) leaves no directory behind
        if self._experiment is None and self.save_dir:
            os.makedirs(self.save_dir, exist_ok=True)
        return super().experiment


def run_hint(logger: WandbLogger) -> str:
    """Where a W&B run is, for the job's end summary: its name and directory, and how to upload it if offline."""
    run = logger.experiment
    run_dir = os.path.abspath(os.path.dirname(run.dir) if getattr(run, "dir", None) else logger.save_dir or ".")
    offline = bool(getattr(logger, "_offline", False))
    text = f"W&B run {run.name or run.id} ({'offline' if offline else 'online'}): {run_dir}"
    if offline:
        text += f"\n  upload it with: wandb sync {run_dir}"
    elif getattr(run, "url", None):
        text += f"\n  {run.url}"
    return text


def log_explanation(logger: WandbLogger, summary: dict[str, float], pages: Sequence[np.ndarray] = (),
                    examples: Sequence[tuple[dict[str, Any], dict[str, np.ndarray]]] = (),
                    results: Sequence[dict[str, Any]] = (), attribution: dict[str, Any] | None = None,
                    images: dict[str, tuple[np.ndarray, str]] | None = None) -> None:
    """An explanation job's results in W&B (rank 0 only).

    ``summary``: run summary values (``explain/validity`` …); ``pages``: the gallery PNG pages;
    ``examples``: rows with ``original``/``counterfactual``/``difference`` uint8 images, logged as a table of
    ``wandb.Image`` columns beside the numbers; ``results``: numbers-only rows (results.csv's first rows);
    ``attribution``: the global attribution summary, logged as a bar chart; ``images``: other PNGs by key.
    """
    import wandb

    run = logger.experiment
    for key, value in summary.items():
        run.summary[key] = value
    if len(pages):
        logger.log_image(key="explain/gallery", images=list(pages),
                         caption=[f"page {k + 1} of {len(pages)}" for k in range(len(pages))])
    for key, (array, caption) in (images or {}).items():
        logger.log_image(key=key, images=[array], caption=[caption])
    if examples:
        names = ["original", "counterfactual", "difference"]
        columns = names + list(examples[0][0])
        data = [[wandb.Image(imgs[n], caption=n) for n in names] + [row.get(c) for c in columns[3:]]
                for row, imgs in examples]
        logger.log_table(key="explain/examples", columns=columns, data=data)
    if results:
        logger.log_table(key="explain/results", columns=list(results[0]), data=[list(r.values()) for r in results])
    if attribution and attribution.get("overall"):
        table = wandb.Table(columns=["descriptor", "score"],
                            data=[[e["descriptor"], float(e["score"])] for e in attribution["overall"]])
        chart = wandb.plot.bar(table, "descriptor", "score", title="Global attribution: signed mean change")
        run.log({"explain/global_attribution_bar": chart})
