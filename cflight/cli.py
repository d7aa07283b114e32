"""The ``cflight`` command: LightningCLI (fit / validate / test / predict) over cflight's modules.

    cflight fit -c configs/train/classifier_mnist.yaml
    cflight predict -c configs/explain/latent_attack_mnist.yaml
"""
from __future__ import annotations

import os
import sys

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

import cflight.data  # noqa: F401  (short class names in configs resolve after import)
import cflight.lit  # noqa: F401
import cflight.methods  # noqa: F401
import cflight.targets  # noqa: F401
from cflight.lit.writer import CounterfactualWriter


class _SaveConfig(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in an explanation job's output directory (instead of
    the logger's directory); training runs keep Lightning's behaviour."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if any(isinstance(cb, CounterfactualWriter) for cb in trainer.callbacks):
            self.save_to_log_dir = False
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for cb in trainer.callbacks:
            if isinstance(cb, CounterfactualWriter):
                os.makedirs(cb.output_dir, exist_ok=True)
                self.parser.save(self.config, os.path.join(cb.output_dir, "config.yaml"), overwrite=True,
                                 multifile=False)


class ConfigError(Exception):
    """A config that cannot be instantiated; the message is the root cause in one line."""


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


class CflightCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            save_config_callback=_SaveConfig, save_config_kwargs={"overwrite": True},
            # Counterfactual searches differentiate inside predict_step (DESIGN.md §3).
            trainer_defaults={"inference_mode": False}, args=args, run=run,
            parser_kwargs={"parser_mode": "yaml"},
        )

    def instantiate_classes(self) -> None:
        # jsonargparse wraps a constructor's error in a multi-line report about Union subtypes; the
        # user needs only the root cause (e.g. "checkpoint 'x.pt' not found ...").
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
            root = _root_cause(err)
            raise ConfigError(f"{type(root).__name__}: {root}".splitlines()[0]) from err


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``cflight`` console script."""
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        CflightCLI(args=args)
    except ConfigError as err:
        print(f"cflight: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
