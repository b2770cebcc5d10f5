"""The dual-branch encoder: two patch sizes, per-branch transformer blocks, cross-branch fusion.

Every model of the zoo (CrossViT classifiers, the thesis network, the dense families) runs this
encoder; they differ in stems, positions, widths, depths and the fusion they choose.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from crossvit_mtl.models.layers import (
    STEMS,
    Block,
    CrossBlock,
    LayerNorm,
    check_divisible,
    kv_pool_factor,
    resize_pos_embed,
    sincos_pos_embed,
    trunc_normal_init,
)


def _projection(dim_in: int, dim_out: int) -> nn.Sequential:
    """CrossViT's LN -> GELU -> Linear map between branch widths."""
    return nn.Sequential(LayerNorm(dim_in), nn.GELU(), nn.Linear(dim_in, dim_out))


class ClsFusion(nn.Module):
    """CrossViT's exchange: each branch's CLS, projected to the other width, queries the other
    branch's patch tokens by cross-attention, and is projected back home.

    Only the CLS tokens change; patch tokens learn of the other branch through the CLS in the
    following self-attention (or, in the thesis network, when the CLS is added to the map).
    """

    def __init__(self, dims: Sequence[int], heads: Sequence[int], depth: int = 1,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.projs = nn.ModuleList()
        self.fusion = nn.ModuleList()
        self.revert_projs = nn.ModuleList()
        for i in range(2):
            j = 1 - i
            self.projs.append(_projection(dims[i], dims[j]))
            self.fusion.append(nn.ModuleList(
                CrossBlock(dims[j], heads[j], mlp_ratio=0.0, qkv_bias=qkv_bias, drop=drop,
                           attn_drop=attn_drop, drop_path=drop_path)
                for _ in range(max(1, depth))))
            self.revert_projs.append(_projection(dims[j], dims[i]))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i in range(2):
            other = xs[1 - i]
            cls = self.projs[i](xs[i][:, :1])
            for block in self.fusion[i]:  # type: ignore[attr-defined]  # a ModuleList per branch
                cls = block(cls, torch.cat([cls, other[:, 1:]], dim=1))
            out.append(torch.cat([self.revert_projs[i](cls), xs[i][:, 1:]], dim=1))
        return out


class TokenFusion(nn.Module):
    """Dense fusion: every token of each branch cross-attends to the tokens of the other branch.

    Costs N_small x N_large attention per direction (not N^2), and gives every patch token, not
    only the CLS, the other scale's context, which is what dense prediction needs. N_small x N_large
    still grows with the square of the image area, so ``kv_tokens`` pools the other branch's patch
    grid to at most that many tokens (its CLS kept; ``forward`` then needs the ``grids``), which
    makes the cost linear in the area, as in PVTv2's linear spatial-reduction attention.
    """

    def __init__(self, dims: Sequence[int], heads: Sequence[int], depth: int = 1,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, kv_tokens: int | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                CrossBlock(dims[i], heads[i], context_dim=dims[1 - i], mlp_ratio=mlp_ratio,
                           qkv_bias=qkv_bias, drop=drop, attn_drop=attn_drop, drop_path=drop_path,
                           kv_tokens=kv_tokens)
                for i in range(2))
            for _ in range(max(1, depth)))

    def forward(self, xs: list[torch.Tensor],
                grids: Sequence[tuple[int, int]] | None = None) -> list[torch.Tensor]:
        g = list(grids) if grids is not None else [None, None]
        for pair in self.blocks:
            first, second = cast(nn.ModuleList, pair)
            xs = [first(xs[0], xs[1], g[1]), second(xs[1], xs[0], g[0])]
        return xs


FUSIONS = ("cls", "tokens")


