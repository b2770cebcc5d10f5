"""The LightningModule: wires a zoo network to its tasks' losses, metrics, balancing method and optimiser.

The network stays a plain ``nn.Module`` (``self.model``); nothing here changes what it computes.
What a run does around its steps (skipping non-finite steps, the RNG state of a resume, loss
scales and heads measured on the data, throughput, DDP under gradient aggregation) is done by the
callbacks ``engine.callbacks.training_callbacks`` gives, each with its own checkpoint state.
"""
from __future__ import annotations

from typing import Any, cast

import lightning.pytorch as pl
import torch
from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import Metric

from crossvit_mtl.bounds import NonNegativeFiniteFloat, PositiveFiniteFloat
from crossvit_mtl.engine.aggregation import check_trainer
from crossvit_mtl.engine.fit_checks import check_model_fits_data
from crossvit_mtl.engine.optim import build_optimizer, warmup_cosine
from crossvit_mtl.engine.options import (
    Beta,
    LossScaling,
    LossSpec,
    ModelOptions,
    OptimizerName,
    SchedulerName,
    plain,
)
from crossvit_mtl.models import as_task_dict, build_for_data
from crossvit_mtl.models.interface import MultiTaskNetwork
from crossvit_mtl.models.pretrained import load_state
from crossvit_mtl.serialization import CheckpointError, state_mismatch
from crossvit_mtl.tasks import get_task
from crossvit_mtl.weighting import SharedNetwork, WeightingName, WeightingOptions, build_weighting
from crossvit_mtl.weighting.loss_scale import InitialLossScale

STAGES = ("val", "test")


#: How a run picks the checkpoint it is tested on (``checkpoint_selection``); a comparison holds
#: runs picked by one rule (``sweep`` refuses a mix, ``compare`` warns of one).
CHECKPOINT_SELECTIONS = {
    "last": "the weights at the end of training: no val figure decides",
    "val_loss": "the lowest val loss: each task's loss over its initial value, times its fixed weight, summed; "
                "defined alike for one task and for several",
    "val_metric": "the best val segmentation mIoU when the run has segmentation, else its first task's primary "
                  "metric: a multi-task run is picked by one task, a single-task run by its own",
}


def monitor_key(tasks: list[str], selection: str = "val_metric") -> tuple[str | None, str]:
    """The val figure that picks the checkpoint under rule ``selection`` and its direction; None
    for ``last`` (the latest checkpoint is kept)."""
    if selection not in CHECKPOINT_SELECTIONS:
        raise ValueError(f"checkpoint_selection must be one of {', '.join(CHECKPOINT_SELECTIONS)}, got {selection!r}")
    if selection == "last":
        return None, "max"
    if selection == "val_loss":
        return "val/loss", "min"
    task = "segmentation" if "segmentation" in tasks else tasks[0]
    metric = get_task(task).val_primary_metric or get_task(task).primary_metric
    return f"val/{task}/{metric}", "max" if get_task(task).metrics[metric].higher_is_better else "min"


