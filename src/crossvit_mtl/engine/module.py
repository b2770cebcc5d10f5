"""The LightningModule: wires a zoo network to its tasks' losses, metrics and optimiser.

The network stays a plain ``nn.Module`` (``self.model``); nothing here changes what it computes.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from crossvit_mtl.engine.config_checks import check_model_fits_data, check_training_options
from crossvit_mtl.engine.optim import build_optimizer, warmup_cosine
from crossvit_mtl.engine.sampling import capture_rng_states, restore_rng_states
from crossvit_mtl.models import as_task_dict, build_for_data
from crossvit_mtl.models.pretrained import load_state
from crossvit_mtl.serialization import CheckpointError, state_mismatch
from crossvit_mtl.tasks import get_task
from crossvit_mtl.weighting import build_weighting
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
        model_options: overrides of the preset's hyper-parameters.
        losses: per task ``{"name": ..., "weight": ..., **loss options}``; tasks left out use
            their default loss (``Task.default_loss``: segmentation ``ce``, depth ``l1``, normal
            ``cosine``, edge ``weighted_bce``, saliency ``balanced_ce`` ...) with weight 1. The weight is a fixed scale applied to the
            task's loss before the balancing method sees it.
        loss_scaling: ``initial`` (default) divides each task's loss by its value for the
            untrained network, measured once before the first step on a fixed set of training
            samples, so that every task starts at 1 and ``ew`` means equal contribution
            (``crossvit_mtl.weighting.loss_scale``); ``none`` takes the losses as they are.
        weighting: how the task losses are balanced (``crossvit_mtl.weighting``): loss weightings
            ``ew`` / ``fixed`` (sum of the weighted losses), ``uw``, ``dwa``, ``rlw``, ``gls``, or a
            torchjd gradient aggregator on the shared network (``upgrad``, ``mgda``, ``pcgrad``,
            ``cagrad``, ``nashmtl``, ``imtlg``, ``alignedmtl``, ``dualproj``, ``graddrop``,
            ``config``, ``fairgrad``, ``gradvac``, ``mean``, ``sum``, ``random``), which train with
            manual optimisation: one Jacobian of the task losses per step.
        weighting_options: the method's options, e.g. ``{temperature: 2.0}`` for DWA, ``{c: 0.4}``
            for CAGrad, ``{parallel_chunk_size: 1}`` for any aggregator.
        optimizer: ``adam`` (the thesis), ``adamw`` (no decay on norms, biases, positions, CLS)
            or ``sgd``.
        scheduler: ``none`` or ``cosine`` (per step, after ``warmup_epochs`` of linear warm-up).
        max_nonfinite_steps: a step whose loss or gradient is not finite is skipped (the weights
            and the optimiser's state stay as they were) and counted in ``train/skipped_steps``;
            after this many in a row the run stops with a message, its weights still finite.
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

    def __init__(self, model: str = "crossvit_seg_small", model_options: dict[str, Any] | None = None,
                 losses: dict[str, dict[str, Any]] | None = None, optimizer: str = "adamw",
                 lr: float = 1e-3, weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.999),
                 scheduler: str = "cosine", warmup_epochs: float = 1.0, min_lr_ratio: float = 0.01,
                 weighting: str = "ew", weighting_options: dict[str, Any] | None = None,
                 loss_scaling: str = "initial", max_nonfinite_steps: int = 10, pretrained: str | None = None,
                 compile: bool = False,
                 dataset_meta: dict[str, Any] | None = None):
        super().__init__()
        self.save_hyperparameters()
        if dataset_meta is None:
            raise ValueError("dataset_meta is required (the data module's `meta`); the command line links it")
        # Impossible values fail here, before any data is loaded or any step runs, in one line
        # naming the config key and the value (the command line prints it as it is).
        check_training_options(lr=lr, weight_decay=weight_decay, betas=betas, min_lr_ratio=min_lr_ratio,
                               warmup_epochs=warmup_epochs, optimizer=optimizer, scheduler=scheduler,
                               weighting=weighting, loss_scaling=loss_scaling,
                               max_nonfinite_steps=max_nonfinite_steps)
        check_model_fits_data(model, model_options, dataset_meta)
        self.task_channels: dict[str, int] = dict(dataset_meta["task_channels"])
        self.tasks = list(self.task_channels)
        losses = dict(losses or {})
        unknown = sorted(set(losses) - set(self.tasks))
        if unknown:
            raise ValueError(f"model.losses: task(s) {', '.join(map(repr, unknown))} not provided by data set "
                             f"{dataset_meta.get('name')!r} (its tasks: {', '.join(self.tasks)})")
        self.model = build_for_data(model, model_options, dataset_meta)
        if dataset_meta.get("image_size"):  # what the model summary's FLOPs column runs once
            self.example_input_array = torch.zeros(1, 3, *dataset_meta["image_size"])
        if pretrained:
            self._load_pretrained(pretrained)
        self.loss_weights: dict[str, float] = {}
        self.criteria = nn.ModuleDict()
        for task in self.tasks:
            spec = dict(losses.get(task) or {})
            weight = spec.pop("weight", 1.0)
            if not (isinstance(weight, (int, float)) and 0 <= weight < float("inf")):
                raise ValueError(f"model.losses.{task}.weight must be >= 0, got {weight!r}")
            self.loss_weights[task] = float(weight)
            try:
                self.criteria[task] = get_task(task).build_loss(spec.pop("name", None), **spec)
            except (TypeError, ValueError) as err:
                raise ValueError(f"model.losses.{task}: {err}") from None
        self.loss_scale = InitialLossScale(self.tasks, loss_scaling)
        self.weighting = build_weighting(weighting, self.tasks, weighting_options)
        if self.weighting.gradient_based:
            if not hasattr(self.model, "forward_features"):
                raise ValueError(f"weighting {weighting!r} aggregates gradients on a shared network; "
                                 f"model {model!r} has none (use a crossvit_mtl_* model)")
            self.automatic_optimization = False
        #: per-task sums of this epoch's training losses and the batch count, for ``on_epoch_end``
        self._epoch_losses: dict[str, torch.Tensor] = {}
        self._epoch_batches = 0
        #: non-finite steps skipped in all and in a row; why the run stopped, if it did
        self.skipped_steps = 0
        self._nonfinite_in_row = 0
        self.stop_reason: str | None = None
        #: this optimiser step's losses (summed over accumulated batches) until it is known finite
        self._step_losses: dict[str, torch.Tensor] = {}
        self._step_batches = 0
        self._stats_before: list[torch.Tensor] = []
        self._rng_to_restore: dict[str, Any] | None = None
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({t: get_task(t).build_metric(dataset_meta, stage) for t in self.tasks})
            for stage in STAGES})
        #: the last computed results per stage, {task: {metric: value}}, for reports
        self.results: dict[str, dict[str, dict[str, Any]]] = {}

    def _load_pretrained(self, source: str) -> None:
        """A file or a release's hub name; whatever fits is loaded, and the report printed."""
        try:
            report = load_state(self.model, source, "partial")
        except CheckpointError as err:
            raise ValueError(f"model.pretrained {err}") from None
        rank_zero_info(f"model.pretrained {source}: {report}")

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

    @torch.no_grad()
    def measure_initial_losses(self, batch: dict[str, torch.Tensor], chunk: int = 16,
                               context: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> dict[str, float]:
        """Each task's mean loss for the network as it is on ``batch``, in training mode (batch
        statistics, as the first steps see them) under ``context`` (the run's precision), in chunks
        of ``chunk`` samples whatever the run's batch size or number of processes, so every rank
        and a single process measure the same values; weights, batch-norm statistics and the
        random state are left as they were."""
        was_training, saved = self.training, [b.clone() for b in self.model.buffers()]
        count = batch["image"].shape[0]
        sums = dict.fromkeys(self.tasks, 0.0)
        self.train()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for start in range(0, count, chunk):
                part = self.widen({k: v[start:start + chunk].to(self.device) for k, v in batch.items()})
                with context():
                    outputs = self(part["image"])
                for t in self.tasks:
                    sums[t] += float(self.criteria[t](outputs[t], part[t])) * part["image"].shape[0]
        for buffer, value in zip(self.model.buffers(), saved):
            buffer.copy_(value)
        self.train(was_training)
        return {t: total / count for t, total in sums.items()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        batch = self.widen(batch)
        images = batch["image"]
        if self.automatic_optimization:
            losses = self.weighted_losses(self(images), batch)
            total, weights = self.weighting(losses)
        else:
            total, weights, losses = self._aggregated_step(images, batch)
        bs = images.shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        if len(self.tasks) > 1:
            for task, value in losses.items():
                self.log(f"train/loss_{task}", value, on_step=False, on_epoch=True, batch_size=bs)
            for task, value in weights.items():
                self.log(f"train/weight_{task}", value, on_step=True, on_epoch=False, batch_size=bs)
        # counted for the epoch once the optimiser step is known to be finite
        self._step_batches += 1
        for task, value in losses.items():
            self._step_losses[task] = self._step_losses.get(task, 0.0) + value.detach()
        return total

    def _aggregated_step(self, images: torch.Tensor, batch: dict[str, torch.Tensor]):
        """One manual step for gradient aggregators: heads on their own losses, the shared
        network (everything but the heads) on the aggregated Jacobian; then the scheduler."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        features = self.model.forward_features(images)
        losses = self.weighted_losses(self.model.forward_heads(features, tuple(images.shape[-2:])), batch)
        unique = list({id(f): f for value in features.values()
                       for f in (value if isinstance(value, list) else [value])}.values())
        heads = {t: [p for p in self.model.heads[t].parameters() if p.requires_grad] for t in self.tasks}
        head_ids = {id(p) for params in heads.values() for p in params}
        shared = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        # under DDP, averages the ranks' Jacobians and heads' gradients before aggregating
        weights = self.weighting.backward(losses, unique, shared, heads)
        optimizer.step()  # through on_before_optimizer_step, which skips a non-finite step
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        return sum(losses.values()).detach(), weights, losses

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        batch = self.widen(batch)
        outputs = self(batch["image"])
        total = sum(self.weighted_losses(outputs, batch).values())
        self.log(f"{stage}/loss", total, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=batch["image"].shape[0])
        for task in self.tasks:
            self.metrics[stage][task].update(outputs[task].float(), batch[task])
        return outputs

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, "test")  # the outputs: each sample's metric states are kept

    def _eval_epoch_end(self, stage: str) -> None:
        results = {}
        for task, metric in self.metrics[stage].items():
            values = metric.compute()
            metric.reset()
            results[task] = values
            for key, value in values.items():
                if isinstance(value, float):
                    self.log(f"{stage}/{task}/{key}", value, sync_dist=False)
        self.results[stage] = results

    def on_train_epoch_start(self):
        self._epoch_losses, self._epoch_batches = {}, 0

    def on_before_optimizer_step(self, optimizer) -> None:
        """Skips the step if the loss or any gradient is not finite: gradients set to None make
        the optimiser leave those parameters and their state alone. One host sync per step."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        checks = [torch.nn.utils.get_total_norm(grads)] if grads else []
        checks += [v.to(self.device) for v in self._step_losses.values()]
        finite = bool(torch.isfinite(torch.stack(checks)).all()) if checks else True
        step_losses, step_batches = self._step_losses, self._step_batches
        self._step_losses, self._step_batches = {}, 0
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            self._nonfinite_in_row = 0
            self._epoch_batches += step_batches
            for task, value in step_losses.items():
                self._epoch_losses[task] = self._epoch_losses.get(task, 0.0) + value
            return
        optimizer.zero_grad(set_to_none=True)
        # batch-norm statistics the skipped forward passes updated go back too
        for buffer, saved in zip(self.model.buffers(), self._stats_before):
            buffer.copy_(saved)
        self.skipped_steps += 1
        self._nonfinite_in_row += 1
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
        limit = self.hparams.max_nonfinite_steps
        if self._nonfinite_in_row >= limit and not self.trainer.should_stop:
            self.stop_reason = (f"the loss or its gradient was not finite for {limit} steps in a row "
                                f"(global step {self.global_step}); the weights are those of the last "
                                "finite step (lower model.lr, or raise model.max_nonfinite_steps)")
            self.trainer.should_stop = True

    # ------------------------------------------------------------- resuming
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What a bit-exact resume needs beyond weights and optimiser: the RNG states, the
        running epoch's loss sums (they feed DWA at the epoch's end) and the weighting's state
        outside its parameters and buffers (a stateful torchjd aggregator's, e.g. Nash-MTL's)."""
        checkpoint["rng_states"] = capture_rng_states()
        checkpoint["train_progress"] = {
            "epoch_losses": {t: v.detach().cpu() for t, v in self._epoch_losses.items()},
            "epoch_batches": self._epoch_batches, "skipped_steps": self.skipped_steps,
            "nonfinite_in_row": self._nonfinite_in_row}
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
        self._rng_to_restore = checkpoint.get("rng_states", {})
        progress = checkpoint.get("train_progress") or {}
        self._epoch_losses = dict(progress.get("epoch_losses", {}))
        self._epoch_batches = int(progress.get("epoch_batches", 0))
        self.skipped_steps = int(progress.get("skipped_steps", 0))
        self._nonfinite_in_row = int(progress.get("nonfinite_in_row", 0))
        # absent from checkpoints written before it was saved: the weighting starts as built
        self.weighting.load_state_from_checkpoint(checkpoint.get("weighting_state") or {})
        self.loss_scale.load_state(checkpoint.get("loss_scale") or {})

    def on_train_batch_start(self, batch, batch_idx):
        if self._step_batches == 0:  # a new optimiser step: what to restore if it is skipped
            self._stats_before = [b.clone() for b in self.model.buffers()]
        # Restored here, just before the first step after loading, so the sanity check and loader
        # start-up in between cannot move the RNG away from where the saved run had it; the
        # loaded loss sums join the batches on their device.
        if self._rng_to_restore is not None:
            if self._rng_to_restore:  # absent from checkpoints written before they were saved
                restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
            self._epoch_losses = {t: v.to(batch["image"].device) for t, v in self._epoch_losses.items()}

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """After an epoch's last batch, hands the weighting each task's average training loss (mean
        over devices). Done here, before validation, so the end-of-epoch checkpoint holds it."""
        if self.trainer.is_last_batch and self._epoch_batches:
            averages = {t: float(self.trainer.strategy.reduce(total / self._epoch_batches, reduce_op="mean"))
                        for t, total in self._epoch_losses.items()}
            self.weighting.on_epoch_end(averages)

    def start_heads_from_data(self, batch: dict[str, torch.Tensor]) -> None:
        """A new run's heads start where their tasks say the calibration batch's targets put them
        (``Task.initial_bias``: depth at its median valid depth); models without such heads are
        left as they are."""
        set_bias = getattr(self.model, "set_output_bias", None)
        if set_bias is None:
            return
        for task in self.tasks:
            start = get_task(task).initial_bias(batch[task]) if task in batch else None
            if start is not None:
                set_bias(task, start[0])
                rank_zero_info(start[1])

    def check_precision(self, trainer) -> None:
        """Gradient aggregation takes its own backward passes, which fp16 loss scaling cannot reach."""
        if not self.automatic_optimization and getattr(trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError(f"model.weighting {self.hparams.weighting!r} cannot use fp16 loss scaling "
                             f"(trainer.precision {trainer.precision}); use bf16-mixed or 32-true")

    def on_fit_start(self):
        self.check_precision(self.trainer)
        datamodule = self.trainer.datamodule
        fresh = self.trainer.ckpt_path is None  # a resumed run has its weights and divisors back
        if hasattr(datamodule, "calibration_batch") and (self.loss_scale.needs_measuring or fresh):
            batch = datamodule.calibration_batch()
            if fresh:
                self.start_heads_from_data(batch)
            if self.loss_scale.needs_measuring:
                losses = self.measure_initial_losses(batch, context=self.trainer.precision_plugin.forward_context)
                self.loss_scale.set_initial(losses)
                shown = ", ".join(f"{t} {v:.4g}" for t, v in self.loss_scale.as_dict().items())
                rank_zero_info(f"loss scaling: each task's loss is divided by its initial value ({shown})")
        if self.automatic_optimization:
            return
        if self.trainer.world_size > 1:
            # The ranks' Jacobians and heads' gradients are averaged in ``GradientAggregation.backward``;
            # no step calls ``backward()`` through the DDP wrapper, so its reducer must not expect one
            # (what ``DistributedDataParallel.no_sync`` does). Lightning 2.6's forward redirection
            # also clears the flag inside each manual-optimisation step, before DDP's post-forward
            # would prepare the reducer, and sets it again after the step; either suffices.
            ddp = self.trainer.strategy.model
            if hasattr(ddp, "require_backward_grad_sync"):
                ddp.require_backward_grad_sync = False

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

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
