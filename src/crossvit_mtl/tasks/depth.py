"""Monocular depth: pooled error metric and masked losses. A target of 0 marks an invalid pixel.

The same code scores metric depth (NYUv2, Cityscapes from disparity) and the MTAN Cityscapes
"depth", which is disparity; there most pixels are invalid and near-zero valid disparities make
the relative error huge, a property of the data rather than of the metric.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from crossvit_mtl.tasks.base import Meta, MetricInfo, Storage, Task, colorize_scalar

#: Predictions are clamped to this before logs and ratios, so a network output <= 0 cannot give inf/NaN.
DEPTH_EPS = 1e-6


class DepthMetric(Metric):
    """abs_err, rel_err, rmse, log_rmse and delta1..3, pooled over every valid pixel of the data set.

    MTAN/LibMTL average per-batch means, which depends on the batch size and on how many valid
    pixels each batch has; here every state is a float64 (or integer) sum over valid pixels, so
    the result is exact under distributed evaluation and independent of batching. ``compute()``
    returns python floats (deltas as fractions), all NaN when no valid pixel was seen.
    """

    is_differentiable = False
    higher_is_better = None  # mixed: each key's direction is in DepthTask.metrics
    full_state_update = False
    abs_sum: Tensor
    rel_sum: Tensor
    sq_sum: Tensor
    log_sq_sum: Tensor
    delta_counts: Tensor
    count: Tensor

    def __init__(self, eps: float = DEPTH_EPS, **kwargs):
        super().__init__(**kwargs)
        self.eps = eps
        for name in ("abs_sum", "rel_sum", "sq_sum", "log_sq_sum"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("delta_counts", torch.zeros(3, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: (B, 1, H, W); pixels with target > 0 are scored."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target {tuple(target.shape)}")
        valid = target > 0
        p, t = pred.detach()[valid].double(), target.detach()[valid].double()
        diff = p - t
        pc = p.clamp_min(self.eps)
        ratio = torch.maximum(pc / t, t / pc)
        self.abs_sum += diff.abs().sum()
        self.rel_sum += (diff.abs() / t).sum()
        self.sq_sum += diff.square().sum()
        self.log_sq_sum += (pc.log() - t.log()).square().sum()
        thresholds = torch.tensor([1.25, 1.25 ** 2, 1.25 ** 3], dtype=torch.float64, device=ratio.device)
        self.delta_counts += (ratio.unsqueeze(1) < thresholds).sum(0)
        self.count += t.numel()

    def compute(self) -> dict:
        n = self.count.item()
        if n == 0:
            return dict.fromkeys(("abs_err", "rel_err", "rmse", "log_rmse", "delta1", "delta2", "delta3"), math.nan)
        deltas = (self.delta_counts.double() / n).tolist()
        return {
            "abs_err": self.abs_sum.item() / n,
            "rel_err": self.rel_sum.item() / n,
            "rmse": math.sqrt(self.sq_sum.item() / n),
            "log_rmse": math.sqrt(self.log_sq_sum.item() / n),
            "delta1": deltas[0],
            "delta2": deltas[1],
            "delta3": deltas[2],
        }


class MaskedL1Loss(nn.Module):
    """Mean |pred - target| over pixels with target > 0 (the MTAN/LibMTL depth loss).

    Returns 0 with the graph intact when a batch has no valid pixel, instead of NaN.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, target = pred.float(), target.float()
        valid = target > 0
        err = torch.where(valid, (pred - target).abs(), 0.0)
        return err.sum() / valid.sum().clamp_min(1)


class MaskedLogL1Loss(nn.Module):
    """Mean |log(pred) - log(target)| over pixels with target > 0: every pixel's error counts
    relative to its depth, as the ratio metrics (delta < 1.25, relative error) score it.

    Metric L1 lets the far pixels dominate (an error of 10 % costs 15 at 150 m and 0.3 at 3 m).
    Predictions are clamped to ``eps`` before the log; a batch with no valid pixel gives 0.
    """

    def __init__(self, eps: float = DEPTH_EPS):
        super().__init__()
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, target = pred.float(), target.float()
        valid = target > 0
        err = torch.where(valid, (pred.clamp_min(self.eps).log() - target.clamp_min(self.eps).log()).abs(), 0.0)
        return err.sum() / valid.sum().clamp_min(1)