class MultiScaleStage(nn.Module):
    """One CrossViT multi-scale block: ``depths = (small-branch blocks, large-branch blocks,
    fusion depth)`` followed by the chosen fusion. ``kv_tokens`` caps the keys/values of the
    branches' self-attention and of token fusion (see ``layers.pool_kv_tokens``)."""

    def __init__(self, dims: Sequence[int], heads: Sequence[int], depths: Sequence[int],
                 mlp_ratios: Sequence[float], fusion: str, drop_paths: Sequence[float],
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 kv_pool: Sequence[int] = (1, 1), kv_tokens: int | None = None):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        n_blocks = max(depths[0], depths[1])
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                Block(dims[i], heads[i], mlp_ratios[i], qkv_bias, drop, attn_drop, drop_paths[k], kv_pool[i],
                      kv_tokens)
                for k in range(depths[i]))
            for i in range(2))
        fusion_drop_path = drop_paths[n_blocks - 1] if n_blocks else 0.0
        self.fusion: ClsFusion | TokenFusion
        if fusion == "cls":
            self.fusion = ClsFusion(dims, heads, depths[2], qkv_bias, drop, attn_drop, fusion_drop_path)
        else:
            self.fusion = TokenFusion(dims, heads, depths[2], mlp_ratios[2], qkv_bias, drop,
                                      attn_drop, fusion_drop_path, kv_tokens)

    def forward(self, xs: list[torch.Tensor], grids: list[tuple[int, int]]) -> list[torch.Tensor]:
        out = []
        for blocks, x, grid in zip(self.blocks, xs, grids):
            for block in blocks:  # type: ignore[attr-defined]  # a ModuleList per branch
                x = block(x, grid)
            out.append(x)
        return self.fusion(out, grids) if isinstance(self.fusion, TokenFusion) else self.fusion(out)


@dataclass
class EncoderOutput:
    """Token sequences (CLS first) per stage and branch, and each branch's patch grid."""

    stages: list[list[torch.Tensor]]
    grids: list[tuple[int, int]]

    def patch_maps(self, stage: int = -1) -> list[torch.Tensor]:
        """Patch tokens of one stage as (B, C, gh, gw) maps, one per branch."""
        maps = []
        for tokens, (gh, gw) in zip(self.stages[stage], self.grids):
            b, _, c = tokens.shape
            maps.append(tokens[:, 1:].transpose(1, 2).reshape(b, c, gh, gw))
        return maps

    def cls_tokens(self, stage: int = -1) -> list[torch.Tensor]:
        return [tokens[:, 0] for tokens in self.stages[stage]]


