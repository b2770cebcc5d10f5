"""Cross-task attention: the thesis's cross-attention idea applied between tasks instead of branches.

Each dense task gets its own 1x1 projection of the shared decoder map. On a pooled grid (stride 8
for the default presets, so the cost stays a small share of the decoder) every task's tokens
attend to the other tasks' tokens; the message is upsampled and added to the task's own map
(pre-norm, residual), so depth can borrow segmentation's edges and the other way round.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossvit_mtl.models.layers import CrossAttention, trunc_normal_init


class CrossTaskAttention(nn.Module):
    """``forward(features) -> {task: map}``: one map per task, each the shape of ``features``.

    Args:
        tasks: the dense tasks (at least two: a task alone has no one to attend to).
        channels: width of the shared decoder map.
        num_heads: attention heads (``channels`` must divide by it).
        pool: average-pooling factor from the decoder map to the attention grid.
    """

    def __init__(self, tasks: Sequence[str], channels: int, num_heads: int = 1, pool: int = 1):
        super().__init__()
        self.tasks = list(tasks)
        if len(self.tasks) < 2:
            raise ValueError(f"cross-task attention needs at least two dense tasks, got {self.tasks}")
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.pool = pool
        self.proj = nn.ModuleDict({t: nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False),
                                                    nn.BatchNorm2d(channels), nn.GELU())
                                   for t in self.tasks})
        self.norm_q = nn.ModuleDict({t: nn.LayerNorm(channels) for t in self.tasks})
        self.norm_kv = nn.ModuleDict({t: nn.LayerNorm(channels) for t in self.tasks})
        self.attn = nn.ModuleDict({t: CrossAttention(channels, num_heads) for t in self.tasks})
        self.attn.apply(trunc_normal_init)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = {t: self.proj[t](features) for t in self.tasks}
        pooled = {t: F.avg_pool2d(m, self.pool, ceil_mode=True) if self.pool > 1 else m for t, m in maps.items()}
        grid = next(iter(pooled.values())).shape[-2:]
        tokens = {t: p.flatten(2).transpose(1, 2) for t, p in pooled.items()}
        out = {}
        for task in self.tasks:
            context = torch.cat([self.norm_kv[task](tokens[o]) for o in self.tasks if o != task], dim=1)
            message = self.attn[task](self.norm_q[task](tokens[task]), context)
            message = message.transpose(1, 2).reshape(features.shape[0], -1, *grid)
            if message.shape[-2:] != features.shape[-2:]:
                message = F.interpolate(message, size=features.shape[-2:], mode="bilinear", align_corners=False)
            out[task] = maps[task] + message
        return out
