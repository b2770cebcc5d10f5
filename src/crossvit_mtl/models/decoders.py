"""Decoders that turn the two branches' patch grids into one dense feature map."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crossvit_mtl.models.encoders import EncoderOutput


class LightDecoder(nn.Module):
    """Projects each branch (its last ``num_stages`` stage outputs, concatenated) to one width,
    adds the branch's projected CLS token to every position (the CLS carries the other branch's
    information under CLS fusion), upsamples the coarse branch to the fine grid, adds the
    branches and mixes with a 3x3 conv.

    Work stays at the fine patch grid (stride 8 for the default presets); heads predict there and
    their outputs are upsampled bilinearly, which keeps the decoder a small share of the cost.
    """

    def __init__(self, dims: tuple[int, int], channels: int, num_stages: int = 1):
        super().__init__()
        self.num_stages = num_stages
        self.norms = nn.ModuleList(nn.LayerNorm(d * num_stages) for d in dims)
        self.projs = nn.ModuleList(nn.Linear(d * num_stages, channels) for d in dims)
        self.fuse = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.GELU())
        self.out_channels = channels

    def forward(self, enc: EncoderOutput) -> torch.Tensor:
        fine = max(enc.grids, key=lambda g: g[0] * g[1])
        out = None
        for i, (gh, gw) in enumerate(enc.grids):
            seq = torch.cat([stage[i] for stage in enc.stages[-self.num_stages:]], dim=-1)
            seq = self.projs[i](self.norms[i](seq))
            seq = seq[:, 1:] + seq[:, :1]
            fmap = seq.transpose(1, 2).reshape(seq.shape[0], -1, gh, gw)
            if (gh, gw) != fine:
                fmap = F.interpolate(fmap, size=fine, mode="bilinear", align_corners=False)
            out = fmap if out is None else out + fmap
        return self.fuse(out)


class TransposedConvDecoder(nn.Module):
    """The thesis decoder for one branch: log2(patch) stacked 2x2 stride-2 transposed convs
    (BN, ReLU) take a (dim, H/p, W/p) map to (channels, H, W)."""

    def __init__(self, dim: int, channels: int, patch_size: int):
        super().__init__()
        steps = int(round(math.log2(patch_size)))
        if 2 ** steps != patch_size:
            raise ValueError(f"transposed-conv decoder needs a power-of-two patch size, got {patch_size}")
        layers: list[nn.Module] = []
        for k in range(steps):
            layers += [nn.ConvTranspose2d(dim if k == 0 else channels, channels, 2, stride=2, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*layers)
        self.num_upsamplings = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)
