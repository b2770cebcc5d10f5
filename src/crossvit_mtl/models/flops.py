"""FLOP counting with torch.utils.flop_counter, including the CPU attention kernel.

PyTorch's counter knows the CUDA attention kernels but not the fused CPU one that
scaled_dot_product_attention dispatches to here, so its formula is registered below.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils import flop_counter

_aten = torch.ops.aten


def _shape(t) -> tuple:
    """The counter hands formulas tensors or shapes, depending on the PyTorch version."""
    return t.shape if hasattr(t, "shape") else t


def _cpu_sdpa_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(_shape(query), _shape(key), _shape(value))


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(_shape(grad_out), _shape(query), _shape(key), _shape(value))


CUSTOM_MAPPING = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_forward,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def count_flops(model: nn.Module, input_size: tuple[int, int], batch_size: int = 1,
                backward: bool = False) -> int:
    """FLOPs (multiply-add = 2) of one forward (and backward) pass per image."""
    x = torch.randn(batch_size, 3, *input_size)
    was_training = model.training
    model.train(backward)
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=CUSTOM_MAPPING)
    try:
        with counter:
            if backward:
                out = model(x)
                loss = sum(v.float().mean() for v in (out.values() if isinstance(out, dict) else [out]))
                loss.backward()
            else:
                with torch.no_grad():
                    model(x)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops() // batch_size
