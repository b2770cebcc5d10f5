"""Forward + backward time of scaled_dot_product_attention in fp32 and bf16 on this machine,
for the attention shapes of the crossvit_seg_small preset at 128x256 (batch 16).

    python benchmarks/attention_precision.py

Why the layers run CPU attention in fp32 under bf16 autocast: PyTorch's fused CPU kernel is
slower in bf16 than in fp32 at these head sizes, unlike the matrix products around it.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = {  # (heads, queries, keys, head_dim)
    "8-px branch, pooled keys": (3, 513, 129, 32),
    "8-px branch, full keys": (3, 513, 513, 32),
    "16-px branch": (6, 129, 129, 32),
    "16-px -> 8-px fusion": (6, 129, 513, 32),
}


def time_attention(dtype: torch.dtype, heads: int, n: int, m: int, d: int, batch: int = 16,
                   repeats: int = 7) -> float:
    q = torch.randn(batch, heads, n, d, dtype=dtype, requires_grad=True)
    k = torch.randn(batch, heads, m, d, dtype=dtype, requires_grad=True)
    v = torch.randn(batch, heads, m, d, dtype=dtype, requires_grad=True)

    def step():
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| shape (heads, queries, keys, head dim) | fp32 ms | bf16 ms | bf16 / fp32 |")
    print("|---|---:|---:|---:|")
    for name, shape in SHAPES.items():
        fp32 = time_attention(torch.float32, *shape)
        bf16 = time_attention(torch.bfloat16, *shape)
        print(f"| {name} {shape} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f} |")


if __name__ == "__main__":
    main()
