"""FLOP counting with torch.utils.flop_counter, including the CPU attention kernel.

PyTorch's counter knows the CUDA attention kernels but not the fused CPU one that
scaled_dot_product_attention dispatches to here, so its formula is registered below. Its
convolution backward counts a grouped convolution's weight gradient as if every input channel
met every output channel (``groups`` times too many: 128x for a depthwise 3x3 over 128
channels, which doubled SegFormer-B0's counted training FLOPs); the formula below divides it.
"""
from __future__ import annotations

import inspect

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


def _conv_backward(grad_out, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups,
                   output_mask, out_shape=None, **kwargs) -> int:
    """PyTorch's count of the input gradient, and of the weight gradient divided by ``groups``."""
    args = (_shape(grad_out), _shape(x), _shape(weight), bias, stride, padding, dilation, transposed,
            output_padding, groups)
    pytorchs = inspect.unwrap(flop_counter.conv_backward_flop)  # the formula on shapes, as registered
    total = 0
    if output_mask[0]:
        total += pytorchs(*args, [True, False, False], out_shape)
    if output_mask[1]:
        total += pytorchs(*args, [False, True, False], out_shape) // groups
    return total


CUSTOM_MAPPING = {
    _aten.convolution_backward: _conv_backward,
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_forward,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def count_flops(model: nn.Module, input_size: tuple[int, int], batch_size: int = 1,
                backward: bool = False) -> int:
    """FLOPs (multiply-add = 2) of one forward (and backward) pass per image.

    A forward count depends on shapes alone: a model built on the meta device (``with
    torch.device("meta"): create_model(...)``) gives the same figure without computing anything.
    Not a backward count: the meta device's backward dispatches to other kernels."""
    device = next(model.parameters(), torch.empty(0)).device
    x = torch.randn(batch_size, 3, *input_size, device=device)
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
