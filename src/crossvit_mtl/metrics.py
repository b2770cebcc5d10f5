"""The task metrics under one short import path: ``from crossvit_mtl.metrics import SegmentationMetric``."""
from crossvit_mtl.tasks.classification import ClassificationMetric
from crossvit_mtl.tasks.depth import DepthMetric
from crossvit_mtl.tasks.edge import EdgeMetric
from crossvit_mtl.tasks.human_parts import PartsMetric
from crossvit_mtl.tasks.normal import NormalMetric
from crossvit_mtl.tasks.saliency import SaliencyMetric
from crossvit_mtl.tasks.segmentation import SegmentationMetric

__all__ = ["SegmentationMetric", "PartsMetric", "SaliencyMetric", "DepthMetric", "NormalMetric", "EdgeMetric",
           "ClassificationMetric"]