class DualBranchEncoder(nn.Module):
    """Two branches with patch sizes ``patch_sizes`` and widths ``dims``.

    ``kv_pool`` per branch average-pools keys/values over the patch grid in self-attention.
    ``kv_tokens`` (None: no cap) pools every patch grid that keys/values come from, in
    self-attention (by at least ``kv_pool``) and in token fusion, by the smallest integer factor
    that leaves at most ``kv_tokens`` patch tokens (CLS kept): attention then costs
    O(N * kv_tokens) instead of O(N^2), linear in the image area, as PVTv2's linear
    spatial-reduction attention. It adds no parameters.
    ``img_size`` is the size the model is created for (its learned positions fit that grid; other
    sizes interpolate them). ``branch_sizes`` instead fixes each branch's input (H, W): whatever
    the image, branch i sees it resized (bicubic) to ``branch_sizes[i]``, which is how the
    published CrossViT feeds 240 px to its 12-px branch and 224 px to its 16-px branch.
    """

    def __init__(self, img_size: Sequence[int] = (128, 256), patch_sizes: Sequence[int] = (8, 16),
                 dims: Sequence[int] = (96, 192), heads: Sequence[int] = (3, 6),
                 stages: Sequence[Sequence[int]] = ((1, 3, 1),) * 3,
                 mlp_ratios: Sequence[float] = (4.0, 4.0, 4.0), fusion: str = "tokens",
                 stem: str = "linear", stem_kwargs: dict | None = None,
                 pos_embed: str = "learned", in_chans: int = 3,
                 branch_sizes: Sequence[Sequence[int]] | None = None, kv_pool: Sequence[int] = (1, 1),
                 kv_tokens: int | None = None, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        kv_pool_factor((1, 1), kv_tokens)  # the one check of the cap, here at construction rather than the first forward
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {sorted(STEMS)}, got {stem!r}")
        if pos_embed not in ("learned", "sincos"):
            raise ValueError(f"pos_embed must be 'learned' or 'sincos', got {pos_embed!r}")
        self.img_size = tuple(img_size)
        self.patch_sizes = tuple(patch_sizes)
        self.dims = tuple(dims)
        self.branch_sizes = None if branch_sizes is None else tuple(tuple(int(v) for v in s) for s in branch_sizes)
        for size, patch in zip(self.branch_sizes or (), self.patch_sizes):
            check_divisible(size[0], size[1], patch, "branch size")
        self.pos_embed_kind = pos_embed
        self.num_stages = len(stages)
        self.patch_embed = nn.ModuleList(
            STEMS[stem](p, in_chans, d, **(stem_kwargs or {})) for p, d in zip(patch_sizes, dims))
        self.cls_token = nn.ParameterList(nn.Parameter(torch.zeros(1, 1, d)) for d in dims)
        self.base_grids = [self._grid(self.img_size[0], self.img_size[1], i) for i in range(2)]
        if pos_embed == "learned":
            self.pos_embed = nn.ParameterList(
                nn.Parameter(torch.zeros(1, 1 + gh * gw, d)) for (gh, gw), d in zip(self.base_grids, dims))
        else:
            self.pos_embed = None  # type: ignore[assignment]  # fixed sinusoidal positions
        self.pos_drop = nn.Dropout(drop_rate)

        total = sum(max(s[0], s[1]) for s in stages)
        rates = torch.linspace(0, drop_path_rate, max(total, 1), device="cpu").tolist()
        self.stages = nn.ModuleList()
        offset = 0
        for depths in stages:
            n = max(depths[0], depths[1])
            self.stages.append(MultiScaleStage(dims, heads, depths, mlp_ratios, fusion,
                                               rates[offset:offset + n] or [0.0], qkv_bias,
                                               drop_rate, attn_drop_rate, kv_pool, kv_tokens))
            offset += n
        self._init_weights()

    def _init_weights(self) -> None:
        if self.pos_embed is not None:
            for p in self.pos_embed:
                nn.init.trunc_normal_(p, std=0.02)
        for p in self.cls_token:
            nn.init.trunc_normal_(p, std=0.02)
        self.stages.apply(trunc_normal_init)

    def _branch_size(self, height: int, width: int, i: int) -> tuple[int, int]:
        if self.branch_sizes is not None:
            height, width = self.branch_sizes[i]
            return height, width
        return int(height), int(width)  # tensors while tracing for export

    def _grid(self, height: int, width: int, i: int) -> tuple[int, int]:
        h, w = self._branch_size(height, width, i)
        return h // self.patch_sizes[i], w // self.patch_sizes[i]

    def check_input_size(self, height: int, width: int) -> None:
        """Branches fed the input as it is need it to divide by their patch size."""
        if self.branch_sizes is None:
            for p in self.patch_sizes:
                check_divisible(height, width, p)

    def _positions(self, i: int, grid: tuple[int, int], dtype: torch.dtype, device) -> torch.Tensor:
        if self.pos_embed is None:
            pos = sincos_pos_embed(grid[0], grid[1], self.dims[i]).to(device=device, dtype=dtype)
            return torch.cat([pos.new_zeros(1, self.dims[i]), pos]).unsqueeze(0)
        pos = self.pos_embed[i]
        patch_pos = resize_pos_embed(pos[:, 1:], self.base_grids[i], grid)
        return torch.cat([pos[:, :1], patch_pos], dim=1)

    def embed(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """Stems, CLS tokens and positions: the token sequences entering the first stage."""
        height, width = x.shape[-2:]
        self.check_input_size(height, width)
        tokens, grids = [], []
        for i, stem in enumerate(self.patch_embed):
            size = self._branch_size(height, width, i)
            xi = x if size == (height, width) else F.interpolate(
                x, size=size, mode="bicubic", align_corners=False)
            feat = stem(xi)
            grid = (feat.shape[-2], feat.shape[-1])
            seq = feat.flatten(2).transpose(1, 2)
            seq = torch.cat([self.cls_token[i].expand(seq.shape[0], -1, -1).to(seq.dtype), seq], dim=1)
            tokens.append(self.pos_drop(seq + self._positions(i, grid, seq.dtype, seq.device)))
            grids.append(grid)
        return tokens, grids

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        xs, grids = self.embed(x)
        outputs = []
        for stage in self.stages:
            xs = stage(xs, grids)
            outputs.append(xs)
        return EncoderOutput(outputs, grids)
