"""Running a trained network on images of any size: decoding, normalising, resizing to the
network's size and back (``resize``) or sliding windows of its size over the image (``slide``),
in batches, on the chosen device and precision (``engine.precision``)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from crossvit_mtl.engine.precision import Placement, resolve
from crossvit_mtl.models import as_task_dict
from crossvit_mtl.tasks import get_task


class UnreadableImage(ValueError):
    """An input image that cannot be decoded; the message names the file."""


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))  # writable, as torch.from_numpy wants
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        reason = "empty file" if path.is_file() and path.stat().st_size == 0 else \
            f"not a readable image ({' '.join(str(err).split())})"
        raise UnreadableImage(f"{path}: {reason}") from None


def to_input(rgb: np.ndarray, size: tuple[int, int], mean, std) -> torch.Tensor:
    """HWC uint8 -> normalised (3, H, W) at the model's size (bilinear, antialiased)."""
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255).unsqueeze(0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x[0]


def resize_outputs(out: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Predictions back at the input's resolution: dense outputs bilinear, then as their task says
    (normals unit again)."""
    resized = {}
    for task, value in out.items():
        if get_task(task).kind == "dense" and tuple(value.shape[-2:]) != tuple(size):
            value = F.interpolate(value.float(), size=size, mode="bilinear", align_corners=False)
            value = get_task(task).after_resample(value)
        resized[task] = value
    return resized


def make_forward(model: Callable[[torch.Tensor], Any], precision: str | Placement = "fp32",
                 batch_size: int | None = None):
    """The network as inference wants it: no autograd, autocast as ``precision`` says (a
    :class:`Placement`, or "bf16", "fp32" or "auto" on the CPU), inputs copied to its device
    (from pinned memory, without blocking, on CUDA) and every task's output as a float32 CPU
    tensor in a dict. The model must already be on that device.

    With ``batch_size``, smaller batches are padded to it (repeating their last image) and the
    padding's outputs dropped: a compiled network then sees one shape and compiles once.
    """
    placement = precision if isinstance(precision, Placement) else resolve("cpu", precision)
    cuda = placement.device.type == "cuda"

    def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
        count = x.shape[0]
        if batch_size is not None and count < batch_size:
            x = torch.cat([x, x[-1:].expand(batch_size - count, *x.shape[1:])])
        if cuda:
            x = x.pin_memory().to(placement.device, non_blocking=True)
        with torch.inference_mode(), placement.autocast():
            out = as_task_dict(model(x))
        return {task: value[:count].float().cpu() for task, value in out.items()}

    return forward


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Window offsets covering ``[0, length)`` with at least ``overlap`` shared between
    neighbours; the last window ends at the border."""
    if length <= window:
        return [0]
    stride = max(1, int(window * (1.0 - overlap)))
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def predict_slide(forward, x: torch.Tensor, window: tuple[int, int], overlap: float,
                  batch_size: int) -> dict[str, torch.Tensor]:
    """Sliding-window prediction of one normalised image (1, 3, H, W) at the training size, by
    ``forward`` (see :func:`make_forward`):
    dense outputs (logits, depth, normals ...) averaged where windows overlap, then as their task
    says (normals unit again), image-level logits averaged over windows. Images smaller than a window are padded with
    the mean colour (zero after normalisation) and the padding is cropped away."""
    height, width = x.shape[-2:]
    wh, ww = window
    x = F.pad(x, (0, max(0, ww - width), 0, max(0, wh - height)))
    boxes = [(t, l) for t in window_starts(x.shape[-2], wh, overlap) for l in window_starts(x.shape[-1], ww, overlap)]
    sums: dict[str, torch.Tensor] = {}
    count = x.new_zeros(1, 1, *x.shape[-2:])
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start:start + batch_size]
        out = forward(torch.cat([x[..., t:t + wh, l:l + ww] for t, l in chunk]))
        for task, value in out.items():
            if get_task(task).kind == "image":
                sums[task] = sums.get(task, 0) + value.sum(0, keepdim=True)
                continue
            acc = sums.setdefault(task, x.new_zeros(1, value.shape[1], *x.shape[-2:]))
            for k, (t, l) in enumerate(chunk):
                acc[..., t:t + wh, l:l + ww] += value[k]
        for t, l in chunk:
            count[..., t:t + wh, l:l + ww] += 1
    result = {}
    for task, value in sums.items():
        if get_task(task).kind == "image":
            result[task] = value / len(boxes)
            continue
        result[task] = get_task(task).after_resample((value / count)[..., :height, :width])
    return result


def predict_resize(forward, images: list[np.ndarray], size: tuple[int, int], mean, std) -> list[dict[str, torch.Tensor]]:
    """Each image resized to ``size``, all in one forward, and its outputs resized back to it."""
    out = forward(torch.stack([to_input(img, size, mean, std) for img in images]))
    return [resize_outputs({t: v[i:i + 1] for t, v in out.items()}, rgb.shape[:2]) for i, rgb in enumerate(images)]
