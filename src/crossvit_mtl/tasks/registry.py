"""What the engine, comparisons and reports know of each task's metrics: which way is better, how
each is named in tables, and the one metric per task that selects checkpoints. One table each."""
from __future__ import annotations

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
