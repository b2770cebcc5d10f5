"""Forward + backward time of CPU attention in bf16, four ways, at the attention shapes of the
presets (batch 16) and the thesis network, and at longer sequences.

    python benchmarks/attention_precision.py [--system-malloc] [--device cuda]

- fused fp32: scaled_dot_product_attention on inputs widened to fp32;
- fused bf16: scaled_dot_product_attention on the bf16 inputs;
- explicit, whole batch: two bf16 matrix products around an fp32 softmax over all samples at once;
- project: ``crossvit_mtl.models.layers.attention``: the same products in chunks of samples whose
  fp32 scores fit ``SCORE_CHUNK_BYTES``, and fused bf16 for a sample with more.

Host memory is kept for reuse as the command line keeps it (``engine/host_memory.py``);
``--system-malloc`` leaves glibc as it is, where whole-batch scores above its mmap threshold are
page-faulted at every call. The rows decide ``SCORE_CHUNK_BYTES``. On CUDA (``--device``) the
project's way is the fused kernel, so the rows show what the explicit products would cost there.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from crossvit_mtl.engine.host_memory import keep_host_memory
from crossvit_mtl.engine.precision import DEVICES, resolve
from crossvit_mtl.models import layers
from crossvit_mtl.models.layers import SCORE_CHUNK_BYTES, attention

SHAPES = {  # (heads, queries, keys, head_dim)
    "8-px branch over 128 capped keys; 8-px -> 16-px fusion": (2, 513, 129, 48),
    "16-px branch; 16-px -> 8-px fusion over 128 capped keys": (3, 129, 129, 64),
    "8-px branch over 256 keys": (2, 513, 257, 48),
    "8-px branch, uncapped": (2, 513, 513, 48),
    "thesis_seg 8-px branch": (8, 513, 513, 32),
    "8-px branch at 256x512 over 512 keys": (2, 2049, 513, 48),
    "8-px branch at 512x1024 over 128 capped keys": (2, 8193, 129, 48),
    "8-px branch at 256x512, uncapped (scores beyond a chunk)": (2, 2049, 2049, 48),
}

WAYS = {
    "fused fp32": lambda q, k, v: F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype),
    "fused bf16": F.scaled_dot_product_attention,
    "explicit, whole batch": lambda q, k, v: layers._explicit_attention(q, k, v, 0.0),
    "project": attention,
}


def time_attention(way, heads: int, n: int, m: int, d: int, batch: int = 16, repeats: int = 7,
                   device: torch.device | None = None) -> float:
    device = device or torch.device("cpu")
    q, k, v = (torch.randn(batch, heads, length, d, dtype=torch.bfloat16, device=device, requires_grad=True)
               for length in (n, m, m))
    grad = torch.randn(batch, heads, n, d, dtype=torch.bfloat16, device=device)

    def step():
        torch.autograd.grad(way(q, k, v), (q, k, v), grad)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system-malloc", action="store_true", help="leave glibc's allocator as it is")
    parser.add_argument("--device", default="cpu", help=f"{DEVICES} (default cpu, the case the rows decide)")
    args = parser.parse_args()
    try:
        where = resolve(args.device, "bf16")
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    kept = not args.system_malloc and keep_host_memory()
    print(f"torch {torch.__version__}, {where.device} ({where.name}), {torch.get_num_threads()} threads, batch 16, "
          f"SCORE_CHUNK_BYTES={SCORE_CHUNK_BYTES // 2**20} MiB, host memory {'kept' if kept else 'system'}")
    print("| shape (heads, queries, keys, head dim) | " + " | ".join(f"{w} ms" for w in WAYS)
          + " | fused fp32 / project |")
    print("|---|" + "---:|" * (len(WAYS) + 1))
    for name, shape in SHAPES.items():
        ms = {w: time_attention(fn, *shape, device=where.device) for w, fn in WAYS.items()}
        cells = " | ".join(f"{t:.1f}" for t in ms.values())
        print(f"| {name} {shape} | {cells} | {ms['fused fp32'] / ms['project']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
