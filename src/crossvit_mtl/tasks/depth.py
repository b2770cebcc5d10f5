"""Monocular depth: pooled error metric and masked losses. A target of 0 marks an invalid pixel.

The same code scores metric depth (NYUv2, Cityscapes from disparity) and the MTAN Cityscapes
"depth", which is disparity; there most pixels are invalid and near-zero valid disparities make
the relative error huge, a property of the data rather than of the metric.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchmetrics import Metric

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
    higher_is_better = None  # mixed: each key's direction is in tasks.registry.METRIC_DIRECTION
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


def build_depth_loss(name: str = "l1", **kwargs) -> nn.Module:
    """Depth loss by name: "l1", "log_l1" or "silog"; kwargs go to its constructor."""
    if name not in DEPTH_LOSSES:
        raise ValueError(f"unknown depth loss {name!r}; choose from {sorted(DEPTH_LOSSES)}")
    return DEPTH_LOSSES[name](**kwargs)
