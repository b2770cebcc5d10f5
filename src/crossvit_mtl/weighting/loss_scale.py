"""The project's rule for comparable task losses: each divided by its magnitude at the start.

Task losses come in their own units: metric-depth L1 in metres starts near 10 on street scenes,
cross-entropy near ln(C), the normals' 1 - cos near 1. Summed as they are, "equal weighting" is a
depth-weighted sum, and every method that starts from the plain losses (EW, RLW, MGDA ...)
compares the units rather than the tasks. Dividing each loss by its value for the untrained
network, measured once on a fixed set of training samples before the first step, makes every task
start at 1, so EW means equal contribution and every method sees the same scales.

With AdamW, a constant factor on a lone loss barely changes the updates: the optimiser divides it
out of the gradient's moments, all but its epsilon (1e-8 added to the root of the second moment,
which the factor scales), and its decoupled weight decay never sees it. So a single-task baseline
trains almost as without the rule; not exactly, and not at all alike under SGD or under Adam with
L2 weight decay (added to the gradient, so weighed against a scaled loss).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

#: ``model.loss_scaling`` values: ``initial`` (the default) or ``none`` (losses as they are)
LOSS_SCALINGS = ("initial", "none")


class InitialLossScale(nn.Module):
    """Holds one divisor per task; ``1`` until :meth:`set_initial` has been called."""

    divisors: Tensor

    def __init__(self, tasks: list[str], mode: str = "initial"):
        super().__init__()
        if mode not in LOSS_SCALINGS:
            raise ValueError(f"loss scaling must be one of {', '.join(LOSS_SCALINGS)}, got {mode!r}")
        self.tasks, self.mode = list(tasks), mode
        # not in the state dict: saved beside it (``state``), so checkpoints of runs without the
        # rule still load, and a network's weights never depend on how its losses were scaled
        self.register_buffer("divisors", torch.ones(len(self.tasks)), persistent=False)
        self.measured = False

    @property
    def needs_measuring(self) -> bool:
        return self.mode == "initial" and not self.measured

    def set_initial(self, losses: dict[str, float]) -> None:
        """The untrained network's mean loss per task. A loss that is 0 or not finite there (a
        task with no annotated sample among those measured) keeps the divisor 1."""
        values = [float(losses[t]) for t in self.tasks]
        self.divisors.copy_(torch.tensor([v if math.isfinite(v) and v > 0 else 1.0 for v in values]))
        self.measured = True

    def forward(self, task: str, loss: Tensor) -> Tensor:
        return loss / self.divisors[self.tasks.index(task)]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.divisors.tolist()))

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: plain values a ``weights_only`` load reads back."""
        return {"mode": self.mode, "measured": self.measured, "divisors": self.as_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state`; ``{}`` (a checkpoint written without it) leaves the divisors as built."""
        if not state:
            return
        if state.get("mode") != self.mode or sorted(state.get("divisors", {})) != sorted(self.tasks):
            raise ValueError(f"the checkpoint's loss scaling ({state.get('mode')!r} over "
                             f"{', '.join(state.get('divisors', {}))}) differs from this run's "
                             f"({self.mode!r} over {', '.join(self.tasks)}); resume with the same settings")
        self.divisors.copy_(torch.tensor([float(state["divisors"][t]) for t in self.tasks]))
        self.measured = bool(state.get("measured"))
