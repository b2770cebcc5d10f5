"""Each test sample's share of every task's summed metric states, saved beside ``metrics_test.json``.

A test figure computed on N samples carries the sampling noise of those N. Every metric of the
project keeps summed states (a confusion matrix, sums of errors, a histogram of angles), so the
states of any multiset of test samples are the sum of the samples' own states, and a bootstrap
over test samples (``crossvit_mtl.comparison``) recomputes every metric exactly from them, without
the network. The file's format is the comparison's (``comparison.SAMPLES_FILE``).
"""
from __future__ import annotations

import copy
import zlib
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import Metric

from crossvit_mtl.comparison import SAMPLES_FILE, write_sample_states


def per_sample_states(metric: Metric, outputs: torch.Tensor, targets: torch.Tensor) -> list[dict[str, np.ndarray]]:
    """``metric`` updated on each sample of a batch alone: one dict of tensor states per sample."""
    rows = []
    for i in range(outputs.shape[0]):
        metric.reset()
        metric.update(outputs[i:i + 1], targets[i:i + 1])
        rows.append({n: v.detach().cpu().numpy().copy() for n, v in metric.metric_state.items()
                     if isinstance(v, torch.Tensor)})
    metric.reset()
    return rows


def adds_up(rows: list[dict[str, np.ndarray]], metric: Metric) -> bool:
    """Whether the samples' states sum to the states ``metric`` accumulated over whole batches:
    every state a tensor and summed (not a list, a mean or a maximum)."""
    state = metric.metric_state
    if not rows or any(not isinstance(v, torch.Tensor) for v in state.values()) or set(rows[0]) != set(state):
        return False
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            return False
        total, whole = np.sum([row[name] for row in rows], axis=0), value.detach().cpu().numpy()
        if total.shape != whole.shape or not np.allclose(total, whole, rtol=1e-9, atol=0):
            return False
    return True


class SampleStatistics(pl.Callback):
    """During ``test``, each sample's metric states per task, written to ``SAMPLES_FILE`` in the run
    folder at the end, for the tasks whose states add up to the whole test's (one process only:
    under DDP each rank sees part of the split, and no file is written)."""

    def __init__(self) -> None:
        self._probes: dict[str, Metric] = {}
        self._rows: dict[str, list[dict[str, np.ndarray]]] = {}
        self._digests: dict[str, list[int]] = {}

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._probes = {task: copy.deepcopy(metric) for task, metric in pl_module.metrics["test"].items()}
        self._rows = {task: [] for task in self._probes}
        self._digests = {task: [] for task in self._probes}
        Path(trainer.default_root_dir, SAMPLES_FILE).unlink(missing_ok=True)  # never another test's

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.world_size > 1 or not isinstance(outputs, dict):
            return
        for task, probe in self._probes.items():
            # the batch's targets were widened in place by the step, as the metric took them
            self._rows[task] += per_sample_states(probe, outputs[task].float(), batch[task])
            # which samples these were: comparisons resample runs jointly only over the same test set
            self._digests[task] += [zlib.crc32(t.cpu().numpy().tobytes()) for t in batch[task]]

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        """Before the module's own hook computes and resets the metrics: their states are whole."""
        if trainer.world_size > 1 or not trainer.is_global_zero:
            return
        states, left_out = {}, []
        for task, rows in self._rows.items():
            if adds_up(rows, pl_module.metrics["test"][task]):
                states[task] = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
            else:
                left_out.append(task)
        if left_out:
            rank_zero_info(f"{SAMPLES_FILE}: no per-sample states for {', '.join(left_out)} (its metric's states "
                           "are not sums over samples); a comparison leaves its test-set noise out")
        if states:
            write_sample_states(Path(trainer.default_root_dir) / SAMPLES_FILE, pl_module.hparams.dataset_meta, states,
                                {task: np.array(self._digests[task], dtype=np.uint32) for task in states})
        self._rows, self._digests = {}, {}
