"""Semantic segmentation: confusion-matrix metric (Cityscapes convention) and losses on logits.

The thesis prototype reported a pooled one-hot IoU (= acc / (2 - acc)) as "mIoU". The metric
here reports the real class-mean IoU and keeps the pooled figure only as ``thesis_iou``.
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from crossvit_mtl.tasks.base import IGNORE_INDEX, Meta, MetricInfo, Storage, Task, check_class_targets


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """Element-wise num / den in float64, NaN where den == 0 (the quantity is undefined there)."""
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, math.nan))


class SegmentationMetric(Metric):
    """mIoU, pixel accuracy and friends from one summed confusion matrix.

    Keeping the whole data set's confusion matrix (rows = ground truth, columns = prediction)
    as a single ``sum`` state makes the result exact under distributed evaluation and equal to
    the official Cityscapes evaluation (``cityscapesscripts``): IoU_c = TP / (TP + FP + FN),
    NaN for a class with TP + FP + FN == 0, and the mean taken over the non-NaN classes.
    Pixels whose target is ``ignore_index`` are not counted at all.

    ``compute()`` returns python floats for scalars (``miou``, ``pixel_acc``, ``thesis_iou``)
    and float64 tensors for per-class values (``iou_per_class``, ``acc_per_class``; NaN for
    classes that cannot be scored), plus the int64 ``confusion`` matrix. With no valid pixel
    every scalar is NaN.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: Tensor

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class id in [0, {num_classes})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.int64),
                       dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """preds: (B, C, H, W) logits (argmax over C) or (B, H, W) integer labels; target (B, H, W)."""
        if preds.dim() == target.dim() + 1:
            if preds.shape[1] != self.num_classes:
                raise ValueError(f"logits have {preds.shape[1]} channels, expected {self.num_classes}")
            preds = preds.argmax(dim=1)
        elif preds.is_floating_point():
            raise ValueError("label predictions must be integers; pass (B, C, H, W) logits otherwise")
        if preds.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(preds.shape)} does not match target {tuple(target.shape)}")
        preds, target = preds.reshape(-1).long(), target.reshape(-1).long()
        keep = target != self.ignore_index
        preds, target = preds[keep], target[keep]
        for name, values in (("target", target), ("prediction", preds)):
            bad = (values < 0) | (values >= self.num_classes)
            if bad.any():
                raise ValueError(f"{name} contains value {values[bad][0].item()} outside [0, {self.num_classes})"
                                 + (f" and is not ignore_index={self.ignore_index}" if name == "target" else ""))
        counts = torch.bincount(target * self.num_classes + preds, minlength=self.num_classes ** 2)
        self.confmat += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict:
        cm = self.confmat
        tp = cm.diagonal()
        gt, pred = cm.sum(dim=1), cm.sum(dim=0)
        iou = _ratio(tp, gt + pred - tp)
        correct, total = tp.sum(), cm.sum()
        return {
            "miou": float(iou.nanmean()),
            "pixel_acc": float(_ratio(correct, total)),
            # The prototype's pooled figure: |P AND T| / |P OR T| over all one-hot maps at once,
            # i.e. correct / (2N - correct) = acc / (2 - acc). Not a class mean.
            "thesis_iou": float(_ratio(correct, 2 * total - correct)),
            "iou_per_class": iou,
            "acc_per_class": _ratio(tp, gt),
            "confusion": cm.clone(),
        }


