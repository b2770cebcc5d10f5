"""CrossViT image classifiers (Chen, Fan, Panda, ICCV 2021) on the shared dual-branch encoder."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from crossvit_mtl.models.encoders import DualBranchEncoder
from crossvit_mtl.models.heads import ClsHead


def branch_sizes(img_size: Sequence) -> tuple[tuple[int, int], ...]:
    """Each branch's fixed input (H, W) from ``img_size``: one side per branch (square) or (H, W)."""
    return tuple((int(s), int(s)) if isinstance(s, (int, float)) else (int(s[0]), int(s[1])) for s in img_size)


class CrossViT(nn.Module):
    """Two branches (patch 12 and patch 16 in the published models), multi-scale stages with CLS
    cross-attention fusion, prediction = mean of the two branch heads.

    The published protocol: each branch runs at its own fixed size, ``img_size[i]`` (240 and 224
    px), whatever the input; an input of another size is resized (bicubic) per branch, so the
    released models are fed 240 px and their 16-px branch sees it at 224. Other ``img_size``
    values build the network for other resolutions (learned positions sized to fit).
    """

    def __init__(self, num_classes: int = 1000, img_size: Sequence = (240, 224),
                 patch_sizes: Sequence[int] = (12, 16), dims: Sequence[int] = (192, 384),
                 heads: Sequence[int] = (6, 6), stages: Sequence[Sequence[int]] = ((1, 4, 0),) * 3,
                 mlp_ratios: Sequence[float] = (4.0, 4.0, 1.0), stem: str = "linear",
                 in_chans: int = 3, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        sizes = branch_sizes(img_size)
        self.num_classes = num_classes
        self.encoder = DualBranchEncoder(
            img_size=sizes[0], patch_sizes=patch_sizes, dims=dims, heads=heads, stages=stages,
            mlp_ratios=mlp_ratios, fusion="cls", stem=stem, pos_embed="learned", in_chans=in_chans,
            branch_sizes=sizes, qkv_bias=qkv_bias, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate)
        self.head = ClsHead((dims[0], dims[1]), num_classes, drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).cls_tokens())
