"""Where a training step and a batch-1 forward spend their time, by kind of operator.

PyTorch's profiler records every ATen operator a step runs with its own (self) time; each is put
in one category by its name, or by the nearest enclosing operator that names what it is part of
(a ``copy_`` inside ``_to_copy`` is a precision cast, inside ``clone`` or ``cat`` a layout change,
anything inside ``Optimizer.step`` the optimiser's). What no operator accounts for is the wall
time spent outside them: Python, module calls, autograd's bookkeeping, the dispatcher.

Attention's products are told apart from the linear layers' by their operator: linear layers
(2- or 3-D inputs) run ``mm``/``addmm``, attention's score and value products on (B, h, N, d)
tensors ``bmm``, with SDPA's fused kernels in the same category.
"""
from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

#: categories in the order reports list them
CATEGORIES = ("matrix products", "attention", "normalisation", "activations", "precision casts",
              "layout changes", "resampling and pooling", "loss", "optimiser", "other elementwise",
              "outside operators")

_BY_NAME: dict[str, str] = {}
for _category, _names in {
    "matrix products": ("mm", "addmm", "mkldnn_convolution", "convolution_backward", "_convolution",
                        "_slow_conv2d_forward", "_slow_conv2d_backward", "slow_conv_transpose2d",
                        "mkldnn_linear", "_mkldnn_transpose", "linear_backward", "mkldnn_matmul"),
    "attention": ("bmm", "baddbmm", "_softmax", "_softmax_backward_data", "softmax",
                  "_scaled_dot_product_flash_attention_for_cpu",
                  "_scaled_dot_product_flash_attention_for_cpu_backward",
                  "_scaled_dot_product_attention_math", "_scaled_dot_product_efficient_attention",
                  "_scaled_dot_product_flash_attention", "_efficient_attention_backward",
                  "_flash_attention_backward", "_scaled_dot_product_fused_attention_overrideable"),
    "normalisation": ("native_layer_norm", "native_layer_norm_backward", "native_batch_norm",
                      "native_batch_norm_backward", "_batch_norm_with_update", "batch_norm_backward",
                      "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                      "native_group_norm", "native_group_norm_backward", "_fused_rms_norm",
                      "_fused_rms_norm_backward"),
    "activations": ("gelu", "gelu_backward", "relu", "relu_", "threshold_backward", "sigmoid",
                    "sigmoid_backward", "silu", "silu_backward", "tanh", "tanh_backward",
                    "hardswish", "hardswish_backward", "leaky_relu", "leaky_relu_backward"),
    "precision casts": ("_to_copy",),
    "layout changes": ("clone", "contiguous", "cat", "stack", "slice_backward", "select_backward",
                       "constant_pad_nd", "_unsafe_view", "permute", "index", "index_select",
                       "index_put_", "narrow_copy", "split_with_sizes_copy", "as_strided_scatter",
                       "expand_copy", "col2im", "im2col"),
    "resampling and pooling": ("upsample_bilinear2d", "upsample_bilinear2d_backward", "upsample_bicubic2d",
                               "upsample_bicubic2d_backward", "upsample_nearest2d",
                               "upsample_nearest2d_backward", "avg_pool2d", "avg_pool2d_backward",
                               "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "_adaptive_avg_pool2d_backward",
                               "max_pool2d_with_indices", "max_pool2d_with_indices_backward"),
    "loss": ("_log_softmax", "_log_softmax_backward_data", "nll_loss2d_forward", "nll_loss2d_backward",
             "nll_loss_forward", "nll_loss_backward", "cross_entropy_loss", "l1_loss", "smooth_l1_loss",
             "mse_loss", "binary_cross_entropy_with_logits"),
}.items():
    _BY_NAME.update({f"aten::{name}": _category for name in _names})
#: profiler scopes whose operators are the optimiser's
_OPTIMISER_SCOPES = ("Optimizer.step", "Optimizer.zero_grad")


def categorize(event: Any) -> str:
    """The category of one profiled ATen operator (``torch.autograd.profiler_util.FunctionEvent``):
    the optimiser's if inside its step or zero_grad, else that of the nearest of itself and its
    enclosing operators whose name says, else ``other elementwise``."""
    node, named = event, None
    while node is not None:
        if node.name.startswith(_OPTIMISER_SCOPES):
            return "optimiser"
        if named is None:
            named = _BY_NAME.get(node.name)
        node = node.cpu_parent
    return named or "other elementwise"


def breakdown(events: Iterable[Any], wall_us: float) -> dict[str, float]:
    """Microseconds per category of ``wall_us`` profiled wall time: every ATen operator's self
    time, and the rest as ``outside operators``."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        if event.name.startswith("aten::") and event.device_type == torch.autograd.DeviceType.CPU:
            out[categorize(event)] += event.self_cpu_time_total
    out["outside operators"] = max(wall_us - sum(out.values()), 0.0)
    return out


def profile_calls(fn: Callable[[], None], calls: int, warmup: int = 2) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times, time ``calls`` runs without the profiler (their median), then
    profile ``calls`` runs: microseconds per call and category, operator calls per call, and the
    largest operators by self time."""
    for _ in range(warmup):
        fn()
    plain = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        plain.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        wall = time.perf_counter() - start
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    per_call = {k: v / calls for k, v in breakdown(events, wall * 1e6).items()}
    top: Counter[str] = Counter()
    for event in events:
        top[event.name] += event.self_cpu_time_total / calls
    return {"plain_ms": 1e3 * statistics.median(plain), "profiled_ms": 1e3 * wall / calls,
            "categories_us": per_call, "ops_per_call": len(events) / calls,
            "top_ops_us": dict(top.most_common(12))}


def shares(categories_us: dict[str, float]) -> dict[str, float]:
    total = sum(categories_us.values()) or 1.0
    return {k: v / total for k, v in categories_us.items()}