class ScaleInvariantLogLoss(nn.Module):
    """Scale-invariant log loss of Eigen et al. (2014), per image over valid pixels, then averaged:

        D = mean(d^2) - lambda * mean(d)^2,   d = log(pred) - log(target)

    lambda = 0 is the plain log MSE, lambda = 1 fully scale invariant; 0.85 is the value BTS and
    AdaBins use (they also take sqrt and multiply by 10; this is the un-rooted form). Predictions
    are clamped to ``eps`` before the log. Images without valid pixels are left out; a batch
    with none gives 0 with the graph intact.
    """

    def __init__(self, lambda_: float = 0.85, eps: float = DEPTH_EPS):
        super().__init__()
        self.lambda_ = lambda_
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred, target = pred.float(), target.float()
        valid = target > 0
        d = torch.where(valid, pred.clamp_min(self.eps).log() - target.clamp_min(self.eps).log(), 0.0)
        dims = tuple(range(1, d.dim()))
        n = valid.sum(dims)
        has = n > 0
        n = n.clamp_min(1)
        per_image = d.square().sum(dims) / n - self.lambda_ * (d.sum(dims) / n).square()
        return (per_image * has).sum() / has.sum().clamp_min(1)


DEPTH_LOSSES = {"l1": MaskedL1Loss, "log_l1": MaskedLogL1Loss, "silog": ScaleInvariantLogLoss}
DEPTH_KINDS = ("metric", "disparity")


class DepthTask(Task):
    """Monocular depth: one positive value per pixel, metres (or disparity where the data set's
    ``depth_kind`` says so), 0 = invalid. The head ends in a softplus."""

    name = "depth"
    storage = Storage("depth.npy", np.float32, ())
    out_channels = 1
    losses = DEPTH_LOSSES
    default_loss = "l1"
    metrics = {"abs_err": MetricInfo(False, "abs err"), "rel_err": MetricInfo(False, "rel err"),
               "rmse": MetricInfo(False, "RMSE"), "log_rmse": MetricInfo(False, "log RMSE"),
               "delta1": MetricInfo(True, "delta<1.25"), "delta2": MetricInfo(True, "delta<1.25^2"),
               "delta3": MetricInfo(True, "delta<1.25^3")}
    primary_metric = "abs_err"
    delta_metrics = ("abs_err", "rel_err")
    single_delta_metric = "rmse"
    pad_value = 0.0

    def zoom(self, value: Tensor, scale: float, meta: Meta) -> Tensor:
        """Zooming in by s reads as the scene being s times closer: metric depth is divided by s,
        disparity (inverse depth: what MTAN-format Cityscapes stores) multiplied by it. Some public
        multi-task code divides the Cityscapes disparity by s as if it were metric depth, which is
        inconsistent with the zoom. Zeros stay zeros either way."""
        kind = meta.get("depth_kind", "metric")
        if kind not in DEPTH_KINDS:
            raise ValueError(f"depth_kind must be one of {DEPTH_KINDS}, got {kind!r}")
        return value / scale if kind == "metric" else value * scale

    def bad_values(self, array: np.ndarray, meta: Meta) -> tuple[np.ndarray, str]:
        return ~(np.isfinite(array) & (array >= 0)).reshape(len(array), -1).all(1), "NaN, Inf or negative depth"

    def finalize(self, output: Tensor) -> Tensor:
        return F.softplus(output.float()).to(output.dtype)

    def initial_bias(self, target: Tensor) -> tuple[float, str] | None:
        """The median valid depth of the calibration batch, through softplus's inverse.

        A new head outputs softplus(~0) = 0.7 m; climbing to street depths (median ~10 m) through
        the weights takes a whole epoch of a short run, in which depth is scored as noise. The
        same idea as a detector's prior bias: the output starts at the data's typical value.
        """
        depth = target.float()
        if not (depth > 0).any():
            return None
        median = float(depth[depth > 0].median())
        bias = median + math.log(-math.expm1(-median))  # softplus^-1, stable at any depth
        return bias, f"depth head: starts at {median:.3g}, the calibration batch's median valid depth"

    def build_metric(self, meta: Meta, stage: str = "test") -> Metric:
        return DepthMetric()

    def example_target(self, channels, batch, size, generator):
        return torch.rand(batch, 1, *size, generator=generator) + 0.1

    def prediction(self, output: Tensor) -> Tensor:
        return output[0]

    def colorize(self, value: np.ndarray, meta: Meta, reference: np.ndarray | None = None) -> np.ndarray:
        """Magma from near (light) to far (dark), both panels on the target's 99th percentile."""
        value = np.asarray(value, dtype=np.float32).reshape(value.shape[-2:])
        scale = value if reference is None else np.asarray(reference, dtype=np.float32).reshape(value.shape[-2:])
        valid = scale[scale > 0]
        vmax = float(np.percentile(valid, 99)) if valid.size else None
        return colorize_scalar(value, vmax, valid=value > 0)

    def write_prediction(self, stem, output, image, meta, out_dir):
        """The colour picture (``_depth.png``) and, for metric depth, 16-bit millimetres (``_depth_mm.png``)."""
        from PIL import Image

        depth = output[0].float().numpy()
        Image.fromarray(self.colorize(depth, meta)).save(out_dir / f"{stem}_depth.png")
        if meta.get("depth_kind", "metric") == "metric":
            mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
            Image.fromarray(mm).save(out_dir / f"{stem}_depth_mm.png")
        return {}
