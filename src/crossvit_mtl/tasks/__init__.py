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

#: The one metric per task that checkpoints and model selection monitor.
PRIMARY_METRIC: dict[str, str] = {
    "segmentation": "miou",
    "depth": "abs_err",
    "normal": "mean",
    "classification": "top1",
}

from crossvit_mtl.tasks.classification import ClassificationMetric, build_classification_loss  # noqa: E402
from crossvit_mtl.tasks.delta import DELTA_M_METRICS, delta_m  # noqa: E402
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
    "METRIC_DIRECTION", "PRIMARY_METRIC", "DELTA_M_METRICS", "delta_m", "build_loss",
    "SegmentationMetric", "DepthMetric", "NormalMetric", "ClassificationMetric",
    "build_segmentation_loss", "build_depth_loss", "build_normal_loss", "build_classification_loss",
]
