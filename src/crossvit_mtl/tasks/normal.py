"""Surface normals: angular-error metric with an exact-to-0.01-degree median, the cosine and L1 losses.
An all-zero target vector marks an invalid pixel."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from crossvit_mtl.functional import unit_vectors
from crossvit_mtl.tasks.base import Meta, MetricInfo, Storage, Task

#: Thresholds (degrees) of the "within" fractions, the NYUv2 protocol of MTAN/LibMTL.
NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)


def angular_error_deg(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel angle (degrees, float64) between pred and target, and the validity mask (B, H, W).

    Both are normalised first, so the network's raw output and resized (non-unit) targets work.
    """
    valid = target.abs().sum(dim=1) > 0
    p = unit_vectors(pred.detach().double())
    t = unit_vectors(target.detach().double())
    cos = (p * t).sum(dim=1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos)), valid


class NormalMetric(Metric):
    """Mean and median angular error (degrees) and the fractions within 11.25/22.5/30 degrees.

    A median cannot be reduced across processes from per-process medians, so the metric keeps a
    histogram of errors over [0, 180] with ``1 / bins_per_degree``-degree bins as a summed
    state; the median is read from it (to within half a bin of the exact value). Mean and the
    threshold fractions are counted exactly in ``update``. ``compute()`` returns python floats,
    all NaN when no valid pixel was seen.
    """

    is_differentiable = False
    higher_is_better = None  # mixed: each key's direction is in NormalTask.metrics
    full_state_update = False
    hist: Tensor
    err_sum: Tensor
    within: Tensor
    count: Tensor

    def __init__(self, bins_per_degree: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.bins_per_degree = bins_per_degree
        self.num_bins = 180 * bins_per_degree
        self.add_state("hist", torch.zeros(self.num_bins, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("err_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("within", torch.zeros(len(NORMAL_THRESHOLDS), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: (B, 3, H, W); pixels with a non-zero target are scored."""
        if pred.shape != target.shape or pred.dim() < 2 or pred.shape[1] != 3:
            raise ValueError(f"expected matching (B, 3, H, W) shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
        err, valid = angular_error_deg(pred, target)
        err = err[valid]
        bins = (err * self.bins_per_degree).long().clamp_(0, self.num_bins - 1)
        self.hist += torch.bincount(bins, minlength=self.num_bins)
        self.err_sum += err.sum()
        thresholds = torch.tensor(NORMAL_THRESHOLDS, dtype=torch.float64, device=err.device)
        self.within += (err.unsqueeze(1) < thresholds).sum(0)
        self.count += err.numel()

    def _median(self, n: int) -> float:
        """Median from the histogram: mean of the centres of the bins holding the middle rank(s)."""
        cum = self.hist.cumsum(0)
        ranks = torch.tensor([(n - 1) // 2 + 1, n // 2 + 1], dtype=cum.dtype, device=cum.device)
        bins = torch.searchsorted(cum, ranks).double()
        return ((bins.mean() + 0.5) / self.bins_per_degree).item()

    def compute(self) -> dict:
        n = int(self.count.item())
        keys = ("mean", "median") + tuple(f"within_{t:g}" for t in NORMAL_THRESHOLDS)
        if n == 0:
            return dict.fromkeys(keys, math.nan)
        fractions = (self.within.double() / n).tolist()
        return dict(zip(keys, [self.err_sum.item() / n, self._median(n), *fractions]))


class CosineNormalLoss(nn.Module):
    """Mean over valid pixels of 1 - cos(pred, target): 0 for identical, 2 for opposite normals.

    The prediction is normalised here (the network outputs raw vectors). A batch without valid
    pixels gives 0 with the graph intact.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, target = pred.float(), target.float()
        valid = target.abs().sum(dim=1) > 0
        cos = (unit_vectors(pred) * unit_vectors(target)).sum(dim=1)
        return torch.where(valid, 1 - cos, 0.0).sum() / valid.sum().clamp_min(1)


class L1NormalLoss(nn.Module):
    """|unit(pred) - target| summed over x, y and z, averaged over valid pixels: the normals loss of
    ATRC, InvPT and TaskPrompter (their ``L1Loss(normalize=True)``, which the papers weigh 10).
    A batch without valid pixels gives 0 with the graph intact."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, target = pred.float(), target.float()
        valid = target.abs().sum(dim=1) > 0
        error = (unit_vectors(pred) - target).abs().sum(dim=1)
        return torch.where(valid, error, 0.0).sum() / valid.sum().clamp_min(1)


NORMAL_LOSSES = {"cosine": CosineNormalLoss, "l1": L1NormalLoss}


class NormalTask(Task):
    """Surface normals: a unit vector per pixel in the camera frame (x right, y down, z forward),
    all-zero = invalid. The head normalises its output."""

    name = "normal"
    storage = Storage("normals.npy", np.float16, (3,))
    out_channels = 3
    losses = NORMAL_LOSSES
    default_loss = "cosine"
    metrics = {"mean": MetricInfo(False, "mean angle (deg)"), "median": MetricInfo(False, "median angle (deg)"),
               **{f"within_{t:g}": MetricInfo(True, f"<{t:g} deg") for t in NORMAL_THRESHOLDS}}
    primary_metric = "mean"
    delta_metrics = ("mean", "median", "within_11.25", "within_22.5", "within_30")
    single_delta_metric = "mean"
    pad_value = 0.0
    # half the bytes between loader workers and the step; unit vectors lose nothing that matters
    transfer_dtype = torch.float16

    def flip(self, value: Tensor) -> Tensor:
        """Mirrored, with x negated: the camera's x axis points right."""
        flipped = value.flip(-1)
        flipped[0].neg_()
        return flipped

    def bad_values(self, array: np.ndarray, meta: Meta) -> tuple[np.ndarray, str]:
        return ~np.isfinite(array).reshape(len(array), -1).all(1), "NaN or Inf in normals"

    def finalize(self, output: Tensor) -> Tensor:
        return unit_vectors(output.float(), eps=1e-6).to(output.dtype)

    def after_resample(self, value: Tensor) -> Tensor:
        return unit_vectors(value)

    def build_metric(self, meta: Meta, stage: str = "test") -> Metric:
        return NormalMetric()

    def example_target(self, channels, batch, size, generator):
        return unit_vectors(torch.randn(batch, 3, *size, generator=generator))

    def prediction(self, output: Tensor) -> Tensor:
        return output

    def colorize(self, value: np.ndarray, meta: Meta, reference: np.ndarray | None = None) -> np.ndarray:
        """(3, H, W) or (H, W, 3) unit normals -> RGB = (n + 1) / 2; invalid (zero) black."""
        n = np.asarray(value, dtype=np.float32)
        if n.ndim == 3 and n.shape[0] == 3 and n.shape[-1] != 3:
            n = n.transpose(1, 2, 0)
        rgb = ((n + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
        rgb[np.abs(n).sum(-1) == 0] = 0
        return rgb
