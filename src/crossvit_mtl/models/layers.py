"""Transformer and stem layers every model in the zoo is built from, written once."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def LayerNorm(dim: int) -> nn.LayerNorm:
    """LayerNorm with eps 1e-6, as ViT and CrossViT use (so their weights load exactly)."""
    return nn.LayerNorm(dim, eps=1e-6)


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample during training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


#: attention scores (counted at 4 bytes each) that CPU bf16 attention computes at once: batches
#: with more run in chunks of samples; a sample with more takes the fused kernel (see :func:`attention`)
SCORE_CHUNK_BYTES = 16 * 2**20
#: most scores (at 4 bytes each) one attention call keeps for backward on the explicit path
SCORE_MAX_BYTES = 256 * 2**20


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    # the softmax reads bf16 scores and sums in fp32 (PyTorch's CPU kernel); its backward alike
    probs = torch.matmul(q, k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5).softmax(dim=-1)
    return torch.matmul(F.dropout(probs, dropout_p) if dropout_p else probs, v)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Softmax attention of (B, h, N, d) queries over (B, h, M, d) keys and values, scaled by
    1/sqrt(d): scaled_dot_product_attention, except for bf16 on CPU at moderate lengths.

    There two bf16 matrix products around a softmax of the bf16 scores (summed in fp32 inside
    PyTorch's kernel) beat PyTorch's fused kernel (in fp32 or bf16) at every attention shape of
    the presets and the thesis network (``benchmarks/attention_precision.py``), provided the
    scores come in cache-sized blocks: a batch runs in chunks of samples whose scores fit
    ``SCORE_CHUNK_BYTES``, which also keeps each block small enough for glibc to reuse rather
    than page-fault anew. A sample with more scores than a chunk (long sequences), or a call
    with more than ``SCORE_MAX_BYTES`` to keep for backward, takes the fused kernel, which never
    materialises them and at such lengths runs faster in bf16 than in fp32. Scores and
    probabilities are rounded to bf16 as autocast rounds any matrix product's inputs and outputs;
    no fp32 copy of them is made.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        batch, heads, queries, _ = q.shape
        per_sample = heads * queries * k.shape[-2] * 4
        if per_sample <= SCORE_CHUNK_BYTES and batch * per_sample <= SCORE_MAX_BYTES:
            step = SCORE_CHUNK_BYTES // per_sample
            if step >= batch or not batch == k.shape[0] == v.shape[0]:
                return _explicit_attention(q, k, v, dropout_p)
            return torch.cat([_explicit_attention(*chunk, dropout_p)
                              for chunk in zip(q.split(step), k.split(step), v.split(step))])
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


def kv_pool_factor(grid: tuple[int, int], kv_tokens: int | None, min_factor: int = 1) -> int:
    """Smallest pooling factor k >= ``min_factor`` with ceil(gh/k) * ceil(gw/k) <= ``kv_tokens``
    (``min_factor`` when ``kv_tokens`` is None).

    Plain Python ints, so an export traced at a fixed size bakes the factor in as a constant.
    """
    k = max(1, int(min_factor))
    if kv_tokens is None:
        return k
    if kv_tokens < 1:
        raise ValueError(f"kv_tokens must be >= 1, got {kv_tokens}")
    gh, gw = int(grid[0]), int(grid[1])  # tensors while tracing for export
    while -(-gh // k) * -(-gw // k) > kv_tokens:
        k += 1
    return k


def pool_kv_tokens(x: torch.Tensor, grid: tuple[int, int], kv_tokens: int | None,
                   min_factor: int = 1) -> torch.Tensor:
    """Keys/values for ``x`` (B, 1+N, C), CLS first, N patch tokens on ``grid``: the patch grid
    average-pooled (ceil mode) by :func:`kv_pool_factor`, the CLS token kept in front.

    Capping the keys at ``kv_tokens`` is PVTv2's linear spatial-reduction attention: N queries
    attend to a bounded number of keys, so attention grows linearly with the image area instead
    of quadratically. Factor 1 returns ``x`` itself, so models below the cap compute exactly what
    they would without it.
    """
    k = kv_pool_factor(grid, kv_tokens, min_factor)
    if k == 1:
        return x
    b, _, c = x.shape
    patches = x[:, 1:].transpose(1, 2).reshape(b, c, *grid)
    pooled = F.avg_pool2d(patches, k, ceil_mode=True).flatten(2).transpose(1, 2)
    return torch.cat([x[:, :1], pooled], dim=1)


class _MultiHeadAttention(nn.Module):
    """What self- and cross-attention share: heads, output projection, the SDPA call.

    Each head has its own projections (one matrix split into heads) and the scores are scaled
    by 1/sqrt(head_dim), which is what scaled_dot_product_attention does.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h = self.num_heads
        out = attention(_split_heads(q, h), _split_heads(k, h), _split_heads(v, h),
                        dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(_merge_heads(out)))


class CrossAttention(_MultiHeadAttention):
    """Multi-head attention with queries from ``x`` and keys/values from ``context``.

    ``context_dim`` may differ from ``dim``: keys and values are projected into the query's
    width, which is how two branches of different widths attend to each other.
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, attn_drop, proj_drop)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=qkv_bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(context).chunk(2, dim=-1)
        return self.attend(self.q(x), k, v)


class Attention(_MultiHeadAttention):
    """Multi-head self-attention: one fused q/k/v projection, then the same SDPA path.

    With ``kv_tokens`` and a ``grid``, keys/values come from the patch grid pooled to at most
    ``kv_tokens`` (:func:`pool_kv_tokens`): q and k/v are then the fused matrix's rows applied to
    ``x`` and to the pooled tokens, so the parameters (and published ``qkv`` weights) stay as they are.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, kv_tokens: int | None = None):
        super().__init__(dim, num_heads, attn_drop, proj_drop)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.kv_tokens = kv_tokens

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        context = x if grid is None else pool_kv_tokens(x, grid, self.kv_tokens)
        if context is x:
            return self.attend(*self.qkv(x).chunk(3, dim=-1))
        dim = x.shape[-1]
        w_q, w_kv = self.qkv.weight.split([dim, 2 * dim])
        b_q, b_kv = self.qkv.bias.split([dim, 2 * dim]) if self.qkv.bias is not None else (None, None)
        k, v = F.linear(context, w_kv, b_kv).chunk(2, dim=-1)
        return self.attend(F.linear(x, w_q, b_q), k, v)


