"""Task heads' losses and metrics, and the tables the engine needs to rank results (``registry``).

Each task module owns its metric (a torchmetrics ``Metric`` with summed states) and its losses
(on logits / raw outputs, computed in float32). ``build_loss(task, name)`` and
``build_metric(task, channels)`` are the entry points.
"""
from __future__ import annotations

from torch import nn
from torchmetrics import Metric

from crossvit_mtl.tasks.classification import ClassificationMetric, build_classification_loss
from crossvit_mtl.tasks.delta import DELTA_M_CONVENTIONS, DELTA_M_METRICS, delta_m
from crossvit_mtl.tasks.depth import DepthMetric, build_depth_loss
from crossvit_mtl.tasks.normal import NormalMetric, build_normal_loss
from crossvit_mtl.tasks.registry import METRIC_DIRECTION, METRIC_LABELS, PRIMARY_METRIC
from crossvit_mtl.tasks.segmentation import SegmentationMetric, build_segmentation_loss

_LOSS_BUILDERS = {
    "segmentation": build_segmentation_loss,
    "depth": build_depth_loss,
    "normal": build_normal_loss,
    "classification": build_classification_loss,
}


def build_loss(task: str, name: str | None = None, **kwargs) -> nn.Module:
    """Loss for ``task``; ``name=None`` picks the task's default (ce, l1, cosine, ce)."""
    if task not in _LOSS_BUILDERS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(_LOSS_BUILDERS)}")
    builder = _LOSS_BUILDERS[task]
    return builder(**kwargs) if name is None else builder(name, **kwargs)


def build_metric(task: str, channels: int) -> Metric:
    """The summed-state metric of ``task``; ``channels`` is its class count where it has classes."""
    if task == "segmentation":
        return SegmentationMetric(channels)
    if task == "depth":
        return DepthMetric()
    if task == "normal":
        return NormalMetric()
    if task == "classification":
        return ClassificationMetric(channels)
    raise ValueError(f"unknown task {task!r}; choose from {sorted(_LOSS_BUILDERS)}")


__all__ = [
    "METRIC_DIRECTION", "METRIC_LABELS", "PRIMARY_METRIC", "DELTA_M_CONVENTIONS", "DELTA_M_METRICS", "delta_m",
    "build_loss", "build_metric",
    "SegmentationMetric", "DepthMetric", "NormalMetric", "ClassificationMetric",
    "build_segmentation_loss", "build_depth_loss", "build_normal_loss", "build_classification_loss",
]
