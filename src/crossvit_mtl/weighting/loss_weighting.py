"""Loss weighting: methods that turn the task losses into one scalar before a plain backward pass.

Small interchangeable classes in LibMTL's style. Their state is held in parameters (UW) and
buffers (DWA's loss history and epoch count), so it is trained by the engine's optimiser and saved
in and restored from checkpoints with the rest of the LightningModule.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossvit_mtl.weighting.base import SharedNetwork, Weighting


class LossWeighting(Weighting):
    """Weights the losses and sums them (``combine``); ``backward`` backpropagates that total.

    Subclasses give ``weights`` (one per task, in ``tasks`` order) and may change ``combine``.
    """

    def __init__(self, tasks: list[str]):
        super().__init__(tasks)
        self._last_weights: dict[str, Tensor] = {}

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack([losses[t].float() for t in self.tasks])
        weights = self.weights(stacked)
        # what ``backward`` reports: drawn once per step (RLW draws at random)
        self._last_weights = dict(zip(self.tasks, weights.detach()))
        return self.combine(stacked, weights)

    def backward(self, total: Tensor, losses: dict[str, Tensor], network: SharedNetwork | None) -> dict[str, Tensor]:
        total.backward()
        return self._last_weights

    def weights(self, losses: Tensor) -> Tensor:
        raise NotImplementedError

    def combine(self, losses: Tensor, weights: Tensor) -> Tensor:
        return (weights * losses).sum()


class FixedWeighting(LossWeighting):
    """Fixed weights: the sum of the losses, each scaled by its ``losses.<task>.weight``. The
    engine applies those weights to every task's loss before any method sees it, so what is left
    here is the sum; with every weight at 1 (the default) it is equal weighting, ``ew``."""

    def weights(self, losses: Tensor) -> Tensor:
        return torch.ones_like(losses)


class UncertaintyWeighting(LossWeighting):
    """UW (Kendall et al., CVPR 2018): sum of exp(-s) L / 2 + s / 2 with learnable log-variances s."""

    def __init__(self, tasks: list[str], init: float = 0.0):
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init)))

    def weights(self, losses: Tensor) -> Tensor:
        return 0.5 * torch.exp(-self.log_vars)

    def combine(self, losses: Tensor, weights: Tensor) -> Tensor:
        return (weights * losses + 0.5 * self.log_vars).sum()


class DynamicWeightAverage(LossWeighting):
    """DWA (Liu et al., CVPR 2019): w = K softmax(r / T), r_k = L_k(t-1) / L_k(t-2) from the
    average losses of the last two epochs; equal weights until two epochs have ended."""

    history: Tensor
    epochs_seen: Tensor

    def __init__(self, tasks: list[str], temperature: float = 2.0):
        super().__init__(tasks)
        if temperature <= 0:
            raise ValueError(f"DWA temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.register_buffer("history", torch.ones(2, len(self.tasks)))  # rows: epoch t-2, t-1
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def weights(self, losses: Tensor) -> Tensor:
        if int(self.epochs_seen) < 2:
            return torch.ones_like(losses)
        rates = self.history[1] / self.history[0]
        return len(self.tasks) * torch.softmax(rates / self.temperature, dim=0).to(losses)

    def on_epoch_end(self, epoch_losses: dict[str, float]) -> None:
        latest = torch.tensor([float(epoch_losses[t]) for t in self.tasks], device=self.history.device)
        self.history.copy_(torch.stack([self.history[1], latest]))
        self.epochs_seen += 1


class RandomLossWeighting(LossWeighting):
    """RLW (Lin et al., TMLR 2022): fresh weights every step, softmax of a standard normal draw."""

    def weights(self, losses: Tensor) -> Tensor:
        return torch.softmax(torch.randn(len(self.tasks), device=losses.device), dim=0)


class GeometricLossStrategy(LossWeighting):
    """GLS (Chennupati et al., CVPRW 2019): the geometric mean (prod L_k)^(1/K), computed in log
    space; the reported weights are its gradient wrt each loss, total / (K L_k)."""

    def weights(self, losses: Tensor) -> Tensor:
        total = self.combine(losses, losses).detach()
        return total / (len(self.tasks) * losses.detach())

    def combine(self, losses: Tensor, weights: Tensor) -> Tensor:
        return torch.exp(torch.log(losses.clamp_min(1e-12)).mean())


#: name in the config -> class
LOSS_WEIGHTINGS: dict[str, type[LossWeighting]] = {
    "fixed": FixedWeighting, "uw": UncertaintyWeighting, "dwa": DynamicWeightAverage,
    "rlw": RandomLossWeighting, "gls": GeometricLossStrategy,
}
#: ``ew`` (equal weighting) is ``fixed`` with every ``losses.<task>.weight`` at 1: one method, the
#: name the literature gives it kept for configs
ALIASES = {"ew": "fixed"}
