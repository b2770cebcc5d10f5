"""The one contract every balancing method keeps, loss weighting or gradient aggregation.

The engine calls each method the same way at every training step: ``forward(losses)`` gives the
total it logs (and Lightning hands back to ``backward``, scaled where the precision scales
losses); ``backward(total, losses, network)`` fills the ``.grad`` of every trained parameter and
returns the task weights it used. A loss weighting backpropagates its total; a gradient method
ignores it and combines per-task gradients on the shared network instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class SharedNetwork:
    """What a gradient method differentiates through: the tensors the heads read (the shared
    network's last outputs), the shared parameters and each task's own (head) parameters."""

    features: list[Tensor]
    shared_params: list[nn.Parameter]
    task_params: dict[str, list[nn.Parameter]]


class Weighting(nn.Module):
    """Base of every method. Losses arrive in float32, each already divided by its initial value
    and scaled by its fixed weight (``losses.<task>.weight``), whatever precision the network ran in.

    State that a bit-exact resume needs is held in parameters and buffers (in the module's state
    dict) or, when it is neither (a torchjd aggregator's), handed over by ``state_for_checkpoint``.
    """

    #: True when ``backward`` needs the shared network: the engine then splits the forward pass,
    #: and under DDP the method averages the ranks' gradients itself
    needs_network = False

    def __init__(self, tasks: list[str]):
        super().__init__()
        if not tasks:
            raise ValueError("a weighting needs at least one task")
        self.tasks = list(tasks)

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        """The total of this step's losses: what the engine logs as the training loss."""
        raise NotImplementedError

    def backward(self, total: Tensor, losses: dict[str, Tensor], network: SharedNetwork | None) -> dict[str, Tensor]:
        """Fills the gradients; returns the weight each task's loss was given (empty when the
        method has none to report)."""
        raise NotImplementedError

    def on_epoch_end(self, epoch_losses: dict[str, float]) -> None:
        """Called with each task's average training loss of the epoch that just ended."""

    def state_for_checkpoint(self) -> dict[str, Any]:
        """State a bit-exact resume needs that is neither a parameter nor a registered buffer.
        Only tensors, numbers, strings, ``None``, dtypes and plain containers, so that
        ``torch.load(weights_only=True)`` reads it back. Most methods have none: ``{}``."""
        return {}

    def load_state_from_checkpoint(self, state: dict[str, Any]) -> None:
        """Restores what ``state_for_checkpoint`` gave. ``{}`` (a checkpoint written before these
        hooks existed, or by a method without such state) leaves the method as built."""
        if state:
            raise ValueError(f"weighting {type(self).__name__}: the checkpoint holds state of another "
                             f"weighting ({', '.join(map(str, state))}); resume with the same weighting")
