"""`crossvit-mtl fit | validate | test`: Lightning's CLI on YAML configs.

Configs are validated on load by jsonargparse: unknown keys and wrong types fail with their name.
Every run lives in one folder (``--run_dir``): checkpoints (``best.ckpt``, the one the run's
``checkpoint_selection`` picks, and ``last.ckpt``), TensorBoard and CSV logs, the resolved
``config.yaml``, ``metrics.json`` (the val figures of the checkpoint that is tested),
``metrics_test.json`` with each test sample's metric states (``test_samples.npz``), and plots.
``--ckpt_path last`` resumes from the run folder's ``last.ckpt``.

A checkpoint given to ``--ckpt_path`` brings its model's options, and to a resumed ``fit`` its
data's too: an option given otherwise is refused by name (``RESUMABLE`` lists what may change).
"""
from __future__ import annotations

import json
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
from jsonargparse import ActionConfigFile, ArgumentError
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from crossvit_mtl.cli.args import (
    Integer,
    RunSeed,
    UserError,
    add_flag,
    named,
    no_space,
    output_path,
    print_error,
    read_yaml_mapping,
)
from crossvit_mtl.data.errors import DataError
from crossvit_mtl.engine.callbacks import training_callbacks
from crossvit_mtl.engine.checkpoint import AtomicCheckpointIO, StepCheckpoint, full_disk
from crossvit_mtl.engine.datamodule import DenseDataModule
from crossvit_mtl.engine.host_memory import apply_host_memory
from crossvit_mtl.engine.module import CHECKPOINT_SELECTIONS, DenseTaskModule, monitor_key
from crossvit_mtl.engine.precision import training_precision
from crossvit_mtl.engine.prediction_maps import PredictionMaps
from crossvit_mtl.engine.report import RunReport
from crossvit_mtl.engine.sample_stats import SampleStatistics
from crossvit_mtl.serialization import CheckpointError
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


#: what a resumed fit may set otherwise than its checkpoint was trained with: where the data lives
#: and how it is loaded. The trainer's options and the run's own are in no checkpoint: they apply as given.
RESUMABLE = ("data.root", "data.num_workers", "data.persistent_workers", "data.eval_batch_size")
#: checkpoint keys that are not options: the link from the data module, Lightning's bookkeeping
NOT_OPTIONS = ("dataset_meta", "_instantiator", "_class_path")


class CheckedConfigFile(ActionConfigFile):
    """``--config``: a file that is not a YAML mapping is one line naming it, before jsonargparse reads it."""

    def __call__(self, parser, cfg, values, option_string=None):
        read_yaml_mapping("--config", values)
        return super().__call__(parser, cfg, values, option_string)


#: how jsonargparse shows a key of type bool (or bool | None): the keys ``bare_booleans`` changes
BOOLEAN_METAVARS = ("{true,false}", "{true,false,null}")


def bare_booleans(parser) -> None:
    """Every boolean key takes ``--key`` alone as true, as the commands' own switches do
    (``--key true|false`` as before): jsonargparse's bool options take one value, made optional."""
    for action in parser._actions:
        if action.option_strings and action.metavar in BOOLEAN_METAVARS and action.nargs is None:
            action.nargs, action.const = "?", True


class Parser(LightningArgumentParser):
    """Lightning's parser in the project's grammar: boolean keys given alone or with true|false.
    Its options are the keys of the run's config.yaml, spelt as there (no hyphenated aliases)."""

    def add_class_arguments(self, *args, **kwargs):
        added = super().add_class_arguments(*args, **kwargs)
        bare_booleans(self)
        return added

    def add_method_arguments(self, *args, **kwargs):
        added = super().add_method_arguments(*args, **kwargs)  # the command's own: --ckpt_path, --weights_only
        bare_booleans(self)
        return added


