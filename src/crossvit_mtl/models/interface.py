"""What the training engine may ask of a network beyond ``forward``, declared once.

Gradient methods differentiate each task's loss through the shared part of a network, so they
need the network split into a shared trunk and one head per task; a new run starts each head
where its task's data says (``Task.initial_bias``). A network that offers both satisfies
:class:`MultiTaskNetwork` (``DenseCrossViT`` does; the classifier and the thesis network do not,
and train with loss weightings only). The engine reads nothing else of a network.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

#: what one task's head reads: the tensors the shared trunk computes for it (the decoder map, the
#: map and stride-2 detail features for a refining head, or the two branches' CLS tokens)
TaskFeatures = tuple[Tensor, ...]


@runtime_checkable
class MultiTaskNetwork(Protocol):
    """A shared trunk, then one head per task: ``forward(x) == forward_heads(forward_features(x), size)``."""

    def forward_features(self, x: Tensor) -> dict[str, TaskFeatures]:
        """Everything the heads read, per task: the last shared computation."""
        ...

    def forward_heads(self, features: Mapping[str, TaskFeatures], size: tuple[int, int]) -> dict[str, Tensor]:
        """Each task's output from its features, dense outputs at ``size``."""
        ...

    def head_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """The parameters only ``task``'s loss trains; every other parameter is shared."""
        ...

    def set_output_bias(self, task: str, value: float) -> None:
        """Start ``task``'s outputs at ``value``; a task whose head cannot raises ``ValueError``."""
        ...
