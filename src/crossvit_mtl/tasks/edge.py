"""Edges (boundary detection) as the multi-task papers train and score them (ATRC, InvPT,
TaskPrompter on PASCAL-Context and NYUD-v2).

Target: 1 on a boundary pixel, 0 elsewhere, 255 where not annotated (padding). The head predicts
one logit per pixel and trains with binary cross-entropy whose positive class weighs w = 0.95 and
negative class 1 - w (InvPT's ``BalancedBinaryCrossEntropyLoss(pos_weight=0.95)``; the papers weigh
the edge loss 50 against segmentation's 1). The metric is SEISM's odsF (with oisF and AP beside it)
by ``edge_eval``: each image's predicted probability, stored as an 8-bit map as the papers save
it, thinned and matched to the ground-truth boundaries within ``max_dist`` x the image diagonal;
counts summed over the data set. Validation uses every fifth threshold (``odsf_quick``: a lower
bound of the full figure at a fifth of the cost); ``test`` scores the full protocol (``odsf``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from crossvit_mtl.tasks import edge_eval
from crossvit_mtl.tasks.base import IGNORE_INDEX, Meta, MetricInfo, Storage, Task, colorize_scalar
from crossvit_mtl.tasks.saliency import check_binary

#: the papers' weight of a boundary pixel in the loss (a background pixel weighs 1 - this)
POSITIVE_WEIGHT = 0.95
#: SEISM's maxDist of PASCAL-Context, the default where a data set prescribes none
DEFAULT_MAX_DIST = edge_eval.MAX_DIST["pascal-context"]
#: the protocol of each evaluation stage, and the suffix its figures carry
STAGE_PROTOCOLS = {"val": "seism-quick", "test": "seism"}
SUFFIX = {"seism": "", "seism-quick": "_quick", "mtinet": "_mtinet"}


class WeightedBCELoss(nn.Module):
    """Binary cross-entropy on logits, a boundary pixel weighted ``positive_weight`` and any other
    ``1 - positive_weight``, averaged over annotated pixels (0 with the graph intact when none is)."""

    def __init__(self, positive_weight: float = POSITIVE_WEIGHT, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        if not 0.0 < positive_weight < 1.0:
            raise ValueError(f"positive_weight must be in (0, 1), got {positive_weight}")
        self.positive_weight, self.ignore_index = positive_weight, ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        check_binary(target, "edge")
        logits = logits.float().reshape(target.shape)
        valid = target != self.ignore_index
        positive = (target == 1).float()
        weight = torch.where(target == 1, self.positive_weight, 1.0 - self.positive_weight) * valid
        loss = F.binary_cross_entropy_with_logits(logits, positive, weight=weight, reduction="sum")
        return loss / valid.sum().clamp_min(1)


class EdgeMetric(Metric):
    """odsF, oisF and AP (``edge_eval.summarize``) from summed integer counts, exact under DDP.

    Per image the states gain its counts at every threshold and its counts at its own best threshold
    (OIS). ``update`` runs numpy on the CPU, one image at a time.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    counts: Tensor
    ois_counts: Tensor

    def __init__(self, protocol: str = "seism", max_dist: float = DEFAULT_MAX_DIST, **kwargs: Any):
        super().__init__(**kwargs)
        self.protocol = edge_eval.get_protocol(protocol)
        if not 0 < max_dist < 1:
            raise ValueError(f"edge max_dist is a fraction of the image diagonal in (0, 1), got {max_dist!r}")
        self.max_dist = float(max_dist)
        self.suffix = SUFFIX[self.protocol.name]
        self.add_state("counts", torch.zeros(len(self.protocol.thresholds), 4, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("ois_counts", torch.zeros(4, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """logits: (B, 1, H, W); target: (B, H, W) with 0, 1 and the ignore index."""
        if logits.dim() != 4 or logits.shape[1] != 1 or logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"expected (B, 1, H, W) logits and (B, H, W) targets, got {tuple(logits.shape)} "
                             f"and {tuple(target.shape)}")
        check_binary(target, "edge")
        stored = to_8bit(torch.sigmoid(logits.detach().float()[:, 0])).cpu().numpy()
        for prob, truth in zip(stored, target.cpu().numpy()):
            counts = edge_eval.edge_counts(prob, truth == 1, self.protocol, self.max_dist, valid=truth != IGNORE_INDEX)
            self.counts += torch.from_numpy(counts).to(self.counts.device)
            self.ois_counts += torch.from_numpy(edge_eval.best_counts(counts)).to(self.counts.device)

    def compute(self) -> dict:
        counts = self.counts.cpu().numpy()
        keys = [f"{name}{self.suffix}" for name in ("odsf", "oisf", "ap")]
        if counts[:, 1].max(initial=0) == 0 and counts[:, 3].max(initial=0) == 0:
            return dict.fromkeys(keys, math.nan)  # no boundary seen nor predicted: nothing to score
        summary = edge_eval.summarize(counts, self.ois_counts.cpu().numpy(), self.protocol.thresholds)
        return dict(zip(keys, (summary.ods_f, summary.ois_f, summary.ap)))


def to_8bit(prob: Tensor) -> Tensor:
    """A probability map as an 8-bit PNG holds it (what SEISM and ``crossvit-mtl edges`` read)."""
    return torch.round(prob.clamp(0, 1) * 255).to(torch.uint8)


class EdgeTask(Task):
    """Boundary detection: one logit per pixel; see the module."""

    name = "edge"
    storage = Storage("edges.npy", np.uint8, ())
    out_channels = 1
    losses = {"weighted_bce": WeightedBCELoss}
    default_loss = "weighted_bce"
    metrics = {f"{name}{suffix}": MetricInfo(True, f"{label}{note}")
               for suffix, note in (("", ""), ("_quick", " (21 thresholds)"), ("_mtinet", " (MTI-Net)"))
               for name, label in (("odsf", "odsF"), ("oisf", "oisF"), ("ap", "AP"))}
    primary_metric = "odsf"
    val_primary_metric = "odsf_quick"
    # whichever of the two a split has: the full figure at test, the quick one at validation
    delta_metrics = ("odsf", "odsf_quick")
    single_delta_metric = "odsf"

    def resize(self, value: Tensor, size: tuple[int, int]) -> Tensor:
        """A boundary stays a one-pixel line at any scale: every pixel the resampled line covers,
        then thinned (not interpolated, which would blur it, nor nearest, which would break it
        when shrinking and thicken it when enlarging); not-annotated pixels by nearest neighbour."""
        if tuple(value.shape[-2:]) == tuple(size):
            return value.clone()
        shrink = size[0] < value.shape[-2] or size[1] < value.shape[-1]
        line = F.interpolate((value == 1).float()[None, None], size=size, mode="bilinear", align_corners=False,
                             antialias=shrink)[0, 0] > 1e-3
        out = torch.from_numpy(edge_eval.thin_binary(line.numpy())).to(torch.uint8)
        ignored = F.interpolate((value == IGNORE_INDEX).to(torch.uint8)[None, None], size=size, mode="nearest-exact")
        return out.masked_fill_(ignored[0, 0].bool(), IGNORE_INDEX)

    def bad_values(self, array: np.ndarray, meta: Meta) -> tuple[np.ndarray, str]:
        bad = (array != 0) & (array != 1) & (array != IGNORE_INDEX)
        return bad.reshape(len(array), -1).any(1), f"values other than 0, 1 and {IGNORE_INDEX} (an edge map is binary)"

    def build_metric(self, meta: Meta, stage: str = "test") -> Metric:
        options = self.options(meta)
        protocol = options.get(f"{stage}_protocol", STAGE_PROTOCOLS.get(stage, "seism"))
        return EdgeMetric(protocol, options.get("max_dist", DEFAULT_MAX_DIST))

    def example_target(self, channels, batch, size, generator):
        return torch.randint(2, (batch, *size), generator=generator)

    def prediction(self, output: Tensor) -> Tensor:
        """The boundary probability."""
        return torch.sigmoid(output.float()[0])

    def colorize(self, value: np.ndarray, meta: Meta, reference: np.ndarray | None = None) -> np.ndarray:
        value = np.asarray(value, dtype=np.float32)
        valid = value != IGNORE_INDEX
        return colorize_scalar(np.where(valid, value, 0), 1.0, cmap="gray", valid=valid)

    def write_prediction(self, stem, output, image, meta, out_dir):
        """The boundary probability as an 8-bit grey PNG (value / 255), what SEISM and
        ``crossvit-mtl edges`` read."""
        from PIL import Image

        Image.fromarray(to_8bit(self.prediction(output)).numpy()).save(out_dir / f"{stem}_edge.png")
        return {}
