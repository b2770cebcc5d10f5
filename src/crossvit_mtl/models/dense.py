"""Dense prediction on the dual-branch encoder: the improved segmentation family and the
multi-task network (one shared encoder + decoder, one head per task)."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from crossvit_mtl.models.decoders import LightDecoder
from crossvit_mtl.models.encoders import DualBranchEncoder
from crossvit_mtl.models.heads import DENSE_TASKS, ClsHead, DenseHead

ALL_TASKS = DENSE_TASKS + ("classification",)


def _check_tasks(tasks: Mapping[str, int]) -> dict[str, int]:
    if not tasks:
        raise ValueError("tasks must name at least one task")
    fixed = {"depth": 1, "normal": 3}
    for task, channels in tasks.items():
        if task not in ALL_TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {ALL_TASKS}")
        if task in fixed and channels != fixed[task]:
            raise ValueError(f"task {task!r} has {fixed[task]} output channels, got {channels}")
        if task in ("segmentation", "classification") and channels < 2:
            raise ValueError(f"task {task!r} needs at least 2 classes, got {channels}")
    return dict(tasks)


class DenseCrossViT(nn.Module):
    """Returns ``{task: output}``: dense outputs at input resolution (segmentation logits,
    positive depth, unit normals) and classification logits from the two CLS tokens."""

    def __init__(self, tasks: Mapping[str, int], img_size: Sequence[int] = (128, 256),
                 patch_sizes: Sequence[int] = (8, 16), dims: Sequence[int] = (96, 192),
                 heads: Sequence[int] = (3, 6), stages: Sequence[Sequence[int]] = ((1, 3, 1),) * 3,
                 mlp_ratios: Sequence[float] = (4.0, 4.0, 4.0), fusion: str = "tokens",
                 kv_pool: Sequence[int] = (2, 1),
                 decoder_channels: int = 96, decoder_stages: int = 2, detail_channels: int = 32,
                 in_chans: int = 3,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1):
        super().__init__()
        self.tasks = _check_tasks(tasks)
        if not 1 <= decoder_stages <= len(stages):
            raise ValueError(f"decoder_stages must be in [1, {len(stages)}], got {decoder_stages}")
        self.encoder = DualBranchEncoder(
            img_size=img_size, patch_sizes=patch_sizes, dims=dims, heads=heads, stages=stages,
            mlp_ratios=mlp_ratios, fusion=fusion, stem="linear", pos_embed="learned", kv_pool=kv_pool,
            in_chans=in_chans, qkv_bias=qkv_bias, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate)
        dense = [t for t in self.tasks if t in DENSE_TASKS]
        self.decoder = (LightDecoder(tuple(dims), decoder_channels, decoder_stages, detail_channels, in_chans)
                        if dense else None)
        self.heads = nn.ModuleDict(
            {t: DenseHead(t, decoder_channels, self.tasks[t]) for t in dense})
        if "classification" in self.tasks:
            self.heads["classification"] = ClsHead(tuple(dims), self.tasks["classification"], drop_rate)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encoder(x)
        size = (x.shape[-2], x.shape[-1])
        feats = self.decoder(enc, x) if self.decoder is not None else None
        out = {}
        for task, head in self.heads.items():
            out[task] = head(enc.cls_tokens()) if task == "classification" else head(feats, size)
        return out


class CrossViTSeg(DenseCrossViT):
    """The segmentation family: the dense network with a single segmentation head."""

    def __init__(self, num_classes: int = 8, **kwargs):
        super().__init__(tasks={"segmentation": num_classes}, **kwargs)
        self.num_classes = num_classes