class PooledAttention(CrossAttention):
    """Self-attention whose keys and values come from the patch grid average-pooled by
    ``kv_pool`` (the CLS token kept): PVT/SegFormer's spatial reduction. A 512-token branch
    attends over 128 keys, a quarter of the cost, which is what makes the 8-px branch cheap.

    ``kv_tokens`` raises the factor above ``kv_pool`` where needed to keep at most that many
    pooled patch tokens (:func:`pool_kv_tokens`), so the cost stays linear at high resolution.
    """

    def __init__(self, dim: int, num_heads: int, kv_pool: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, kv_tokens: int | None = None):
        super().__init__(dim, num_heads, None, qkv_bias, attn_drop, proj_drop)
        self.kv_pool = kv_pool
        self.kv_tokens = kv_tokens

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, pool_kv_tokens(x, grid, self.kv_tokens, self.kv_pool))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x))).

    ``kv_pool > 1`` pools keys/values over the patch grid (then ``forward`` needs ``grid``);
    ``kv_tokens`` caps the pooled keys (see :func:`pool_kv_tokens`; needs ``grid`` too).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, kv_pool: int = 1,
                 kv_tokens: int | None = None):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = (PooledAttention(dim, num_heads, kv_pool, qkv_bias, attn_drop, drop, kv_tokens)
                     if kv_pool > 1 else Attention(dim, num_heads, qkv_bias, attn_drop, drop, kv_tokens))
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossBlock(nn.Module):
    """Pre-norm cross-attention block: queries attend to another sequence, with a residual.

    ``mlp_ratio=0`` leaves out the MLP, as CrossViT's CLS fusion does. With ``kv_tokens`` and a
    ``context_grid`` (the context is then CLS + patch grid), the normalised context is pooled to
    at most ``kv_tokens`` patch tokens before the key/value projection (:func:`pool_kv_tokens`).
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None,
                 mlp_ratio: float = 0.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, kv_tokens: int | None = None):
        super().__init__()
        self.norm_q = LayerNorm(dim)
        self.norm_kv = LayerNorm(context_dim or dim)
        self.attn = CrossAttention(dim, num_heads, context_dim, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim) if mlp_ratio > 0 else None
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop) if mlp_ratio > 0 else None
        self.kv_tokens = kv_tokens

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                context_grid: tuple[int, int] | None = None) -> torch.Tensor:
        context = self.norm_kv(context)
        if context_grid is not None:
            context = pool_kv_tokens(context, context_grid, self.kv_tokens)
        x = x + self.drop_path(self.attn(self.norm_q(x), context))
        if self.mlp is not None and self.norm2 is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class PatchEmbed(nn.Module):
    """ViT's linear patchify: a conv with kernel = stride = patch size, tokens out."""

    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class ConvStem(nn.Module):
    """The thesis's feature embedding: conv(k=s=patch) -> 64, BN, ReLU; two conv3x3 -> dim, BN, ReLU."""

    def __init__(self, patch_size: int, in_chans: int, dim: int, stem_channels: int = 64):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Sequential(
            *_conv_bn_relu(in_chans, stem_channels, patch_size, patch_size),
            *_conv_bn_relu(stem_channels, dim, 3, 1, 1),
            *_conv_bn_relu(dim, dim, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class MultiConvPatchEmbed(nn.Module):
    """CrossViT-dagger's patch embedding: three convolutions whose strides multiply to the patch."""

    STRIDES = {12: (4, 3, 1), 16: (4, 2, 2)}

    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        if patch_size not in self.STRIDES:
            raise ValueError(f"multi-conv patch embedding supports patch sizes {sorted(self.STRIDES)}, "
                             f"got {patch_size}")
        self.patch_size = patch_size
        s1, s2, s3 = self.STRIDES[patch_size]
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, dim // 4, 7, s1, 3), nn.ReLU(inplace=True),
            nn.Conv2d(dim // 4, dim // 2, 3, s2, 1 if s2 == 2 else 0), nn.ReLU(inplace=True),
            nn.Conv2d(dim // 2, dim, 3, s3, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


STEMS = {"linear": PatchEmbed, "conv": ConvStem, "multi_conv": MultiConvPatchEmbed}


def sincos_pos_embed(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sinusoidal positions (MAE/MoCo-v3 style): (grid_h * grid_w, dim)."""
    if dim % 4:
        raise ValueError(f"sinusoidal positions need a width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64),
                            torch.arange(grid_w, dtype=torch.float64), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    out_y = ys.reshape(-1, 1) * omega
    out_x = xs.reshape(-1, 1) * omega
    emb = torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)
    return emb.float()


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic interpolation of learned patch positions (1, N, C) to another grid."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    c = pos.shape[-1]
    grid = pos.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c).to(pos.dtype)


def check_divisible(height: int, width: int, patch: int, what: str = "input size") -> None:
    if height % patch or width % patch:
        raise ValueError(f"{what} {height}x{width} is not divisible by the patch size {patch}")


def trunc_normal_init(module: nn.Module) -> None:
    """ViT initialisation: truncated normal linears, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