class DenseTaskModule(pl.LightningModule):
    """Trains and evaluates any zoo model on the tasks a data set provides.

    Args:
        model: preset name (``crossvit-mtl models`` lists them).
        model_options: overrides of the preset's hyper-parameters (``options.ModelOptions``).
        losses: per task ``{"name": ..., "weight": ..., **loss options}``; tasks left out use
            their default loss (``Task.default_loss``: segmentation ``ce``, depth ``l1``, normal
            ``cosine``, edge ``weighted_bce``, saliency ``balanced_ce`` ...) with weight 1. The
            weight is a fixed scale >= 0 applied to the task's loss before the balancing method
            sees it; the loss's options are checked by its own signature.
        loss_scaling: ``initial`` (default) divides each task's loss by its value for the
            untrained network, measured once before the first step on a fixed set of training
            samples (``engine.calibration``), so that every task starts at 1 and ``ew`` means equal
            contribution (``crossvit_mtl.weighting.loss_scale``); ``none`` takes the losses as they are.
        weighting: how the task losses are balanced (``crossvit_mtl.weighting``): loss weightings
            ``fixed`` (the sum of the losses, each scaled by its weight) / ``ew`` (fixed with every
            weight 1), ``uw``, ``dwa``, ``rlw``, ``gls``, or a torchjd gradient aggregator on the shared
            network (``upgrad``, ``mgda``, ``pcgrad``, ``cagrad``, ``nashmtl``, ``imtlg``,
            ``alignedmtl``, ``dualproj``, ``graddrop``, ``config``, ``fairgrad``, ``gradvac``,
            ``mean``, ``sum``, ``random``): one Jacobian of the task losses per step.
        weighting_options: the method's options, e.g. ``{temperature: 2.0}`` for DWA, ``{c: 0.4}``
            for CAGrad, ``{parallel_chunk_size: 1}`` for any aggregator.
        optimizer: ``adam`` (the thesis), ``adamw`` (no decay on norms, biases, positions, CLS)
            or ``sgd``.
        scheduler: ``none`` or ``cosine`` (per step, after ``warmup_epochs`` of linear warm-up).
        max_nonfinite_steps: a step whose loss or gradient is not finite is skipped (the weights
            and the optimiser's state stay as they were) and counted in ``train/skipped_steps``;
            after this many in a row the run stops with a message, its weights still finite
            (``engine.nonfinite``).
        pretrained: a weights file to start the network from: a published CrossViT file (IBM's
            release, timm's ``crossvit_*``) or one of this library's (safetensors, a training
            checkpoint). What fits by name and shape is loaded, positions interpolated to the
            model's grid; what was loaded, interpolated and left as initialised is printed.
        compile: run the network's forward through ``torch.compile`` (``nn.Module.compile``: the
            state dict keeps its names). Off by default: measured, it did not pay for its compile
            time in training (docs/speed.md; ``crossvit-mtl bench --variants compile``).
        dataset_meta: what the data module says of its data (tasks, classes, palette...);
            the command line links it, and it is saved in checkpoints so prediction can rebuild
            the model and show its outputs.
    """

    #: not counted per batch (Lightning's ``ThroughputMonitor`` reads it); ``crossvit-mtl models``
    #: lists every preset's forward FLOPs
    flops_per_batch: int | None = None

    def __init__(self, model: str = "crossvit_seg_small", model_options: ModelOptions = {},  # noqa: B006  # read, never changed
                 losses: dict[str, LossSpec] = {}, optimizer: OptimizerName = "adamw",  # noqa: B006
                 lr: PositiveFiniteFloat = 1e-3, weight_decay: NonNegativeFiniteFloat = 0.05,
                 betas: tuple[Beta, Beta] = (0.9, 0.999), scheduler: SchedulerName = "cosine",
                 warmup_epochs: NonNegativeFiniteFloat = 1.0, min_lr_ratio: ClosedUnitInterval = 0.01,
                 weighting: WeightingName = "ew", weighting_options: WeightingOptions = {},  # noqa: B006
                 loss_scaling: LossScaling = "initial", max_nonfinite_steps: PositiveInt = 10,
                 pretrained: str | None = None, compile: bool = False, dataset_meta: dict[str, Any] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.hparams.update(plain(dict(self.hparams)))  # checkpoints hold plain data, read weights_only
        if dataset_meta is None:
            raise ValueError("dataset_meta is required (the data module's `meta`); the command line links it")
        model_options = model_options or {}
        check_model_fits_data(model, model_options, dataset_meta)
        self.task_channels: dict[str, int] = dict(dataset_meta["task_channels"])
        self.tasks = list(self.task_channels)
        self.model = build_for_data(model, dict(model_options), dataset_meta)
        if dataset_meta.get("image_size"):  # what the model summary's FLOPs column runs once
            self.example_input_array = torch.zeros(1, 3, *dataset_meta["image_size"])
        if pretrained:
            self._load_pretrained(pretrained)
        self.loss_weights, self.criteria = self._build_losses(losses or {}, dataset_meta)
        self.loss_scale = InitialLossScale(self.tasks, loss_scaling)
        self.weighting = build_weighting(weighting, self.tasks, weighting_options)
        if self.weighting.needs_network and not isinstance(self.model, MultiTaskNetwork):
            raise ValueError(f"weighting {weighting!r} aggregates gradients on a shared network; "
                             f"model {model!r} has none (use a crossvit_mtl_* model)")
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({t: get_task(t).build_metric(dataset_meta, stage) for t in self.tasks})
            for stage in STAGES})
        #: the last computed results per stage, {task: {metric: value}}, for reports
        self.results: dict[str, dict[str, dict[str, Any]]] = {}
        #: why the run stopped before its end, set by the callback that stopped it; None: it did not
        self.stop_reason: str | None = None
        #: this epoch's sums of each task's finite training losses and the batches they came from,
        #: averaged for the weighting at the epoch's end (DWA's input)
        self._epoch_sums = torch.zeros(len(self.tasks))
        self._epoch_batches = torch.zeros((), dtype=torch.long)
        #: what ``backward`` needs of the step under way: its task losses and the shared network
        self._step: tuple[dict[str, torch.Tensor], SharedNetwork | None] | None = None

    def _load_pretrained(self, source: str) -> None:
        """A file or a release's hub name; whatever fits is loaded, and the report printed."""
        try:
            report = load_state(self.model, source, "partial")
        except CheckpointError as err:
            raise ValueError(f"model.pretrained {err}") from None
        rank_zero_info(f"model.pretrained {source}: {report}")

    def _build_losses(self, losses: dict[str, LossSpec], dataset_meta: dict[str, Any]) -> tuple[dict[str, float], nn.ModuleDict]:
        """Each task's fixed weight and criterion; the weight is typed here (the rest of a loss's
        options vary with the loss: its signature checks them)."""
        unknown = sorted(set(losses) - set(self.tasks))
        if unknown:
            raise ValueError(f"model.losses: task(s) {', '.join(map(repr, unknown))} not provided by data set "
                             f"{dataset_meta.get('name')!r} (its tasks: {', '.join(self.tasks)})")
        weights, criteria = {}, nn.ModuleDict()
        for task in self.tasks:
            spec = dict(losses.get(task) or {})
            try:
                weights[task] = float(NonNegativeFiniteFloat(spec.pop("weight", 1.0)))
            except (TypeError, ValueError) as err:
                raise ValueError(f"model.losses.{task}.weight: {err}") from None
            try:
                criteria[task] = get_task(task).build_loss(spec.pop("name", None), **spec)
            except (TypeError, ValueError) as err:
                raise ValueError(f"model.losses.{task}: {err}") from None
        return weights, criteria

    # ------------------------------------------------------------------ steps
    @staticmethod
    def widen(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Labels travel as uint8 and training images and normals as float16 (see ``DatasetInfo``);
        losses and metrics take what each task says (``Task.widen``: int64, float32). Called by each
        step on the device (not as Lightning's ``on_after_batch_transfer``, which a data module may own)."""
        for key, value in batch.items():
            batch[key] = value.float() if key == "image" else get_task(key).widen(value)
        return batch

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return as_task_dict(self.model(images))

    def weighted_losses(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's loss in float32, divided by its initial value (``loss_scaling``) and scaled by
        its fixed weight."""
        return {t: self.loss_weights[t] * self.loss_scale(t, self.criteria[t](outputs[t], batch[t]).float())
                for t in self.tasks}

    def _forward_for(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], SharedNetwork | None]:
        """The outputs and, for a method that differentiates each task's loss through the shared
        network, that network: the features the heads read in this same forward pass, the shared
        parameters and the heads'."""
        if not self.weighting.needs_network:
            return self(images), None
        network = cast(MultiTaskNetwork, self.model)
        features = network.forward_features(images)
        heads = {t: [p for p in network.head_parameters(t) if p.requires_grad] for t in self.tasks}
        head_ids = {id(p) for params in heads.values() for p in params}
        shared = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        unique = {id(f): f for feats in features.values() for f in feats}
        return (network.forward_heads(features, (images.shape[-2], images.shape[-1])),
                SharedNetwork(list(unique.values()), shared, heads))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        batch = self.widen(batch)
        images = batch["image"]
        outputs, network = self._forward_for(images)
        losses = self.weighted_losses(outputs, batch)
        total = self.weighting(losses)
        self._step = losses, network
        bs = images.shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        # each task's loss is logged once an epoch, from these sums (on_train_batch_end): every
        # `self.log` costs about a millisecond of Lightning's bookkeeping, a few per cent of a step
        # of the quick start's network. The averages count the batches whose losses are finite
        # (a skipped step's too)
        stacked = torch.stack([losses[t].detach() for t in self.tasks])
        finite = torch.isfinite(stacked).all()
        self._epoch_sums = self._epoch_sums.to(stacked.device) + torch.where(finite, stacked, 0.0)
        self._epoch_batches = self._epoch_batches.to(stacked.device) + finite.long()
        return total

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's backward of the step's total (scaled where the precision scales losses),
        handed to the weighting, which fills the gradients its own way."""
        if self._step is None:
            raise RuntimeError("backward without a training step")
        losses, network = self._step
        self._step = None
        weights = self.weighting.backward(loss, losses, network)
        if len(self.tasks) > 1 and self._logs_this_step():
            for task, value in weights.items():
                self.log(f"train/weight_{task}", value, on_step=True, on_epoch=False, batch_size=1)

    def _logs_this_step(self) -> bool:
        """Whether the loggers get this training step's values (every ``log_every_n_steps``):
        Lightning drops an on-step value logged on any other step, after its bookkeeping."""
        return self._trainer is None or self.trainer._logger_connector.should_update_logs

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        batch = self.widen(batch)
        outputs = self(batch["image"])
        total = sum(self.weighted_losses(outputs, batch).values())
        self.log(f"{stage}/loss", total, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=batch["image"].shape[0])
        metrics = self.stage_metrics(stage)
        for task in self.tasks:
            metrics[task].update(outputs[task].float(), batch[task])
        return outputs

    def stage_metrics(self, stage: str) -> dict[str, Metric]:
        """Each task's metric of an evaluation stage ("val" or "test")."""
        return {t: cast(Metric, m) for t, m in cast(nn.ModuleDict, self.metrics[stage]).items()}

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        # the outputs: each sample's metric states are kept, and callbacks write maps (prediction_maps)
        return self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        results = {}
        for task, metric in self.stage_metrics(stage).items():
            values = metric.compute()
            metric.reset()
            results[task] = values
            for key, value in values.items():
                if isinstance(value, float):
                    self.log(f"{stage}/{task}/{key}", value, sync_dist=False)
        self.results[stage] = results

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """After an epoch's last batch, hands the weighting each task's average training loss (mean
        over its finite batches and over devices) and logs it (``train/loss_<task>``). Done here,
        before validation, so the end-of-epoch checkpoint holds it."""
        if not self.trainer.is_last_batch:
            return
        batches = int(self._epoch_batches)
        if batches:
            averages = {t: float(self.trainer.strategy.reduce(total / batches, reduce_op="mean"))
                        for t, total in zip(self.tasks, self._epoch_sums)}
            self.weighting.on_epoch_end(averages)
            if len(self.tasks) > 1:
                for task, value in averages.items():
                    self.log(f"train/loss_{task}", value, on_step=False, on_epoch=True, batch_size=1)
        self._epoch_sums, self._epoch_batches = torch.zeros_like(self._epoch_sums), torch.zeros_like(self._epoch_batches)

    # ------------------------------------------------------------- resuming
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What a bit-exact resume needs of the module beyond weights and optimiser: the running
        epoch's loss sums (they feed DWA at the epoch's end), the weighting's state outside its
        parameters and buffers (a stateful torchjd aggregator's, e.g. Nash-MTL's) and the loss
        scales. The callbacks save their own."""
        checkpoint["train_progress"] = {
            "epoch_losses": {t: v.detach().cpu() for t, v in zip(self.tasks, self._epoch_sums)},
            "epoch_batches": int(self._epoch_batches)}
        checkpoint["weighting_state"] = self.weighting.state_for_checkpoint()
        checkpoint["loss_scale"] = self.loss_scale.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        mine, theirs = ({k: v for k, v in state.items() if k.startswith("model.")}
                        for state in (self.state_dict(), checkpoint["state_dict"]))
        problem = state_mismatch(mine, theirs)
        if problem:  # another network: one line naming the keys before Lightning's many-line error
            io = getattr(getattr(self._trainer, "strategy", None), "checkpoint_io", None)
            raise CheckpointError(f"{getattr(io, 'last_path', None) or 'checkpoint'}: weights do not fit "
                                  f"model {self.hparams.model!r}; {problem}")
        progress = checkpoint.get("train_progress") or {}
        saved = progress.get("epoch_losses") or {}
        self._epoch_sums = torch.stack([torch.as_tensor(saved.get(t, 0.0), dtype=torch.float32) for t in self.tasks])
        self._epoch_batches = torch.tensor(int(progress.get("epoch_batches", 0)))
        # absent from checkpoints written before it was saved: the weighting starts as built
        self.weighting.load_state_from_checkpoint(checkpoint.get("weighting_state") or {})
        self.loss_scale.load_state(checkpoint.get("loss_scale") or {})

    def check_precision(self, trainer: pl.Trainer) -> None:
        """The trainer settings a gradient aggregator cannot train with (fp16 loss scaling,
        accumulated gradients), refused in one line before the fit starts."""
        if self.weighting.needs_network:
            check_trainer(self.hparams.weighting, trainer)

    # -------------------------------------------------------------- optimiser
    def configure_model(self) -> None:
        if self.hparams.compile:  # idempotent: compiles the module's uncompiled call
            self.model.compile()

    def configure_optimizers(self):
        hp = self.hparams
        # the module, not only the network: UW's log-variances are trained too
        optimizer = build_optimizer(self, hp.optimizer, hp.lr, hp.weight_decay, tuple(hp.betas))
        if hp.scheduler == "none":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = total / max(self.trainer.max_epochs or 1, 1)
        warmup = int(round(hp.warmup_epochs * steps_per_epoch))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(total, warmup, hp.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
