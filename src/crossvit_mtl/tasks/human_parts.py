"""Human parts: PASCAL-Part's person parts grouped into six, as every PASCAL-Context multi-task
paper scores them (MTI-Net's ``evaluation/eval_human_parts.py``, ATRC, InvPT).

Seven classes: background and six parts. An image without a person is not annotated at all (every
pixel 255), so it is left out of the loss and the metric instead of being scored as background, as
the reference evaluators skip such images. mIoU comes from one confusion matrix summed over the
data set (true positives, false positives and false negatives per part, as MTI-Net counts them); a
part never seen nor predicted is left out of the mean rather than counted 0.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from crossvit_mtl.tasks.base import IGNORE_INDEX, Meta, Storage, default_palette
from crossvit_mtl.tasks.segmentation import SEGMENTATION_LOSSES, SegmentationMetric, SegmentationTask

PART_NAMES = ("background", "head", "torso", "upper arm", "lower arm", "upper leg", "lower leg")


class HumanPartsTask(SegmentationTask):
    """A part id per pixel (0 background, 1-6 the parts), 255 where not annotated."""

    name = "human_parts"
    storage = Storage("parts.npy", np.uint8, ())
    losses = SEGMENTATION_LOSSES
    metrics = {key: info for key, info in SegmentationTask.metrics.items() if key != "thesis_iou"}
    delta_metrics = ("miou",)

    def class_names(self, meta: Meta) -> tuple[str, ...]:
        return PART_NAMES

    def zoom(self, value: Tensor, scale: float, meta: Meta) -> Tensor:
        """A crop that shows no part of a person says nothing of parts: not annotated at all, as an
        image without a person is (ATRC's and InvPT's ``AddIgnoreRegions`` after their crop)."""
        has_part = ((value > 0) & (value != IGNORE_INDEX)).any()
        return value if has_part else torch.full_like(value, IGNORE_INDEX)

    def palette(self, meta: Meta) -> list[tuple[int, int, int]]:
        return default_palette(len(PART_NAMES))

    def build_metric(self, meta: Meta, stage: str = "test") -> Metric:
        return PartsMetric(len(PART_NAMES))

    def write_prediction(self, stem, output, image, meta, out_dir):
        from PIL import Image

        parts = output.float().argmax(0).numpy().astype(np.uint8)
        Image.fromarray(parts).save(out_dir / f"{stem}_parts.png")
        Image.fromarray(self.colorize(parts, meta)).save(out_dir / f"{stem}_human_parts.png")
        return {}


class PartsMetric(SegmentationMetric):
    """The segmentation metric without the thesis's pooled figure, which has no meaning for parts."""

    def compute(self) -> dict:
        values = super().compute()
        values.pop("thesis_iou")
        return values
