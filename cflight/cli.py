"""The ``cflight`` command: LightningCLI (fit / validate / test / predict) over cflight's modules.

    cflight fit -c configs/train/classifier_mnist.yaml
    cflight predict -c configs/explain/latent_attack_mnist.yaml
    cflight benchmark -c configs/benchmark/mnist_all_methods.yaml   (cflight.benchmark: several methods, one table)
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import sys
from argparse import ArgumentError

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

import cflight.data  # noqa: F401  (short class names in configs resolve after import)
import cflight.lit  # noqa: F401
import cflight.methods  # noqa: F401
import cflight.targets  # noqa: F401
from cflight.lit.writer import CounterfactualWriter
from cflight.validation import BadInputError


class _SaveConfig(SaveConfigCallback):
    """Hands the resolved config to an explanation job's writer, which saves it as ``config.yaml`` with the
    job's first shard (instead of in the logger's directory). Training runs keep Lightning's behaviour, except
    that a run which fails before writing anything but its config removes the directory it created."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if any(isinstance(cb, CounterfactualWriter) for cb in trainer.callbacks):
            self.save_to_log_dir = False
        # a training run that fails before writing anything but its config leaves no directory behind
        self._new_log_dir = None
        if self.save_to_log_dir and not self.already_saved:
            log_dir = trainer.log_dir  # every rank calls this (it broadcasts), as Lightning's setup does
            self._new_log_dir = log_dir if log_dir is not None and not os.path.exists(log_dir) else None
        super().setup(trainer, pl_module, stage)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        log_dir = getattr(self, "_new_log_dir", None)
        if trainer.is_global_zero and log_dir and os.path.isdir(log_dir) \
                and os.listdir(log_dir) == [self.config_filename]:
            os.remove(os.path.join(log_dir, self.config_filename))
            os.rmdir(log_dir)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # The writer saves it once it has checked that the directory holds this job (or none), so a refused
        # rerun never overwrites the config of the results it found there.
        for cb in trainer.callbacks:
            if isinstance(cb, CounterfactualWriter):
                cb.config_text = self.parser.dump(self.config, skip_none=False)


class ConfigError(Exception):
    """A config that cannot be instantiated; the message is the root cause in one line."""


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _raising_class(err: BaseException) -> str | None:
    """Name of the innermost cflight-side class whose ``__init__`` raised ``err`` (``None`` if none)."""
    name, tb = None, err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self") if frame.f_code.co_name == "__init__" else None
        package = type(owner).__module__.split(".")[0] if owner is not None else None
        if package is not None and package not in ("torch", "lightning", "jsonargparse"):
            name = type(owner).__name__
        tb = tb.tb_next
    return name


def _one_line(err: BaseException) -> str:
    """The root cause of a constructor's error as one line, with the class that raised it."""
    root = _root_cause(err)
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    if isinstance(root, MisconfigurationException):  # Lightning's own settings
        return f"{text.rstrip('.')}; fix this Lightning setting (under trainer: in the config)"
    if not isinstance(root, (ValueError, FileNotFoundError)):
        text = f"{type(root).__name__}: {text}"
    owner = _raising_class(root)
    return f"{owner}: {text}" if owner and not text.startswith(owner) else text


_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")


def _public_classes(module_name: str) -> list[str]:
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return []
    names = getattr(module, "__all__", None) or [n for n, v in vars(module).items() if inspect.isclass(v)
                                                 and v.__module__.startswith(module_name)]
    return sorted(n for n in names if not n.startswith("_") and inspect.isclass(getattr(module, n, None))
                  and not inspect.isabstract(getattr(module, n)))


def _accepted(class_path: str) -> list[str]:
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
        params = inspect.signature(cls.__init__).parameters.values()
    except Exception:
        return []
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def parse_error_line(message: str, subcommand: str | None = None, config: str | None = None) -> str:
    """jsonargparse's nested report of a config that does not parse, as one line: the config key, the class,
    the innermost problem and how to fix it (``config``: the file given with ``-c``, named in YAML errors)."""
    lines = [ln for ln in str(message).splitlines() if ln.strip()]
    if lines and lines[0].startswith("Problems parsing config"):  # a YAML syntax error, with line and column
        text = " ".join(ln.strip().replace('in "<unicode string>", ', "at ") for ln in lines)
        text = text.removeprefix("Problems parsing config:").strip()
        return f"config {config + ' ' if config else ''}is not valid YAML: {text}; fix the YAML syntax there"
    stack: list[tuple[int, str, str]] = []  # (indent, "key" | "class", name)
    best: tuple[int, list[tuple[int, str, str]], str] | None = None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        text = line.strip().removeprefix("- ").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = re.fullmatch(r'Parser key "([^"]+)":(.*)', text)
        cls = re.fullmatch(r"Problem with given class_path '(.+)':", text)
        if key or cls:
            stack.append((indent, "key" if key else "class", (key or cls).group(1)))
        if key and key.group(2).strip():  # 'Parser key "config": File does not exist: ...' on one line
            text = key.group(2).strip()
        elif key or cls:
            continue
        if not text.startswith(_NOISE) and (best is None or len(stack) > len(best[1])):
            best = (indent, list(stack), text)
    if best is None:
        return lines[0].strip() if lines else "the config does not parse"
    _, context, leaf = best
    keys = ".".join(name for _, kind, name in context if kind == "key")
    classes = [name for _, kind, name in context if kind == "class"]
    cls_shown = classes[-1] if classes else None
    cmd = f"cflight {subcommand}" if subcommand else "cflight"
    option = re.search(r"[Oo]ption '([^']+)'", leaf)
    missing = re.search(r"has no attribute '[^']+'|No module named '[^']+'|Unable to import|not found", leaf)
    if option and "accept" in leaf:
        accepted = _accepted(classes[-1]) if classes else []
        name = classes[-1].rpartition(".")[2] if classes else ""
        fix = (f"remove it or fix its spelling; {name} accepts: {', '.join(accepted)}" if accepted
               else f"remove it or fix its spelling (`{cmd} --help` lists the options)")
    elif missing and classes:
        module_name = classes[-1].rpartition(".")[0]
        known = _public_classes(module_name)
        leaf, cls_shown = f"unknown class_path {classes[-1]!r}", None
        fix = f"check its spelling; {module_name} provides {', '.join(known)}" if known else \
            "check its spelling"
    elif "arguments are required" in leaf:
        fix = "give a value for each of them (under the class's init_args)"
    elif keys == "config" and "does not exist" in leaf:
        fix = "check the path given to -c/--config"
    elif leaf.startswith("Expected a"):
        typed = re.fullmatch(r"Expected a <class '(\w+)'>\. Got value: (.*)", leaf)
        leaf = f"expected {typed.group(1)}, got {typed.group(2)!r}" if typed else leaf
        fix = "give a value of that type"
    elif keys or classes:
        fix = f"fix the config (`{cmd} --help` lists the options)"
    else:
        fix = f"see `{cmd} --help`"
    where = f"{keys}{f' ({cls_shown})' if cls_shown else ''}: " if keys or cls_shown else ""
    return f"{where}{leaf.rstrip('.')}; {fix}"


class CflightCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            save_config_callback=_SaveConfig, save_config_kwargs={"overwrite": True},
            # Counterfactual searches differentiate inside predict_step (DESIGN.md §3).
            trainer_defaults={"inference_mode": False}, args=args, run=run,
            # parse errors are raised (ArgumentError), so `main` can print them as one line
            parser_kwargs={"parser_mode": "yaml", "exit_on_error": False},
        )

    def instantiate_classes(self) -> None:
        # jsonargparse wraps a constructor's error in a multi-line report about Union subtypes; the
        # user needs only the root cause (e.g. "checkpoint 'x.pt' not found ...").
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError, KeyError, MisconfigurationException) as err:
            raise ConfigError(_one_line(err)) from err
        self._check_output_dirs()

    def _parse_ckpt_path(self) -> None:
        # Lightning reads a given ckpt_path here (for its hyper-parameters) and, if it is missing, only fails
        # once the trainer runs: both become one-line errors before any work.
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if isinstance(path, str) and path not in ("last", "best", "hpc") and not path.startswith("registry") \
                and not os.path.isfile(path):
            raise ConfigError(f"ckpt_path {path!r} not found; give the path of a Lightning checkpoint (e.g. "
                              "<run dir>/checkpoints/last.ckpt) or 'last'")
        try:
            super()._parse_ckpt_path()
        except (ArgumentError, SystemExit):
            raise
        except Exception as err:  # a damaged or foreign file
            raise ConfigError(f"ckpt_path {path!r} could not be read as a Lightning checkpoint "
                              f"({type(err).__name__}); give an intact checkpoint of this run") from err

    def _check_output_dirs(self) -> None:
        """An explanation job's ``output_dir`` must be a directory or creatable: checked before the trainer
        starts (before any data is read), not only when the writer sets up."""
        for cb in getattr(self.trainer, "callbacks", []):
            if isinstance(cb, CounterfactualWriter):
                cb.job.check_writable()


class _NoProductTips(logging.Filter):
    """Drops Lightning's "💡 Tip: try installing litlogger / litmodels" lines: advertisements, not job output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip:")


def _quiet_lightning_tips() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoProductTips) for f in logger.filters):
            logger.addFilter(_NoProductTips())


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``cflight`` console script.

    Every error a user can fix (a config that does not parse or instantiate, bad data or checkpoints found by
    cflight's checks, also while the job runs) is printed as one line ``cflight: error: ...`` (exit status 2);
    anything else is a bug and keeps its traceback.
    """
    os.environ.setdefault("WANDB_SILENT", "true")
    _quiet_lightning_tips()
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["benchmark"]:  # not a LightningCLI subcommand: several predict jobs and one table
        from cflight.benchmark.runner import main as benchmark_main

        try:
            benchmark_main(argv[1:])
        except (ConfigError, BadInputError) as err:
            print(f"cflight: error: {_error_line(err)}", file=sys.stderr)
            raise SystemExit(2) from None
        return
    subcommand = next((a for a in argv if a in CflightCLI.subcommands()), None)
    config = next((argv[k + 1] for k, a in enumerate(argv[:-1]) if a in ("-c", "--config")), None)
    try:
        CflightCLI(args=args)
    except ArgumentError as err:
        print(f"cflight: error: {parse_error_line(str(err), subcommand, config)}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ConfigError, BadInputError) as err:  # also the writer's JobMismatch and OutputDirError
        print(f"cflight: error: {_error_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None


def _error_line(err: BaseException) -> str:
    """The message's line; for an error re-raised from a DataLoader worker ("Caught X in DataLoader worker
    process 0." + the worker's traceback) the original message, which is the traceback's last line."""
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    if len(lines) > 1 and lines[0].startswith("Caught ") and "worker" in lines[0]:
        return lines[-1].split(": ", 1)[-1]
    return lines[0]


if __name__ == "__main__":
    main()
