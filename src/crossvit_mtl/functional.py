"""Small tensor operations shared by the models, the task losses and metrics, and inference.

``unit_vectors`` replaces ``torch.nn.functional.normalize`` over the channel axis of dense maps:
PyTorch's CPU norm reduces the 3-channel axis of a (B, 3, H, W) map many times slower than a
plain sum of squares (``python benchmarks/unit_vectors.py``), and the normals head and loss did it
three times per training step: 22 % of crossvit_mtl_small's step on four tasks.
"""
from __future__ import annotations

import torch


def unit_vectors(x: torch.Tensor, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(||x||, eps)`` along ``dim``, as ``F.normalize`` computes it (all-zero stays zero)."""
    return x * torch.rsqrt((x * x).sum(dim, keepdim=True).clamp_min(eps * eps))