class CrossEntropyLoss(nn.Module):
    """Pixel (or sample) cross-entropy on logits, ignoring ``ignore_index``.

    Unlike ``F.cross_entropy(reduction="mean")`` it returns 0 (graph intact) instead of NaN when a
    batch has no valid target, so a crop of pure void cannot poison training. With
    ``class_weights`` it is the weighted mean, as in ``F.cross_entropy``.
    """

    class_weights: Tensor | None

    def __init__(self, ignore_index: int = IGNORE_INDEX, class_weights=None):
        super().__init__()
        self.ignore_index = ignore_index
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ValueError(f"{self.class_weights.numel()} class weights for {logits.shape[1]} classes")
        check_class_targets(target, logits.shape[1], self.ignore_index)
        per_item = F.cross_entropy(logits, target, weight=self.class_weights,
                                   ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        if self.class_weights is None:
            denom = valid.sum().float()
        else:
            denom = (self.class_weights[torch.where(valid, target, 0)] * valid).sum()
        # Ignored items contribute 0 to the sum, so with no valid item this is 0 / tiny = 0.
        return per_item.sum() / denom.clamp_min(torch.finfo(torch.float32).tiny)


class DiceLoss(nn.Module):
    """Multi-class soft Dice on softmax(logits): 1 - mean over ALL classes of
    (2 sum(p y) + smooth) / (sum(p) + sum(y) + smooth).

    Sums run over the whole batch and all valid pixels (batch Dice, as MONAI's ``batch=True``),
    so small objects are not over-weighted image by image. Ignored pixels are removed from
    both numerator and denominator. Every class enters the mean; thanks to ``smooth`` a class
    absent from the target and not predicted scores ~1, while predicted mass on an absent class
    is penalised. With no valid pixel the loss is 0 (smooth > 0).
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, smooth: float = 1.0):
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        num_classes = logits.shape[1]
        check_class_targets(target, num_classes, self.ignore_index)
        valid = target != self.ignore_index
        # per class, sums over valid pixels without a one-hot map or masked copies of the
        # probabilities (the big temporaries of a per-pixel formula): a product with the mask for
        # sum(p), the probability of each pixel's own class added into its class for sum(p y).
        # The own-class probabilities are gathered from the flat map: a 1-D gather and index_add
        # have deterministic CUDA kernels (torch.use_deterministic_algorithms)
        probs = logits.softmax(dim=1).flatten(2)  # (N, C, P)
        n, _, pixels = probs.shape
        mask = valid.flatten(1).to(probs.dtype)  # (N, P)
        classes = torch.where(valid, target, 0).flatten(1)
        rows = torch.arange(n, device=probs.device).unsqueeze(1) * num_classes + classes
        flat = (rows * pixels + torch.arange(pixels, device=probs.device)).flatten()
        mass = torch.bmm(probs, mask.unsqueeze(-1)).sum((0, 2))
        own = probs.flatten().gather(0, flat) * mask.flatten()
        classes = classes.flatten()
        inter = probs.new_zeros(num_classes).index_add(0, classes, own)
        count = probs.new_zeros(num_classes).index_add_(0, classes, mask.flatten())
        dice = (2 * inter + self.smooth) / (mass + count + self.smooth).clamp_min(torch.finfo(torch.float32).tiny)
        return 1 - dice.mean()


class CEDiceLoss(nn.Module):
    """ce_weight * cross-entropy + dice_weight * Dice, the combination the thesis considered."""

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0, ignore_index: int = IGNORE_INDEX,
                 class_weights=None, smooth: float = 1.0):
        super().__init__()
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.ce = CrossEntropyLoss(ignore_index=ignore_index, class_weights=class_weights)
        self.dice = DiceLoss(ignore_index=ignore_index, smooth=smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()  # once for both (a bf16 map would be cast twice, forward and backward)
        return self.ce_weight * self.ce(logits, target) + self.dice_weight * self.dice(logits, target)


SEGMENTATION_LOSSES = {"ce": CrossEntropyLoss, "dice": DiceLoss, "ce_dice": CEDiceLoss}

#: mIoU, pixel accuracy and the thesis's pooled figure
CLASS_MAP_METRICS = {"miou": MetricInfo(True, "mIoU"), "pixel_acc": MetricInfo(True, "pixel acc")}


class SegmentationTask(Task):
    """Semantic segmentation: a class id per pixel, the data set's classes (``class_names``)."""

    name = "segmentation"
    storage = Storage("labels.npy", np.uint8, ())
    losses = SEGMENTATION_LOSSES
    default_loss = "ce"
    metrics = {**CLASS_MAP_METRICS, "thesis_iou": MetricInfo(True, "thesis pooled IoU")}
    primary_metric = "miou"
    # thesis_iou is a function of pixel accuracy: Delta-m would count accuracy twice
    delta_metrics: ClassVar[tuple[str, ...]] = ("miou", "pixel_acc")
    single_delta_metric = "miou"

    def class_names(self, meta: Meta) -> tuple[str, ...]:
        return tuple(meta.get("class_names") or ())

    def bad_values(self, array: np.ndarray, meta: Meta) -> tuple[np.ndarray, str]:
        bad, what = super().bad_values(array, meta)
        return bad, f"label {what}"

    def build_metric(self, meta: Meta, stage: str = "test") -> Metric:
        return SegmentationMetric(self.channels(meta))

    def write_prediction(self, stem, output, image, meta, out_dir):
        """Class ids (``_labels.png``), the palette picture (``_seg.png``) and it over the image."""
        from PIL import Image

        labels = output.float().argmax(0).numpy().astype(np.uint8)
        color = self.colorize(labels, meta)
        Image.fromarray(labels).save(out_dir / f"{stem}_labels.png")
        Image.fromarray(color).save(out_dir / f"{stem}_seg.png")
        overlay = (0.5 * image.astype(np.float32) + 0.5 * color.astype(np.float32)).round().astype(np.uint8)
        Image.fromarray(overlay).save(out_dir / f"{stem}_overlay.png")
        return {}
