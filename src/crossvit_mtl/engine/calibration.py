"""Before the first step of a fresh fit: heads started where the data puts them, and each task's
loss measured on the untrained network to divide it by (``model.loss_scaling: initial``).

Both read the data module's calibration batch (the same training samples every time, augmented
as in training); a resumed run has its weights and divisors back from the checkpoint and measures
nothing.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from crossvit_mtl.engine.datamodule import DenseDataModule
from crossvit_mtl.models.interface import MultiTaskNetwork
from crossvit_mtl.tasks import get_task

if TYPE_CHECKING:
    from crossvit_mtl.engine.module import DenseTaskModule


@torch.no_grad()
def measure_initial_losses(module: DenseTaskModule, batch: dict[str, torch.Tensor], chunk: int = 16,
                           context: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> dict[str, float]:
    """Each task's mean loss for the network as it is on ``batch``, in training mode (batch
    statistics, as the first steps see them) under ``context`` (the run's precision), in chunks
    of ``chunk`` samples whatever the run's batch size or number of processes, so every rank
    and a single process measure the same values; weights, batch-norm statistics and the
    random state are left as they were."""
    was_training, saved = module.training, [b.clone() for b in module.model.buffers()]
    count = batch["image"].shape[0]
    sums = dict.fromkeys(module.tasks, 0.0)
    module.train()
    with torch.random.fork_rng(devices=[module.device] if module.device.type == "cuda" else []):
        for start in range(0, count, chunk):
            part = module.widen({k: v[start:start + chunk].to(module.device) for k, v in batch.items()})
            with context():
                outputs = module(part["image"])
            for t in module.tasks:
                sums[t] += float(module.criteria[t](outputs[t], part[t])) * part["image"].shape[0]
    for buffer, value in zip(module.model.buffers(), saved):
        buffer.copy_(value)
    module.train(was_training)
    return {t: total / count for t, total in sums.items()}


def start_heads_from_data(module: DenseTaskModule, batch: dict[str, torch.Tensor]) -> None:
    """A new run's heads start where their tasks say the batch's targets put them
    (``Task.initial_bias``: depth at its median valid depth); networks without heads to start
    (``models.interface.MultiTaskNetwork``) are left as they are."""
    if not isinstance(module.model, MultiTaskNetwork):
        return
    for task in module.tasks:
        start = get_task(task).initial_bias(batch[task]) if task in batch else None
        if start is not None:
            module.model.set_output_bias(task, start[0])
            rank_zero_info(start[1])


class StartFromData(Callback):
    """At the start of a fresh fit, starts the heads from the data; whenever the loss scales are
    still to be measured (a fresh fit with ``loss_scaling: initial``), measures and prints them.
    Reads ``DenseDataModule.calibration_batch``; fitting without that data module, it does nothing."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = cast("DenseTaskModule", pl_module)
        datamodule = getattr(trainer, "datamodule", None)  # set by Lightning when fitting with one; not declared
        fresh = trainer.ckpt_path is None  # a resumed run has its weights and divisors back
        if not isinstance(datamodule, DenseDataModule) or not (fresh or module.loss_scale.needs_measuring):
            return
        batch = datamodule.calibration_batch()
        if fresh:
            start_heads_from_data(module, batch)
        if module.loss_scale.needs_measuring:
            losses = measure_initial_losses(module, batch, context=trainer.precision_plugin.forward_context)
            module.loss_scale.set_initial(losses)
            shown = ", ".join(f"{t} {v:.4g}" for t, v in module.loss_scale.as_dict().items())
            rank_zero_info(f"loss scaling: each task's loss is divided by its initial value ({shown})")
