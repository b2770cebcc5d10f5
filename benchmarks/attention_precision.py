"""Forward + backward time of CPU attention in bf16, three ways, at the attention shapes of the
crossvit_seg_small preset at 128x256 (batch 16), and at longer key sequences.

    python benchmarks/attention_precision.py

- fused fp32: scaled_dot_product_attention on inputs widened to fp32;
- fused bf16: scaled_dot_product_attention on the bf16 inputs;
- project: ``crossvit_mtl.models.layers.attention`` on the bf16 inputs, which takes two bf16
  matrix products around an fp32 softmax up to ``SHORT_KEYS`` keys and fused fp32 beyond.

The rows decide ``SHORT_KEYS``: where the explicit products stop beating the fused kernel.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from crossvit_mtl.models.layers import SHORT_KEYS, attention

SHAPES = {  # (heads, queries, keys, head_dim)
    "8-px branch over 128 capped keys; 8-px -> 16-px fusion": (2, 513, 129, 48),
    "16-px branch; 16-px -> 8-px fusion over 128 capped keys": (3, 129, 129, 64),
    "8-px branch over 256 keys": (2, 513, 257, 48),
    "8-px branch, uncapped": (2, 513, 513, 48),
    "thesis_seg 8-px branch": (8, 513, 513, 32),
}

WAYS = {
    "fused fp32": lambda q, k, v: F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype),
    "fused bf16": F.scaled_dot_product_attention,
    "project": attention,
}


def time_attention(way, heads: int, n: int, m: int, d: int, batch: int = 16, repeats: int = 7) -> float:
    q, k, v = (torch.randn(batch, heads, length, d, dtype=torch.bfloat16, requires_grad=True)
               for length in (n, m, m))
    grad = torch.randn(batch, heads, n, d, dtype=torch.bfloat16)

    def step():
        torch.autograd.grad(way(q, k, v), (q, k, v), grad)

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SHORT_KEYS={SHORT_KEYS}")
    print("| shape (heads, queries, keys, head dim) | " + " | ".join(f"{w} ms" for w in WAYS)
          + " | fused fp32 / project |")
    print("|---|" + "---:|" * (len(WAYS) + 1))
    for name, shape in SHAPES.items():
        ms = {w: time_attention(fn, *shape) for w, fn in WAYS.items()}
        cells = " | ".join(f"{t:.1f}" for t in ms.values())
        print(f"| {name} {shape} | {cells} | {ms['fused fp32'] / ms['project']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