def _plain(value):
    """A config value as JSON data (tuples and namespaces as lists and dicts), to compare."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    return json.loads(json.dumps(value, default=lambda v: v.as_dict() if hasattr(v, "as_dict") else str(v)))


def against_checkpoint(stored: dict[str, dict], given, fit: bool) -> tuple[list[str], list[str], dict]:
    """The options a checkpoint holds (``stored``: group -> key -> value) against those given:
    the ones given otherwise that are refused (or, in validate and test, overridden), those a fit
    takes as given (``RESUMABLE``), and the checkpoint's to take."""
    differing: list[str] = []
    changed: list[str] = []
    merged: dict[str, dict] = {}
    for group, options in stored.items():
        merged[group] = {}
        for key, value in options.items():
            name = f"{group}.{key}"
            if key in NOT_OPTIONS:
                continue
            if name not in given or _plain(given[name]) == _plain(value):
                merged[group][key] = value
            elif name in RESUMABLE and fit:
                changed.append(f"{name} {_plain(given[name])} (the checkpoint's: {_plain(value)})")
            else:
                differing.append(f"--{name} {_plain(given[name])} (the checkpoint's: {_plain(value)})")
    seed, stored_seed = given.get("seed_everything"), stored.get("data", {}).get("seed")
    if fit and "data.seed" not in given and type(seed) is int and stored_seed not in (None, seed):
        differing.append(f"--seed_everything {seed} (the checkpoint's data.seed: {stored_seed})")
    return differing, changed, merged


def resumed_checkpoint(config) -> Path | None:
    """The checkpoint file ``--ckpt_path`` names (``last``: the run folder's), if there is one to read."""
    path = config.get("ckpt_path")
    if not path or "://" in str(path) or path in ("best", "hpc"):
        return None
    if path == "last":
        last = Path(config.run_dir) / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    return Path(path)


