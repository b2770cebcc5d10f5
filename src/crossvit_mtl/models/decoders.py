"""Decoders that turn the two branches' patch grids into one dense feature map."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossvit_mtl.models.encoders import EncoderOutput
from crossvit_mtl.models.layers import LayerNorm


def _conv_bn_gelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


class DetailStem(nn.Module):
    """Two strided 3x3 convolutions on the image: stride-4 features that keep what 8- and
    16-px patches blur away (poles, sign posts, distant people), at a few % of the FLOPs; the
    stride-2 features on the way are what the heads' refinement reads (``forward_both``).

    ``depth`` residual 3x3 blocks follow at stride 4. Two convolutions see a 7x7-px window, too
    little to tell a pole from a building's edge or a person from a bin; each block widens it by
    8 px, and the residual form keeps the stem's first features within reach of the decoder.
    """

    def __init__(self, in_chans: int, channels: int, depth: int = 0):
        super().__init__()
        if depth < 0:
            raise ValueError(f"detail_depth must be >= 0, got {depth}")
        self.convs = nn.Sequential(_conv_bn_gelu(in_chans, channels // 2, 2), _conv_bn_gelu(channels // 2, channels, 2))
        self.blocks = nn.ModuleList(_conv_bn_gelu(channels, channels) for _ in range(depth))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_both(image)[0]

    def forward_both(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stride-4 features and the stride-2 ones, in ``LightDecoder.forward_both``'s order."""
        half = self.convs[0](image)
        out = self.convs[1](half)
        for block in self.blocks:
            out = out + block(out)
        return out, half


class LightDecoder(nn.Module):
    """Projects each branch (its last ``num_stages`` stage outputs, concatenated) to one width,
    adds the branch's projected CLS token to every position (the CLS carries the other branch's
    information under CLS fusion), upsamples the coarse branch to the fine grid, adds the
    branches and mixes with a 3x3 conv. With ``detail_channels`` the result is upsampled to
    stride 4 and refined with a detail stem's image features (heads then predict at stride 4).

    Work stays at the fine patch grid (stride 8 for the default presets); heads predict there and
    their outputs are upsampled bilinearly, which keeps the decoder a small share of the cost.
    """

    def __init__(self, dims: Sequence[int], channels: int, num_stages: int = 1,
                 detail_channels: int = 0, in_chans: int = 3, detail_depth: int = 0):
        super().__init__()
        self.num_stages = num_stages
        self.norms = nn.ModuleList(LayerNorm(d * num_stages) for d in dims)
        self.projs = nn.ModuleList(nn.Linear(d * num_stages, channels) for d in dims)
        self.fuse = _conv_bn_gelu(channels, channels)
        self.detail = DetailStem(in_chans, detail_channels, detail_depth) if detail_channels else None
        self.refine = _conv_bn_gelu(channels + detail_channels, channels) if detail_channels else None
        self.out_channels = channels

    def forward(self, enc: EncoderOutput, image: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_both(enc, image)[0]

    def forward_both(self, enc: EncoderOutput, image: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoder map and the detail stem's stride-2 features (None without a detail stem):
        the main output first, as ``DetailStem.forward_both``."""
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
        out = self.fuse(out)
        if self.detail is None or self.refine is None:
            return out, None
        if image is None:
            raise ValueError("a decoder with a detail stem needs the input image")
        detail, half = self.detail.forward_both(image)
        out = F.interpolate(out, size=detail.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(torch.cat([out, detail], dim=1)), half


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
