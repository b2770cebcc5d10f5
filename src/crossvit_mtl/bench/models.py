"""The networks a bench runs: zoo presets sized for the input, and SegFormer-B0 (HF transformers)
as the peer a user would otherwise pick; random batches with targets for every task."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossvit_mtl.bench.cases import PEER, parse_model
from crossvit_mtl.tasks import get_task


class SegformerDense(nn.Module):
    """SegFormer returning ``{"segmentation": logits}`` upsampled to the input size, as users
    train it (its head predicts at 1/4 resolution)."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        try:
            from transformers import SegformerConfig, SegformerForSemanticSegmentation
        except ImportError as err:  # the peer is optional: pip install 'crossvit-mtl[bench]'
            raise ImportError("segformer_b0 needs HF transformers: pip install 'crossvit-mtl[bench]'") from err
        # SegformerConfig() defaults are B0: widths 32/64/160/256, depths 2/2/2/2, decoder 256
        self.net = SegformerForSemanticSegmentation(SegformerConfig(num_labels=num_classes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(pixel_values=x).logits
        return {"segmentation": F.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                                              align_corners=False)}


def build_model(spec: str, size: tuple[int, int]) -> nn.Module:
    """A zoo preset sized for ``size`` (its positions fit the grid), or the SegFormer peer."""
    name, overrides = parse_model(spec)
    if name == PEER:
        return SegformerDense(**overrides)
    from crossvit_mtl.models import PRESETS, create_model

    if name not in PRESETS or PRESETS[name]["arch"] == "crossvit":
        dense = [n for n, p in PRESETS.items() if p["arch"] != "crossvit"]
        raise ValueError(f"unknown dense model {name!r}; choose from {', '.join(dense + [PEER])}")
    overrides.setdefault("img_size", tuple(size))
    return create_model(name, **overrides)


def synthetic_batch(model: nn.Module, size: tuple[int, int], batch_size: int) -> tuple[torch.Tensor, dict]:
    """A random image batch and targets of every task the model predicts, on its device."""
    gen, device = torch.Generator().manual_seed(0), next(model.parameters()).device
    images = torch.randn(batch_size, 3, *size, generator=gen)
    with torch.no_grad():
        shapes = {t: tuple(v.shape) for t, v in model.eval()(images[:1].to(device)).items()}
    model.train()
    targets = {task: get_task(task).example_target(shape[1], batch_size, size, gen) for task, shape in shapes.items()}
    return images.to(device), {task: value.to(device) for task, value in targets.items()}
