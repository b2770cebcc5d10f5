"""The thesis's segmentation network, built as its README and prototype describe, done right.

128x256 input; conv stems (8x8 -> 16x32 grid of 512 tokens, 16x16 -> 8x16 grid of 128 tokens),
width 256, fixed sinusoidal positions, a CLS token per branch, pre-norm self-attention, CrossViT's
CLS exchange by cross-attention, patch tokens reshaped to maps, stacked 2x2 transposed convs
(3 and 4) to 128x256xC, X1 + X2, a last CNN to logits.

Fixes over the prototype: residual pre-norm blocks with MLPs and per-head projections scaled by
1/sqrt(head_dim); real cross-attention; the exchanged CLS tokens are not dropped but added to
every position of their branch's map before decoding (they are the only carrier of the other
branch's information in CLS fusion); logits out, no softmax inside.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from crossvit_mtl.models.decoders import TransposedConvDecoder
from crossvit_mtl.models.encoders import DualBranchEncoder


class ThesisSegNet(nn.Module):
    def __init__(self, num_classes: int = 8, img_size: Sequence[int] = (128, 256),
                 patch_sizes: Sequence[int] = (8, 16), embed_dim: int = 256, num_heads: int = 8,
                 depth: int = 1, cross_depth: int = 1, mlp_ratio: float = 4.0,
                 decoder_channels: int = 256, stem_channels: int = 64, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        if depth < 1 or cross_depth < 1:
            raise ValueError(f"depth and cross_depth must be >= 1, got {depth} and {cross_depth}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.encoder = DualBranchEncoder(
            img_size=img_size, patch_sizes=patch_sizes, dims=(embed_dim, embed_dim),
            heads=(num_heads, num_heads), stages=((depth, depth, cross_depth),),
            mlp_ratios=(mlp_ratio, mlp_ratio, 0.0), fusion="cls", stem="conv",
            stem_kwargs={"stem_channels": stem_channels}, pos_embed="sincos",
            in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        self.decoders = nn.ModuleList(
            TransposedConvDecoder(embed_dim, decoder_channels, p) for p in patch_sizes)
        c = decoder_channels
        self.last_cnn = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, num_classes, 3, padding=1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encoder(x)
        fused = None
        for fmap, cls, decoder in zip(enc.patch_maps(), enc.cls_tokens(), self.decoders):
            up = decoder(fmap + cls[:, :, None, None])
            fused = up if fused is None else fused + up
        return {"segmentation": self.last_cnn(fused)}
