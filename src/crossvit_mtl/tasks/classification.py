"""Image-level classification: top-1 / top-5 accuracy and the cross-entropy loss."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_stat_scores

from crossvit_mtl.tasks.base import IGNORE_INDEX, Meta, MetricInfo, Storage, Task
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


class ClassificationTask(Task):
    """An image-level class (``scene_classes`` of the data set): one id per image, ignored where a
    crop cannot know it."""

    name = "classification"
    kind = "image"
    storage = Storage("classes.npy", np.int64, None)
    losses = CLASSIFICATION_LOSSES
    default_loss = "ce"
    metrics = {"top1": MetricInfo(True, "top-1 acc"), "top5": MetricInfo(True, "top-5 acc")}
    primary_metric = "top1"
    delta_metrics = ("top1",)
    single_delta_metric = "top1"

    def class_names(self, meta: Meta) -> tuple[str, ...]:
        return tuple(meta.get("scene_classes") or ())

    def zoom(self, value: Tensor, scale: float, meta: Meta) -> Tensor:
        """A class that describes the whole view (``crop_keeps_class`` false: the synthetic
        scenes' road layout) is not known for a zoomed-in crop, which may cut away what defines
        it: the crop marks it not annotated, so the loss skips it while the dense tasks learn."""
        return value if meta.get("crop_keeps_class", True) else torch.full_like(value, IGNORE_INDEX)

    def flip(self, value: Tensor) -> Tensor:
        return value

    def bad_values(self, array: np.ndarray, meta: Meta) -> tuple[np.ndarray, str]:
        classes = len(self.class_names(meta))
        return ((array < 0) | (array >= classes)) & (array != IGNORE_INDEX), \
            f"classes outside 0..{classes - 1} and {IGNORE_INDEX}"

    def build_metric(self, meta: Meta, stage: str = "test") -> Metric:
        return ClassificationMetric(self.channels(meta))

    def write_prediction(self, stem, output, image, meta, out_dir):
        """The class and its softmax probability, for ``predictions.json``."""
        probs = output.float().softmax(-1)
        k = int(probs.argmax())
        names = self.class_names(meta)
        return {"class": names[k] if k < len(names) else k, "confidence": round(float(probs[k]), 4)}