class CrossViTCLI(LightningCLI):
    def init_parser(self, **kwargs) -> LightningArgumentParser:
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={pl.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=CheckedConfigFile, help="a YAML config file (repeatable)")
        return parser

    def add_default_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--seed_everything", type=RunSeed(), default=self.seed_everything_default,
                            help="seed of the run (also the training order's, data.seed), 0 to 2^32-1; true: "
                            "a random one, false: none")

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_dir", default="runs/default",
                            help="folder of this run: checkpoints, logs, metrics.json, plots")
        add_flag(parser, "--overwrite", "allow `fit` to start afresh in a run folder that already holds a run "
                 "(its contents are deleted first)")
        parser.add_argument("--checkpoint_every_n_steps", type=Integer(0, 10**9), default=0,
                            help="also write checkpoints/last.ckpt every N optimiser steps, mid-epoch "
                            "(0: only at epoch ends); `--ckpt_path last` resumes bit-exactly from it")
        add_flag(parser, "--test_after_fit", "after `fit`, evaluate the checkpoint --checkpoint_selection picks on "
                 "the test split: metrics_test.json")
        parser.add_argument("--checkpoint_selection", type=str, choices=tuple(CHECKPOINT_SELECTIONS), default="last",
                            help="the checkpoint a fit is tested on, one rule for every run of a comparison: "
                            + "; ".join(f"{k}: {v}" for k, v in CHECKPOINT_SELECTIONS.items()))
        parser.add_argument("--report_samples", type=Integer(0, 64), default=6,
                            help="samples drawn in the prediction grid after fit/test (0: none)")
        parser.add_argument("--save_predictions", type=list[str], default=[],
                            help="`test` (and --test_after_fit) writes these tasks' maps as 8-bit PNGs named "
                            "by sample id at each image's size: RUN/predictions/SPLIT/TASK/ID.png (e.g. "
                            "[edge, saliency], for SEISM or `crossvit-mtl edges`)")
        add_flag(parser, "--system_malloc", "`fit`: leave glibc's allocator as it is (default: freed host memory "
                 "is kept for reuse, which trains faster on CPU for a little more peak memory)")
        parser.link_arguments("data", "model.dataset_meta", compute_fn=lambda dm: dm.meta,
                              apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """The checkpoint of ``--ckpt_path`` is read first (an unreadable one is named in one line),
        and its options become the run's: the model's for every command, the data's too for a
        resumed fit. An option given otherwise is refused by name (a fit) or said to be overridden
        (validate, test), except those a resumed fit may change (``RESUMABLE``)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        path = resumed_checkpoint(self.config[subcommand]) if subcommand else None
        if path is None:
            return
        checkpoint = AtomicCheckpointIO().load_checkpoint(path)
        stored = {"model": checkpoint.get("hyper_parameters") or {}}
        if subcommand == "fit":
            stored["data"] = checkpoint.get("datamodule_hyper_parameters") or {}
        given = parser.parse_args(args, defaults=False)[subcommand]  # what the command line and configs say
        differing, changed, merged = against_checkpoint(stored, given, subcommand == "fit")
        if differing and subcommand == "fit":
            raise UserError(f"--ckpt_path {path}: a resumed fit keeps the options its checkpoint was trained with, "
                            f"but was given {'; '.join(differing)}; leave them out, or start a new run without "
                            "--ckpt_path (another --run_dir)")
        if differing:
            say(f"{subcommand}: the model is the checkpoint's ({path}), not as given: {'; '.join(differing)}")
        if changed:
            say(f"resuming {path} with {'; '.join(changed)}: the given value is used")
        self.config = parser.parse_object({subcommand: merged}, self.config)

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
                            "choose another --run_dir, or pass --overwrite to start afresh")
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
            *training_callbacks(self.model),
        ]
        saved = self._get(self.config, "save_predictions")
        if saved:
            try:
                callbacks.append(PredictionMaps(saved))
            except ValueError as err:
                raise UserError(str(err)) from None
            missing = [t for t in saved if t not in self.model.tasks]
            if missing:
                raise UserError(f"save_predictions: the model has no task {missing[0]!r} "
                                f"(its tasks: {', '.join(self.model.tasks)})")
        every = self._get(self.config, "checkpoint_every_n_steps")
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
        parser_class=Parser,
        # parse errors raised, not printed after 70 lines of usage: lightning_errors prints one line
        parser_kwargs={"exit_on_error": False, "prog": "crossvit-mtl",
                       **{c: {"exit_on_error": False} for c in ("fit", "validate", "test")}},
    )


def one_line(message: str) -> str:
    """jsonargparse's messages span lines (a key and its problem): one line."""
    text = ""
    for line in filter(None, (line.strip() for line in message.splitlines())):
        text += ("" if not text else " " if text.endswith(":") else "; ") + line
    return text


@contextmanager
def lightning_errors(cli: LightningCLI):
    """What goes wrong in a run the user can fix, as one-line ``UserError``s: a bad option, a bad
    data file met once the run has started, an unreadable checkpoint, targets outside the classes,
    a full disk (the file, else the run folder)."""
    with warnings.catch_warnings():
        # Lightning warns whenever explicit args meet a non-empty sys.argv; `main` always
        # passes them explicitly, so the warning says nothing here.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        try:
            yield
        except ArgumentError as err:
            raise UserError(one_line(str(err))) from None
        except (DataError, TargetError) as err:
            raise UserError(str(err)) from None
        except CheckpointError as err:  # the checkpoint to resume, validate or test
            raise named("--ckpt_path", err) from None
        except (OSError, RuntimeError) as err:
            disk = full_disk(err)
            if disk is None:
                raise
            config = getattr(cli, "config", None)  # None: the failure came before it was parsed
            subcommand = config.get("subcommand") if config is not None else None
            run_dir = (config[subcommand] if subcommand else config).get("run_dir") if config is not None else None
            fit = subcommand == "fit"
            raise no_space(disk, f"--run_dir {run_dir}" if run_dir else "the run folder",
                           "resume with --ckpt_path last" if fit else "run the command again") from None


def run_lightning(args: list[str]) -> int:
    # made first and initialised inside the handler, so that it can name the run folder of a run
    # that failed part-way (LightningCLI parses, builds and runs in its __init__)
    cli = CrossViTCLI.__new__(CrossViTCLI)
    with lightning_errors(cli):
        cli.__init__(**cli_kwargs(), args=args)  # type: ignore[misc]
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
    for name in ("fit", "validate", "test"):
        sub.add_parser(name, help=f"{name} a model on a YAML config (see `crossvit-mtl {name} --help`)",
                       add_help=False)
