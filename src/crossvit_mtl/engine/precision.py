"""Choosing the numeric precision: bf16 autocast where the hardware multiplies bf16 natively."""
from __future__ import annotations

import torch


def cpu_has_bf16_matmul() -> bool:
    """AMX tiles or AVX512-BF16: bf16 matrix products run at several times the fp32 rate."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def auto_precision(accelerator: str = "auto") -> str:
    """Lightning precision string: "bf16-mixed" on bf16-capable CUDA or CPU, else "32-true"."""
    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_bf16_matmul() else "32-true"
