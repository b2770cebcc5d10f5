"""Image-level classification: top-1 / top-5 accuracy and the cross-entropy loss."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_stat_scores

from crossvit_mtl.data.common import IGNORE_INDEX
from crossvit_mtl.tasks.segmentation import CrossEntropyLoss


class ClassificationMetric(Metric):
    """Top-1 (and top-5 when num_classes > 5) accuracy over all samples seen.

    Counts come from torchmetrics' ``multiclass_stat_scores(average="micro")``, so the figures
    equal ``MulticlassAccuracy(average="micro", top_k=k)``; they are kept as our own summed
    states so that, like the other task metrics, an empty data set gives NaN rather than 0.
    ``compute()`` returns python floats.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.top_k = (1, 5) if num_classes > 5 else (1,)
        self.add_state("correct", torch.zeros(len(self.top_k), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """logits: (B, num_classes); target: (B,) class ids (``ignore_index`` skipped)."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected (B, {self.num_classes}) logits, got {tuple(logits.shape)}")
        logits = logits.detach().float()
        for i, k in enumerate(self.top_k):
            # stat scores: [tp, fp, tn, fn, support]
            stats = multiclass_stat_scores(logits, target, self.num_classes, average="micro",
                                           top_k=k, ignore_index=self.ignore_index)
            self.correct[i] += stats[0]
        self.total += stats[4]

    def compute(self) -> dict:
        n = self.total.item()
        return {f"top{k}": (c / n if n else math.nan) for k, c in zip(self.top_k, self.correct.tolist())}


CLASSIFICATION_LOSSES = {"ce": CrossEntropyLoss}


def build_classification_loss(name: str = "ce", **kwargs) -> nn.Module:
    """Classification loss by name: "ce" (same module as the segmentation one, on (B, C) logits)."""
    if name not in CLASSIFICATION_LOSSES:
        raise ValueError(f"unknown classification loss {name!r}; choose from {sorted(CLASSIFICATION_LOSSES)}")
    return CLASSIFICATION_LOSSES[name](**kwargs)
