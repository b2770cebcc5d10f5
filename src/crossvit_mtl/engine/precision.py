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


#: what ``--precision`` accepts outside training: the project's default, or one forced
PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str) -> str:
    """``auto`` is the project's default (:func:`auto_precision`): bf16 autocast where the CPU
    multiplies bf16 natively, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if auto_precision("cpu") == "bf16-mixed" else "fp32"


def cpu_autocast(precision: str) -> torch.autocast:
    """bf16 autocast on the CPU for ``"bf16"``; a disabled one (plain fp32) for ``"fp32"``."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=resolve_precision(precision) == "bf16")
