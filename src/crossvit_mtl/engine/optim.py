"""Optimisers and learning-rate schedules: the thesis's Adam and a modern AdamW + warm-up + cosine."""
from __future__ import annotations

import math

import torch
from torch import nn

#: parameter names (substrings) that never get weight decay, besides every 1-D tensor
NO_DECAY_NAMES = ("pos_embed", "cls_token")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norms, biases, positional embeddings and CLS tokens."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or any(key in name for key in NO_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


#: devices with PyTorch's fused Adam/AdamW kernels that this project runs on
FUSED_DEVICES = ("cpu", "cuda")


def fused_step(params) -> dict[str, bool]:
    """``{"fused": True}`` when every parameter is a floating-point tensor on the CPU or one CUDA
    device: Adam and AdamW then update all parameters in one kernel instead of about ten
    elementwise operators per tensor; otherwise PyTorch's default implementation."""
    params = list(params)
    devices = {p.device for p in params}
    ok = (params and len(devices) == 1 and next(iter(devices)).type in FUSED_DEVICES
          and all(p.is_floating_point() for p in params))
    return {"fused": True} if ok else {}


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.999), momentum: float = 0.9) -> torch.optim.Optimizer:
    """``name``: ``adam``, ``adamw`` or ``sgd`` (``options.OptimizerName``; the config's type checks
    it and the values, torch's optimisers refuse what they cannot use). Adam and AdamW take the
    fused step (:func:`fused_step`)."""
    if name == "adam":  # the thesis's setting: plain Adam, L2 only if asked for
        params = list(model.parameters())
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, **fused_step(params))
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **fused_step(p for g in groups for p in g["params"]))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise ValueError(f"no optimizer {name!r}")


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.01):
    """Multiplier for LambdaLR: linear warm-up from ~0, then cosine decay to ``min_ratio``."""
    total_steps = max(total_steps, 1)
    warmup_steps = min(max(warmup_steps, 0), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor
