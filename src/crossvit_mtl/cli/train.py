"""`crossvit-mtl fit | validate | test`: Lightning's CLI on YAML configs.

Configs are validated on load by jsonargparse: unknown keys and wrong types fail with their name.
Every run lives in one folder (``--run_dir``): checkpoints (``best.ckpt``, the one the run's
``checkpoint_selection`` picks, and ``last.ckpt``), TensorBoard and CSV logs, the resolved
``config.yaml``, ``metrics.json`` (the val figures of the checkpoint that is tested),
``metrics_test.json`` with each test sample's metric states (``test_samples.npz``), and plots.
``--ckpt_path last`` resumes from the run folder's ``last.ckpt``.
"""
from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from crossvit_mtl.cli.args import LIGHTNING_COMMANDS, UserError, named, output_path, print_error, read_yaml_mapping
from crossvit_mtl.data.errors import DataError
from crossvit_mtl.engine.checkpoint import AtomicCheckpointIO, StepCheckpoint
from crossvit_mtl.engine.datamodule import DenseDataModule
from crossvit_mtl.engine.host_memory import apply_host_memory
from crossvit_mtl.engine.module import CHECKPOINT_SELECTIONS, DenseTaskModule, monitor_key
from crossvit_mtl.engine.precision import training_precision
from crossvit_mtl.engine.report import RunReport, Throughput
from crossvit_mtl.engine.sample_stats import SampleStatistics
from crossvit_mtl.serialization import CheckpointError, read_checkpoint
from crossvit_mtl.tasks import TargetError


@rank_zero_only
def say(message: str) -> None:
    """A line of the run's output, printed once (by the first process under DDP)."""
    print(message, flush=True)


class SaveRunConfig(SaveConfigCallback):
    """The resolved config goes to the run folder itself, beside checkpoints and metrics."""

    def __init__(self, parser, config, **kwargs):
        super().__init__(parser, config, save_to_log_dir=False, **kwargs)

    def save_config(self, trainer, pl_module, stage) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)


class CrossViTCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_dir", default="runs/default",
                            help="folder of this run: checkpoints, logs, metrics.json, plots")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="allow `fit` to start afresh in a run folder that already holds a run "
                            "(its contents are deleted first)")
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=0,
                            help="also write checkpoints/last.ckpt every N optimiser steps, mid-epoch "
                            "(0: only at epoch ends); `--ckpt_path last` resumes bit-exactly from it")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after `fit`, evaluate the checkpoint --checkpoint_selection picks on the "
                            "test split: metrics_test.json")
        parser.add_argument("--checkpoint_selection", type=Literal["last", "val_loss", "val_metric"], default="last",
                            help="the checkpoint a fit is tested on, one rule for every run of a comparison: "
                            + "; ".join(f"{k}: {v}" for k, v in CHECKPOINT_SELECTIONS.items()))
        parser.add_argument("--report_samples", type=int, default=6,
                            help="samples drawn in the prediction grid after fit/test (0: none)")
        parser.add_argument("--system_malloc", type=bool, default=False,
                            help="`fit`: leave glibc's allocator as it is (default: freed host memory is "
                            "kept for reuse, which trains faster on CPU for a little more peak memory)")
        parser.link_arguments("data", "model.dataset_meta", compute_fn=lambda dm: dm.meta,
                              apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Lightning reads --ckpt_path's hyper-parameters here, first of all: a file it cannot read
        is read again by ``read_checkpoint``, which names it and the reason in one line."""
        try:
            super()._parse_ckpt_path()
        except Exception:
            subcommand = self.config.get("subcommand")
            path = subcommand and self.config[subcommand].get("ckpt_path")
            if path and Path(path).is_file():
                read_checkpoint(path)  # raises CheckpointError if the file is what failed
            raise

    def before_instantiate_classes(self) -> None:
        """The run folder is a folder (or can become one); a new `fit` never writes into an
        existing run unless resuming or told to overwrite. The data module's seed is the run's
        (``seed_everything``, resolved by now) unless given; training keeps host memory."""
        config = self.config[self.subcommand] if self.subcommand else self.config  # the demo runs no subcommand
        output_path("--run_dir", config.run_dir, folder=True, overwrite=True)
        if config.data.seed is None and not isinstance(config.seed_everything, bool):
            config.data.seed = int(config.seed_everything)
        if self.subcommand not in ("fit", None):
            return
        say(apply_host_memory(config.system_malloc))
        if self.subcommand != "fit":
            return
        run_dir = Path(config.run_dir)
        if not run_dir.exists() or not any(run_dir.iterdir()) or config.ckpt_path:
            return
        if not config.overwrite:
            raise UserError(f"--run_dir {run_dir}: already holds a run; resume it with --ckpt_path last, "
                            "choose another --run_dir, or pass --overwrite true to start afresh")
        shutil.rmtree(run_dir)

    def after_fit(self) -> None:
        if not getattr(self.model, "stop_reason", None):
            test_best(self.trainer, self.model, self.datamodule, self._get(self.config, "checkpoint_selection"),
                      test=self._get(self.config, "test_after_fit"))

    def instantiate_classes(self) -> None:
        # Bad values in a config (a task the data lacks, a negative lr, a missing folder) are the
        # user's to fix: one line naming the key and value, not a traceback.
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, MisconfigurationException) as err:
            # a value error inside the data -> model link arrives wrapped by jsonargparse
            cause = err.__cause__ if isinstance(err.__cause__, (ValueError, FileNotFoundError)) else err
            raise UserError(str(cause)) from None

    def instantiate_trainer(self, **kwargs):
        run_dir = Path(self._get(self.config, "run_dir"))
        trainer_config = self._get(self.config_init, "trainer", default={})
        selection = self._get(self.config, "checkpoint_selection")
        monitor, mode = monitor_key(self.model.tasks, selection)
        callbacks = list(trainer_config.get("callbacks") or [])
        callbacks += [
            # one best.ckpt (the checkpoint the rule picks; under `last`, the latest) and one last.ckpt,
            # overwritten in place (atomically), never -v1 copies
            ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode,
                            save_last=True, auto_insert_metric_name=False, enable_version_counter=False),
            # the rule is the fit's: `validate` and `test` evaluate the checkpoint they are given
            RunReport(self._get(self.config, "report_samples"), selection if self.subcommand in ("fit", None) else None),
            SampleStatistics(),
            Throughput(),
        ]
        every = self._get(self.config, "checkpoint_every_n_steps")
        if every < 0:
            raise UserError(f"checkpoint_every_n_steps must be >= 0, got {every}")
        if every:
            callbacks.append(StepCheckpoint(run_dir / "checkpoints", every))
        logger = trainer_config.get("logger")
        if logger is None or logger is True:
            logger = [TensorBoardLogger(run_dir, name="tensorboard", version=""),
                      CSVLogger(run_dir, name="csv", version=self.subcommand or "fit")]
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if trainer_config.get("strategy") == "ddp":
            # Evaluation runs unpadded (ranks may see one batch more than others), so the DDP
            # wrapper must not broadcast buffers on every forward; sync_batchnorm keeps BN in step.
            kwargs["strategy"] = DDPStrategy(broadcast_buffers=False)
        plugins = list(trainer_config.get("plugins") or [])
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        kwargs.update(default_root_dir=str(run_dir), logger=logger, callbacks=callbacks, plugins=plugins)
        trainer = super().instantiate_trainer(**kwargs)
        default, reason = training_precision(str(trainer_config.get("accelerator") or "auto"))
        chosen = str(trainer.precision)
        say(f"precision: {chosen}: {reason if chosen == default else 'asked for by --trainer.precision'}")
        try:  # fp16 by default on GPUs without bf16 (engine/precision.py) meets gradient weightings here
            if self.subcommand == "fit":
                self.model.check_precision(trainer)
        except ValueError as err:
            raise UserError(str(err)) from None
        return trainer


def test_best(trainer, model, datamodule, selection: str = "last", test: bool = True) -> None:
    """After a fit: the val figures (``metrics.json``) and, with ``test``, the test figures of the
    checkpoint rule ``selection`` picks. Under ``last`` that is the weights as they are, whose val
    figures the fit's last validation wrote; under a val rule, the best checkpoint on val, validated
    again so that ``metrics.json`` is its own. A data module that tests on the split that picks
    checkpoints (the MTAN copies: ``test_split: val``) is tested on its last weights, as no
    checkpoint chosen on a split can be reported on it; without a chosen checkpoint (validation never
    ran) the weights as they are too; each says so."""
    callback = trainer.checkpoint_callback
    chosen = callback.best_model_path if callback is not None and selection != "last" else ""
    hp = datamodule.hparams
    if chosen and hp.test_split == hp.val_split:
        print(f"checkpoint_selection {selection}: data.test_split is {hp.val_split!r}, the split that picks "
              "checkpoints; reporting the last weights on it, not the checkpoint chosen on it", file=sys.stderr)
        chosen = ""
    elif selection != "last" and not chosen:
        print(f"checkpoint_selection {selection}: no checkpoint chosen (validation never ran): "
              "reporting the last weights", file=sys.stderr)
    report = next((c for c in trainer.callbacks if isinstance(c, RunReport)), None)
    if chosen or (report is not None and report.validated_step != trainer.global_step):
        loggers, trainer.loggers = trainer.loggers, []  # its figures go to metrics.json, not into the curves
        try:
            trainer.validate(model, datamodule=datamodule, ckpt_path=chosen or None, verbose=False)
        finally:
            trainer.loggers = loggers
    if test:
        trainer.test(model, datamodule=datamodule, ckpt_path=chosen or None, verbose=False)


def cli_kwargs() -> dict:
    """The settings every use of the CLI shares (commands, the demo, tests)."""
    return dict(
        model_class=DenseTaskModule, datamodule_class=DenseDataModule,
        seed_everything_default=42,
        trainer_defaults={"precision": training_precision()[0], "log_every_n_steps": 10},
        save_config_callback=SaveRunConfig,
        auto_configure_optimizers=False,
        # parse errors raised, not printed after 70 lines of usage: run_lightning prints one line
        parser_kwargs={"exit_on_error": False, **{c: {"exit_on_error": False} for c in LIGHTNING_COMMANDS}},
    )


def _one_line(message: str, args: list[str]) -> str:
    """jsonargparse's messages span lines (a key and its problem, a YAML error's parts): one line,
    with the config file named where the YAML parser only says "<unicode string>"."""
    text = ""
    for line in filter(None, (line.strip() for line in message.splitlines())):
        text += ("" if not text else " " if text.endswith(":") else "; ") + line
    configs = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--config", "-c")]
    if len(configs) == 1:
        text = text.replace('"<unicode string>"', configs[0])
    return text


def _option_values(args: list[str], *names: str) -> list[str]:
    """What the command line gives options ``names`` (``--opt VALUE`` or ``--opt=VALUE``)."""
    values = []
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                values.append(args[i + 1])
            elif arg.startswith(f"{name}="):
                values.append(arg.split("=", 1)[1])
    return values


def run_lightning(args: list[str]) -> int:
    for path in _option_values(args, "--config", "-c"):  # a broken file: one line naming it, not the parser's
        read_yaml_mapping("--config", path)
    with warnings.catch_warnings():
        # Lightning warns whenever explicit args meet a non-empty sys.argv; `main` always
        # passes them explicitly, so the warning says nothing here.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        try:
            cli = CrossViTCLI(**cli_kwargs(), args=args)
        except ArgumentError as err:
            raise UserError(_one_line(str(err), args)) from None
        except DataError as err:  # a bad data file met once the run had started
            raise UserError(str(err)) from None
        except CheckpointError as err:  # the checkpoint to resume, validate or test
            raise named("--ckpt_path", err) from None
        except TargetError as err:  # a loss met targets outside the classes: stopped before using them
            raise UserError(str(err)) from None
    reason = getattr(cli.model, "stop_reason", None)
    if reason:
        print(f"crossvit-mtl {args[0]}: stopped: {reason}", file=sys.stderr)
        return 1
    return 0


def run_command(args: list[str]) -> int:
    """``crossvit-mtl fit|validate|test ...`` as the command line runs it: the exit code, with a
    problem in what was asked printed in one line."""
    try:
        return run_lightning(args)
    except UserError as err:
        return print_error(args[0] if args else None, err)


def add_parser(sub) -> None:
    # Listed for `crossvit-mtl --help`; `main` hands these commands to Lightning's own parser.
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"{name} a model on a YAML config (see `crossvit-mtl {name} --help`)",
                       add_help=False)
