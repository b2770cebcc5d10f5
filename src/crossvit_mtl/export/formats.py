"""Deployable graphs: ONNX (checked in onnxruntime) and TorchScript.

Both fix the input height and width to the size given at export (learned positions are resized
for it in Python, outside the graph); ONNX keeps the batch axis free. Outputs are named per task
(``segmentation``, ``depth``, ``normal``, ``classification``), the input ``image``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossvit_mtl.models import as_task_dict


class TaskOutputs(nn.Module):
    """The model with its ``{task: tensor}`` dict flattened to a tuple in ``tasks`` order, which
    is what graph exporters can name."""

    def __init__(self, model: nn.Module, tasks: list[str]):
        super().__init__()
        self.model = model
        self.tasks = list(tasks)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = as_task_dict(self.model(image))
        return tuple(out[t] for t in self.tasks)


def _example(model: nn.Module, size: tuple[int, int]) -> torch.Tensor:
    """One image on the model's device, to trace with."""
    return torch.zeros(1, 3, *size, device=next(model.parameters()).device)


def task_names(model: nn.Module, size: tuple[int, int]) -> list[str]:
    """The tasks a model predicts, in its output order (one dry run at batch 1)."""
    with torch.no_grad():
        return list(as_task_dict(model.eval()(_example(model, size))))


def _traceable(model: nn.Module, size: tuple[int, int]) -> TaskOutputs:
    # The wrapper is put in eval mode too: exporters restore the *wrapper's* mode afterwards,
    # which would otherwise switch the model's BatchNorms back to training.
    return TaskOutputs(model, task_names(model, size)).eval()


def export_onnx(model: nn.Module, path: str | Path, size: tuple[int, int], opset: int = 17) -> list[str]:
    """Write an ONNX graph with a dynamic batch axis; returns the output names.

    Uses the TorchScript-based exporter (``dynamo=False``): it handles scaled_dot_product_attention
    at opset >= 14 and needs no onnxscript.
    """
    wrapper = _traceable(model, size)
    dynamic = {name: {0: "batch"} for name in ["image", *wrapper.tasks]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about the legacy path
        torch.onnx.export(wrapper, (_example(model, size),), str(path), input_names=["image"],
                          output_names=wrapper.tasks, dynamic_axes=dynamic, opset_version=opset,
                          dynamo=False)
    return wrapper.tasks


def check_onnx(model: nn.Module, path: str | Path, size: tuple[int, int], batch: int = 2,
               seed: int = 0) -> dict[str, float]:
    """Max absolute difference per output between onnxruntime (on the CPU) and PyTorch on random
    images."""
    import onnxruntime as ort

    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = session.run(names, {"image": x.numpy()})
    with torch.no_grad():  # on the model's device
        ref = as_task_dict(model.eval()(x.to(next(model.parameters()).device)))
    return {n: float(np.abs(g - ref[n].float().cpu().numpy()).max()) for n, g in zip(names, got)}


def export_torchscript(model: nn.Module, path: str | Path, size: tuple[int, int]) -> list[str]:
    """``torch.jit.trace`` at ``size``: the saved graph accepts that height and width only
    (any batch); it returns a tuple of outputs in the returned task order."""
    wrapper = _traceable(model, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, _example(model, size), check_trace=False)
    traced.save(str(path))
    return wrapper.tasks
