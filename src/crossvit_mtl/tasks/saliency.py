"""Saliency: which pixels belong to the salient object, as PASCAL-Context's distilled maps give it.

The head predicts two classes (background, salient) and trains with the papers' balanced
cross-entropy (ATRC, InvPT: the classes weighted by each other's share of the batch's annotated
pixels). Two figures, each as its reference code computes it:

* ``maxF`` (ATRC, InvPT, TaskPrompter): precision and recall from true-positive, predicted and
  actual positive counts summed over the data set at thresholds 0.05, 0.10 ... 0.95 on the
  probability of the salient class (``>= t``), F with beta^2 = 0.3, the best threshold's F.
  InvPT and TaskPrompter save softmax probabilities as PNGs and their evaluator applies a sigmoid to
  those probabilities before thresholding, so their thresholds 0.50 ... 0.70 act at probabilities
  0, 0.20, 0.41, 0.62 and 0.85 and every threshold from 0.75 up selects nothing: a coarser grid,
  never above the figure computed here on the same predictions (docs/multi-task.md).
* ``miou`` (MTI-Net, whose Delta-m scores saliency by it): the IoU of the thresholded map with the
  ground truth per image (1 where both are empty), averaged over images, at 15 thresholds from 0.2 to
  0.9 (``> t``); the best threshold's mean. Kept as summed per-threshold states, exact under DDP.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from crossvit_mtl.tasks.base import IGNORE_INDEX, Meta, MetricInfo, Storage, TargetError, Task, colorize_scalar
from crossvit_mtl.tasks.segmentation import CrossEntropyLoss

#: thresholds of the maxF figure (ATRC / InvPT: 0.05 steps) and of the mIoU figure (MTI-Net)
MAXF_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
MIOU_THRESHOLDS = tuple(float(t) for t in np.linspace(0.2, 0.9, 15))
BETA_SQUARED = 0.3


def check_binary(target: Tensor, what: str) -> None:
    """Refuse a binary target holding anything but 0, 1 and the ignore index, naming a value."""
    bad = (target != 0) & (target != 1) & (target != IGNORE_INDEX)
    if bad.any():
        raise TargetError(f"a batch's {what} targets hold {float(target[bad][0]):g}; a {what} map holds 0, 1 and "
                          f"{IGNORE_INDEX} (not annotated): `crossvit-mtl data check` lists the files")


class BalancedCrossEntropyLoss(nn.Module):
    """Two-class cross-entropy with the classes weighted by each other's share of the batch's
    annotated pixels (salient pixels by the background's share), so the rarer class is not drowned;
    the weighted sum is divided by the number of annotated pixels (ATRC / InvPT's ``balanced`` CE)."""

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.ce = CrossEntropyLoss(ignore_index=ignore_index)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        check_binary(target, "saliency")
        valid = target != self.ignore_index
        count = valid.sum().clamp_min(1)
        salient_share = ((target == 1) & valid).sum() / count
        weights = torch.stack([salient_share, 1 - salient_share]).float()
        per_pixel = nn.functional.cross_entropy(logits.float(), target, weight=weights,
                                                ignore_index=self.ignore_index, reduction="none")
        return per_pixel.sum() / count


def counts_above(prob: Tensor, mask: Tensor, thresholds: Tensor, strict: bool) -> Tensor:
    """Per image (row), how many pixels inside ``mask`` have ``prob >= t`` (``> t`` when ``strict``)
    for each threshold: one histogram over the threshold bins per image, not a comparison per
    threshold (memory of one map, not T maps)."""
    images, count = prob.shape[0], len(thresholds)
    bins = torch.bucketize(prob, thresholds, right=not strict)  # k: the first k thresholds are passed
    offsets = torch.arange(images, device=prob.device)[:, None] * (count + 1)
    hist = torch.bincount((bins + offsets)[mask], minlength=images * (count + 1)).view(images, count + 1)
    cumulative = hist.cumsum(1)
    return cumulative[:, -1:] - cumulative[:, :count]


class SaliencyMetric(Metric):
    """``maxF`` (beta^2 = 0.3, data-set counts) and ``miou`` (per-image IoU, MTI-Net); see the module.

    ``compute()`` returns python floats, NaN when no annotated pixel (maxF) or image (mIoU) was seen.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    maxf_thresholds: Tensor
    miou_thresholds: Tensor
    true_pos: Tensor
    pred_pos: Tensor
    actual_pos: Tensor
    iou_sum: Tensor
    images: Tensor

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("maxf_thresholds", torch.tensor(MAXF_THRESHOLDS, dtype=torch.float64), persistent=False)
        self.register_buffer("miou_thresholds", torch.tensor(MIOU_THRESHOLDS, dtype=torch.float64), persistent=False)
        for name in ("true_pos", "pred_pos", "actual_pos"):
            self.add_state(name, torch.zeros(len(MAXF_THRESHOLDS), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("iou_sum", torch.zeros(len(MIOU_THRESHOLDS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """logits: (B, 2, H, W); target: (B, H, W) with 0, 1 and the ignore index."""
        if logits.dim() != 4 or logits.shape[1] != 2 or logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"expected (B, 2, H, W) logits and (B, H, W) targets, got {tuple(logits.shape)} "
                             f"and {tuple(target.shape)}")
        check_binary(target, "saliency")
        prob = logits.detach().double().softmax(1)[:, 1].flatten(1).contiguous()
        target = target.flatten(1)
        valid = target != IGNORE_INDEX
        salient = (target == 1) & valid
        predicted = counts_above(prob, valid, self.maxf_thresholds, strict=False)
        self.true_pos += counts_above(prob, salient, self.maxf_thresholds, strict=False).sum(0)
        self.pred_pos += predicted.sum(0)
        self.actual_pos += salient.sum()
        inter = counts_above(prob, salient, self.miou_thresholds, strict=True).double()
        union = counts_above(prob, valid, self.miou_thresholds, strict=True) + salient.sum(1, keepdim=True) - inter
        self.iou_sum += torch.where(union > 0, inter / union.clamp_min(1), 1.0).sum(0)
        self.images += target.shape[0]

    def compute(self) -> dict:
        precision = self.true_pos.double() / self.pred_pos.double()
        recall = self.true_pos.double() / self.actual_pos.double()
        f = (1 + BETA_SQUARED) * precision * recall / (BETA_SQUARED * precision + recall)
        f = torch.nan_to_num(f, nan=0.0)  # a threshold nothing passes scores 0, as the reference's
        annotated = int(self.actual_pos[0]) > 0 or int(self.pred_pos[0]) > 0
        images = int(self.images)
        return {"maxf": float(f.max()) if annotated else math.nan,
                "miou": float(self.iou_sum.max()) / images if images else math.nan}


class SaliencyTask(Task):
    """Saliency: 0 (background) or 1 (salient) per pixel, 255 where not annotated."""

    name = "saliency"
    storage = Storage("saliency.npy", np.uint8, ())
    out_channels = 2
    losses = {"balanced_ce": BalancedCrossEntropyLoss, "ce": CrossEntropyLoss}
    default_loss = "balanced_ce"
    metrics = {"maxf": MetricInfo(True, "maxF"), "miou": MetricInfo(True, "mIoU")}
    primary_metric = "maxf"
    delta_metrics = ("maxf",)
    single_delta_metric = "miou"

    def bad_values(self, array: np.ndarray, meta: Meta) -> tuple[np.ndarray, str]:
        bad = (array != 0) & (array != 1) & (array != IGNORE_INDEX)
        return bad.reshape(len(array), -1).any(1), f"values other than 0, 1 and {IGNORE_INDEX}"

    def build_metric(self, meta: Meta, stage: str = "test") -> Metric:
        return SaliencyMetric()

    def prediction(self, output: Tensor) -> Tensor:
        """The salient class's probability."""
        return output.float().softmax(0)[1]

    def colorize(self, value: np.ndarray, meta: Meta, reference: np.ndarray | None = None) -> np.ndarray:
        value = np.asarray(value, dtype=np.float32)
        valid = value != IGNORE_INDEX
        return colorize_scalar(np.where(valid, value, 0), 1.0, cmap="gray", valid=valid)

    def write_prediction(self, stem, output, image, meta, out_dir):
        """The salient class's probability as an 8-bit grey PNG (value / 255), as the papers save it."""
        from PIL import Image

        prob = self.prediction(output).numpy()
        Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(out_dir / f"{stem}_saliency.png")
        return {}
