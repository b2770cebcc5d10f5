"""What a trainer must do, and must not, for a weighting that fills the gradients itself.

A gradient aggregator (``weighting.gradient``) differentiates every task's loss through the shared
network and combines the Jacobian; under DDP it averages the ranks' Jacobians itself, before
combining (the aggregators are not linear, so averaging their results would take another step).
DDP's own reduction must then stay out of those steps, and neither fp16 loss scaling nor
gradient accumulation, which act on the one total Lightning backpropagates, can reach them.
"""
from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.nn.parallel import DistributedDataParallel


def check_trainer(weighting: str, trainer: pl.Trainer) -> None:
    """One-line ``ValueError`` naming the setting the aggregator ``weighting`` cannot train with."""
    if getattr(trainer.precision_plugin, "scaler", None) is not None:
        raise ValueError(f"model.weighting {weighting!r} cannot use fp16 loss scaling "
                         f"(trainer.precision {trainer.precision}); use bf16-mixed or 32-true")
    if trainer.accumulate_grad_batches != 1:
        raise ValueError(f"model.weighting {weighting!r} aggregates the Jacobian of one batch: "
                         f"trainer.accumulate_grad_batches must be 1, got {trainer.accumulate_grad_batches}")


class AggregatorOwnsGradients(Callback):
    """For the gradient aggregator ``weighting``: refuses the settings it cannot train with, and
    keeps DDP's reducer out of its steps (what ``DistributedDataParallel.no_sync`` does: no step
    calls ``backward()`` through the DDP wrapper's graph, so the reducer must not expect one)."""

    def __init__(self, weighting: str):
        self.weighting = weighting

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            check_trainer(self.weighting, trainer)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(trainer.strategy.model, DistributedDataParallel):
            trainer.strategy.model.require_backward_grad_sync = False
