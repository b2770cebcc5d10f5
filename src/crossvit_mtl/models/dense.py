"""Dense prediction on the dual-branch encoder: the improved segmentation family and the
multi-task network (one shared encoder + decoder, one head per task)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from crossvit_mtl.models.decoders import LightDecoder
from crossvit_mtl.models.encoders import DualBranchEncoder
from crossvit_mtl.models.heads import ClsHead, DenseHead, MapClsHead
from crossvit_mtl.models.interface import TaskFeatures
from crossvit_mtl.models.task_attention import CrossTaskAttention
from crossvit_mtl.tasks import get_task

#: how the dense tasks' features meet before their heads (``DenseCrossViT(task_interaction=...)``)
TASK_INTERACTIONS = ("none", "cross_attention")
#: what image-level heads (classification) read: the shared dense map (``map``) or the two CLS tokens (``cls``)
CLASSIFIERS = ("map", "cls")


def check_tasks(tasks: Mapping[str, int]) -> dict[str, int]:
    """Every task registered and its channel count one it can predict with; one line otherwise."""
    if not tasks:
        raise ValueError("tasks must name at least one task")
    for task, channels in tasks.items():
        get_task(task).check_channels(channels)
    return dict(tasks)


class DenseCrossViT(nn.Module):
    """Returns ``{task: output}``: dense outputs at input resolution (segmentation logits,
    positive depth, unit normals ..., each as its task constrains it) and image-level logits
    (classification).

    ``task_interaction="cross_attention"`` gives each dense task its own projection of the
    decoder map and lets the tasks exchange information by cross-attention on the stride-8 grid
    (``models/task_attention.py``) before their heads; ``"none"`` feeds the shared map to every head.

    ``kv_tokens`` caps the keys/values every encoder attention takes from a patch grid (the
    branches' self-attention and token fusion) by pooling that grid, so the encoder's cost grows
    linearly with the image area instead of quadratically (``DualBranchEncoder``); None: no cap.

    ``classifier="map"`` classifies (every image-level task) from the decoder's shared map over a
    coarse grid of regions (``MapClsHead``), ``"cls"`` from the two CLS tokens as CrossViT does
    (``ClsHead``).
    """

    def __init__(self, tasks: Mapping[str, int], img_size: Sequence[int] = (128, 256),
                 patch_sizes: Sequence[int] = (8, 16), dims: Sequence[int] = (96, 192),
                 heads: Sequence[int] = (3, 6), stages: Sequence[Sequence[int]] = ((1, 3, 1),) * 3,
                 mlp_ratios: Sequence[float] = (4.0, 4.0, 4.0), fusion: str = "tokens",
                 kv_pool: Sequence[int] = (2, 1), kv_tokens: int | None = None,
                 decoder_channels: int = 96, decoder_stages: int = 2, detail_channels: int = 32,
                 detail_depth: int = 0, in_chans: int = 3,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, task_interaction: str = "none", classifier: str = "map",
                 separable_heads: bool = False, refine_heads: bool = False):
        super().__init__()
        self.tasks = check_tasks(tasks)
        if task_interaction not in TASK_INTERACTIONS:
            raise ValueError(f"task_interaction must be one of {TASK_INTERACTIONS}, got {task_interaction!r}")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
        if not 1 <= decoder_stages <= len(stages):
            raise ValueError(f"decoder_stages must be in [1, {len(stages)}], got {decoder_stages}")
        self.encoder = DualBranchEncoder(
            img_size=img_size, patch_sizes=patch_sizes, dims=dims, heads=heads, stages=stages,
            mlp_ratios=mlp_ratios, fusion=fusion, stem="linear", pos_embed="learned", kv_pool=kv_pool,
            kv_tokens=kv_tokens, in_chans=in_chans, qkv_bias=qkv_bias, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate)
        dense = [t for t in self.tasks if get_task(t).kind == "dense"]
        self.image_tasks = [t for t in self.tasks if get_task(t).kind == "image"]
        self.classifier = classifier if self.image_tasks else None
        self.decoder = (LightDecoder(tuple(dims), decoder_channels, decoder_stages, detail_channels, in_chans, detail_depth)
                        if dense or self.classifier == "map" else None)
        self.heads = nn.ModuleDict(
            {t: DenseHead(t, decoder_channels, self.tasks[t], separable=separable_heads,
                          detail_channels=detail_channels // 2 if refine_heads else 0) for t in dense})
        if refine_heads and not detail_channels:
            raise ValueError("refine_heads reads the detail stem's stride-2 features: it needs detail_channels > 0")
        for task in self.image_tasks:
            self.heads[task] = (MapClsHead(decoder_channels, self.tasks[task], drop=drop_rate) if self.classifier == "map"
                                else ClsHead((dims[0], dims[1]), self.tasks[task], drop_rate))
        self.task_interaction = None
        if task_interaction == "cross_attention":
            stride = 4 if detail_channels else min(patch_sizes)  # the decoder map's stride
            self.task_interaction = CrossTaskAttention(
                dense, decoder_channels, num_heads=max(1, decoder_channels // 32), pool=max(1, 8 // stride))

    def forward_features(self, x: torch.Tensor) -> dict[str, TaskFeatures]:
        """What each head reads (``models.interface.MultiTaskNetwork``): per dense task its map, and
        the stride-2 detail features for refining heads; per image-level task the shared map
        (``classifier="map"``) or the two CLS tokens (``"cls"``).

        Split from the heads so gradient methods can tell shared from task-specific computation.
        """
        enc = self.encoder(x)
        if self.decoder is None:
            return dict.fromkeys(self.image_tasks, tuple(enc.cls_tokens()))
        feats, half = self.decoder.forward_both(enc, x)
        maps: dict[str, torch.Tensor] = (self.task_interaction(feats) if self.task_interaction is not None
                                         else {t: feats for t in self.heads if t not in self.image_tasks})
        out: dict[str, TaskFeatures] = {t: (fmap,) for t, fmap in maps.items()}
        if half is not None and any(getattr(h, "refine", None) is not None for h in self.heads.values()):
            # a view: its own node in the graph, beside the decoder map rather than its ancestor
            detail = half.view_as(half)
            out = {t: (fmap, detail) for t, fmap in maps.items()}
        for task in self.image_tasks:
            if self.classifier == "map":
                # with task interaction, a view of the shared map: its own node in the graph, beside the
                # interacted maps rather than their ancestor, as gradient methods need their features
                out[task] = (feats if self.task_interaction is None else feats.view_as(feats),)
            else:
                out[task] = tuple(enc.cls_tokens())
        return out

    def forward_heads(self, features: Mapping[str, TaskFeatures], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        outputs = {}
        for task, head in self.heads.items():
            given = features[task][0] if len(features[task]) == 1 else list(features[task])
            outputs[task] = head(given) if task in self.image_tasks else head(given, size)
        return outputs

    def head_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[task].parameters()

    def set_output_bias(self, task: str, value: float) -> None:
        """Start a dense task's head at ``value`` (``Task.initial_bias``: the data's typical output)."""
        head = self.heads[task]
        if not isinstance(head, DenseHead):
            raise ValueError(f"task {task!r} has no dense head whose bias could start at a value")
        head.set_output_bias(value)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_heads(self.forward_features(x), (x.shape[-2], x.shape[-1]))


class CrossViTSeg(DenseCrossViT):
    """The segmentation family: the dense network with a single segmentation head."""

    def __init__(self, num_classes: int = 8, **kwargs):
        super().__init__(tasks={"segmentation": num_classes}, **kwargs)
        self.num_classes = num_classes
