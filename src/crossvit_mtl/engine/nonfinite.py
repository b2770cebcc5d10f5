"""A step whose loss or gradient is not finite is skipped, and too many in a row stop the run.

One bad batch (a corrupt label, an overflow in low precision) must not write NaN into the
weights, the optimiser's moments or the batch-norm statistics; a run that keeps producing them is
stopped while its last checkpoint still holds finite weights.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

if TYPE_CHECKING:
    from crossvit_mtl.engine.module import DenseTaskModule


class SkipNonFiniteSteps(Callback):
    """Skips an optimiser step whose loss (every batch of it, when gradients are accumulated) or
    gradient norm is not finite: gradients set to None make the optimiser leave those parameters
    and their state alone, and every buffer of the module the step's forward passes changed
    (batch-norm statistics) is put back. The step still counts (the schedule moves on) and is
    logged in ``train/skipped_steps``; after ``max_in_row`` skipped in a row the run stops with
    ``pl_module.stop_reason`` saying why. One host sync per step; under DDP the ranks agree.

    Its counts are saved in checkpoints (``state_dict``) and restored on resume.
    """

    def __init__(self, max_in_row: int):
        if max_in_row < 1:
            raise ValueError(f"max_nonfinite_steps must be >= 1, got {max_in_row}")
        self.max_in_row = max_in_row
        self.skipped = 0
        self.in_row = 0
        self._losses: list[torch.Tensor] = []       # this step's losses until it is known finite
        self._buffers: list[torch.Tensor] = []      # the module's buffers as the step found them

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._losses:  # the first batch of an optimiser step: what to restore if it is skipped
            self._buffers = [b.clone() for b in pl_module.buffers()]

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self._losses.append(loss.detach())

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        checks = [torch.nn.utils.get_total_norm(grads)] if grads else []
        checks += [v.to(pl_module.device).float().reshape(()) for v in self._losses]
        finite = bool(torch.isfinite(torch.stack(checks)).all()) if checks else True
        self._losses = []
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            self.in_row = 0
            return
        optimizer.zero_grad(set_to_none=True)
        for buffer, saved in zip(pl_module.buffers(), self._buffers):
            buffer.copy_(saved)
        self.skipped += 1
        self.in_row += 1
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
        if self.in_row >= self.max_in_row and not trainer.should_stop:
            cast("DenseTaskModule", pl_module).stop_reason = (
                f"the loss or its gradient was not finite for {self.max_in_row} steps in a row "
                f"(global step {trainer.global_step}); the weights are those of the last finite step "
                "(lower model.lr, or raise model.max_nonfinite_steps)")
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped, "nonfinite_in_row": self.in_row}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before this callback kept its counts saved them with the module's."""
        self.load_state_dict(checkpoint.get("train_progress") or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped_steps", 0))
        self.in_row = int(state_dict.get("nonfinite_in_row", 0))
