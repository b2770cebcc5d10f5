"""Task heads: raw outputs for the losses (logits, positive depth, unit normals ...), each dense
head ending in its task's output constraint (``Task.finalize``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crossvit_mtl.models.layers import LayerNorm
from crossvit_mtl.tasks import get_task


class DenseHead(nn.Module):
    """conv3x3-BN-ReLU then a 1x1 conv to the task's channels, upsampled to the input size;
    ``separable`` makes the 3x3 depthwise (9x fewer multiply-adds at the head's width).

    With ``detail_channels`` the output is refined at stride 2 before the last upsampling: two
    3x3 convolutions read the upsampled output beside the detail stem's stride-2 image features
    and add a correction (the last one starts at zero, so the head starts as plain upsampling).
    Poles are 1-3 px wide at 128x256: a stride-4 output upsampled bilinearly cannot draw them.
    """

    def __init__(self, task: str, in_channels: int, out_channels: int, hidden: int | None = None,
                 separable: bool = False, detail_channels: int = 0, refine_channels: int = 16):
        super().__init__()
        if get_task(task).kind != "dense":
            raise ValueError(f"task {task!r} is not a dense task; a dense head predicts a map per image")
        hidden = in_channels if separable else hidden or in_channels
        self.task = task
        self.finalize = get_task(task).finalize
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False, groups=in_channels if separable else 1),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1))
        self.refine = None
        if detail_channels:
            correction = nn.Conv2d(refine_channels, out_channels, 3, padding=1)
            nn.init.zeros_(correction.weight)
            nn.init.zeros_(correction.bias)  # type: ignore[arg-type]  # Conv2d made with bias
            self.refine = nn.Sequential(
                nn.Conv2d(out_channels + detail_channels, refine_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(refine_channels), nn.ReLU(inplace=True), correction)

    @torch.no_grad()
    def set_output_bias(self, value: float) -> None:
        """Start every output channel at ``value`` before the task's constraint, by the bias of the
        last conv (a detector's prior bias; ``Task.initial_bias`` says which value)."""
        if not math.isfinite(value):
            raise ValueError(f"a head's starting bias must be finite, got {value}")
        last = self.conv[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None  # built so in __init__
        last.bias.fill_(value)

    def forward(self, x: torch.Tensor | list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """``x``: the decoder map, or [map, stride-2 detail features] for a refining head."""
        fmap, detail = (x[0], x[1]) if isinstance(x, (list, tuple)) else (x, None)
        out = self.conv(fmap)
        if self.refine is not None and detail is not None:
            out = F.interpolate(out, size=detail.shape[-2:], mode="bilinear", align_corners=False)
            out = out + self.refine(torch.cat([out, detail.to(out.dtype)], dim=1))
        if out.shape[-2:] != size:
            # upsampled in float32, which the losses and metrics read anyway: on CPU bilinear
            # resampling of a bf16 map runs at half the float32 rate, and a bf16 map at the input
            # size would be cast again by the loss
            out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
        return self.finalize(out)


class MapClsHead(nn.Module):
    """Image-level classes from the shared dense map: two strided conv3x3-BN-GELU (stride 4 more),
    an average over a coarse ``grid`` of regions, and a linear layer over the regions.

    Keeping a coarse grid (2 x 4 regions by default) keeps *where* things are: a layout class
    (a cross street on both sides, a bend to one side, buildings closing the view) is a fact about
    regions of the picture, which one global average or one token has to learn to encode first.
    ``classifier="cls"`` keeps the thesis's head on the two CLS tokens for comparison.
    """

    def __init__(self, in_channels: int, num_classes: int, grid: tuple[int, int] = (2, 4), drop: float = 0.0):
        super().__init__()
        width = 2 * in_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(in_channels), nn.GELU(),
            nn.Conv2d(in_channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.GELU(),
            nn.AdaptiveAvgPool2d(tuple(grid)), nn.Flatten(), nn.Dropout(drop))
        self.fc = nn.Linear(width * grid[0] * grid[1], num_classes)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(fmap))


class ClsHead(nn.Module):
    """CrossViT's prediction: a LayerNorm + linear per branch on its CLS token, averaged."""

    def __init__(self, dims: tuple[int, int], num_classes: int, drop: float = 0.0):
        super().__init__()
        self.norms = nn.ModuleList(LayerNorm(d) for d in dims)
        self.drop = nn.Dropout(drop)
        self.heads = nn.ModuleList(nn.Linear(d, num_classes) for d in dims)

    def forward(self, cls_tokens: list[torch.Tensor]) -> torch.Tensor:
        logits = [head(self.drop(norm(t))) for t, norm, head in zip(cls_tokens, self.norms, self.heads)]
        return torch.stack(logits).mean(0)
