"""The tasks, one module each, and the registry everything else loops over.

``get_task(name)`` returns the :class:`~crossvit_mtl.tasks.base.Task` that holds everything the
project knows of a task (data handling, output constraint, losses, metric, pictures). The built-in
tasks are registered here; ``register_task`` adds one from any module, and a package can ship tasks
as plug-ins under the ``crossvit_mtl.tasks`` entry-point group (each entry a ``Task`` subclass or
instance), loaded the first time an unknown name is asked for.
"""
from __future__ import annotations

from crossvit_mtl.tasks.base import IGNORE_INDEX, MetricInfo, Storage, TargetError, Task
from crossvit_mtl.tasks.classification import ClassificationMetric, ClassificationTask
from crossvit_mtl.tasks.delta import DELTA_M_CONVENTIONS, DELTA_M_SETS, delta_m
from crossvit_mtl.tasks.depth import DepthMetric, DepthTask
from crossvit_mtl.tasks.edge import EdgeMetric, EdgeTask
from crossvit_mtl.tasks.human_parts import HumanPartsTask
from crossvit_mtl.tasks.normal import NormalMetric, NormalTask
from crossvit_mtl.tasks.registry import ENTRY_POINT_GROUP, get_task, is_task, register_task, task_names, unregister_task
from crossvit_mtl.tasks.saliency import SaliencyMetric, SaliencyTask
from crossvit_mtl.tasks.segmentation import SegmentationMetric, SegmentationTask

__all__ = [
    "DELTA_M_CONVENTIONS", "DELTA_M_SETS", "ENTRY_POINT_GROUP", "IGNORE_INDEX", "ClassificationMetric",
    "ClassificationTask", "DepthMetric", "DepthTask", "EdgeMetric", "EdgeTask", "HumanPartsTask", "MetricInfo",
    "NormalMetric", "NormalTask", "SaliencyMetric", "SaliencyTask", "SegmentationMetric", "SegmentationTask",
    "Storage", "TargetError", "Task", "delta_m", "get_task", "is_task", "register_task", "task_names",
    "unregister_task",
]
