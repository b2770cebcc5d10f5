"""Task heads' losses and metrics, and the tables the engine needs to rank results.

Each task module owns its metric (a torchmetrics ``Metric`` with summed states) and its losses
(on logits / raw outputs, computed in float32). ``build_loss(task, name)`` is the one entry point.
"""
from __future__ import annotations

from torch import nn

#: task -> scalar metric key (as returned by the task metric's ``compute()``) -> higher_is_better.
METRIC_DIRECTION: dict[str, dict[str, bool]] = {
    "segmentation": {"miou": True, "pixel_acc": True, "thesis_iou": True},
    "depth": {"abs_err": False, "rel_err": False, "rmse": False, "log_rmse": False,
              "delta1": True, "delta2": True, "delta3": True},
    "normal": {"mean": False, "median": False, "within_11.25": True, "within_22.5": True, "within_30": True},
    "classification": {"top1": True, "top5": True},
}

#: How tables and reports name each metric.
METRIC_LABELS = {
    "miou": "mIoU", "pixel_acc": "pixel acc", "thesis_iou": "thesis pooled IoU",
    "abs_err": "abs err", "rel_err": "rel err", "rmse": "RMSE", "log_rmse": "log RMSE",
    "delta1": "delta<1.25", "delta2": "delta<1.25^2", "delta3": "delta<1.25^3",
    "mean": "mean angle (deg)", "median": "median angle (deg)", "within_11.25": "<11.25 deg",
    "within_22.5": "<22.5 deg", "within_30": "<30 deg", "top1": "top-1 acc", "top5": "top-5 acc",
}

#: The one metric per task that checkpoints and model selection monitor.
PRIMARY_METRIC: dict[str, str] = {
    "segmentation": "miou",
    "depth": "abs_err",
    "normal": "mean",
    "classification": "top1",
}

from crossvit_mtl.tasks.classification import ClassificationMetric, build_classification_loss  # noqa: E402
from crossvit_mtl.tasks.delta import DELTA_M_CONVENTIONS, DELTA_M_METRICS, delta_m  # noqa: E402
from crossvit_mtl.tasks.depth import DepthMetric, build_depth_loss  # noqa: E402
from crossvit_mtl.tasks.normal import NormalMetric, build_normal_loss  # noqa: E402
from crossvit_mtl.tasks.segmentation import SegmentationMetric, build_segmentation_loss  # noqa: E402

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


__all__ = [
    "METRIC_DIRECTION", "METRIC_LABELS", "PRIMARY_METRIC", "DELTA_M_CONVENTIONS", "DELTA_M_METRICS", "delta_m", "build_loss",
    "SegmentationMetric", "DepthMetric", "NormalMetric", "ClassificationMetric",
    "build_segmentation_loss", "build_depth_loss", "build_normal_loss", "build_classification_loss",
]
