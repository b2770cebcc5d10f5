"""CrossViT image classifiers (Chen, Fan, Panda, ICCV 2021) on the shared dual-branch encoder."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from crossvit_mtl.models.encoders import DualBranchEncoder
from crossvit_mtl.models.heads import ClsHead


def branch_scales(img_size: Sequence[int]) -> tuple[float, ...]:
    """Each branch's input size relative to the last one, the size the classifier is fed."""
    return tuple(s / img_size[-1] for s in img_size)


class CrossViT(nn.Module):
    """Two branches (patch 12 at 240 px, patch 16 at 224 px in the published models), multi-scale
    stages with CLS cross-attention fusion, prediction = mean of the two branch heads.

    Any input size works: each branch resizes the input by its ``img_size`` ratio to the nearest
    multiple of its patch size, and learned positions are interpolated to the resulting grid.
    """

    def __init__(self, num_classes: int = 1000, img_size: Sequence[int] = (240, 224),
                 patch_sizes: Sequence[int] = (12, 16), dims: Sequence[int] = (192, 384),
                 heads: Sequence[int] = (6, 6), stages: Sequence[Sequence[int]] = ((1, 4, 0),) * 3,
                 mlp_ratios: Sequence[float] = (4.0, 4.0, 1.0), stem: str = "linear",
                 in_chans: int = 3, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        ref = img_size[-1]
        self.num_classes = num_classes
        self.encoder = DualBranchEncoder(
            img_size=(ref, ref), patch_sizes=patch_sizes, dims=dims, heads=heads, stages=stages,
            mlp_ratios=mlp_ratios, fusion="cls", stem=stem, pos_embed="learned", in_chans=in_chans,
            branch_scales=branch_scales(img_size), qkv_bias=qkv_bias, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate)
        self.head = ClsHead(tuple(dims), num_classes, drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).cls_tokens())
