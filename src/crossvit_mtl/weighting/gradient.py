"""Gradient aggregation (torchjd): per-task gradients on the shared network, combined by an aggregator.

The task losses' Jacobian with respect to the shared parameters (encoder, decoder, task
interaction) is computed with ``torchjd.autojac.mtl_backward`` and reduced to one update by a
torchjd aggregator (UPGrad, MGDA, PCGrad, CAGrad, Nash-MTL ...); each head gets the gradient of its
own loss only. The engine switches to manual optimisation for these methods.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchjd import aggregation as agg
from torchjd.autojac import jac_to_grad, mtl_backward

from crossvit_mtl.weighting.loss_weighting import EqualWeighting

#: name in the config -> torchjd aggregator
AGGREGATORS: dict[str, type[agg.Aggregator]] = {
    "upgrad": agg.UPGrad, "mgda": agg.MGDA, "pcgrad": agg.PCGrad, "cagrad": agg.CAGrad,
    "nashmtl": agg.NashMTL, "imtlg": agg.IMTLG, "alignedmtl": agg.AlignedMTL, "dualproj": agg.DualProj,
    "graddrop": agg.GradDrop, "config": agg.ConFIG, "fairgrad": agg.FairGrad, "gradvac": agg.GradVac,
    "mean": agg.Mean, "sum": agg.Sum, "random": agg.Random,
}
#: options torchjd requires, at the papers' MTL settings (CAGrad c = 0.4 as on NYUv2 and
#: Cityscapes; FairGrad alpha = 1, proportional fairness); config options override them
AGGREGATOR_DEFAULTS: dict[str, dict[str, Any]] = {"cagrad": {"c": 0.4}, "fairgrad": {"alpha": 1.0}}


def _as_option(value: Any) -> Any:
    """YAML gives lists; torchjd wants tensors (e.g. ``pref_vector``)."""
    return torch.tensor(value, dtype=torch.float32) if isinstance(value, list) else value


class GradientAggregation(EqualWeighting):
    """A torchjd aggregator behind the weighting interface.

    ``forward`` gives the plain sum (what the engine logs as the training loss); ``backward`` fills
    the ``.grad`` fields. Option ``parallel_chunk_size`` goes to ``mtl_backward``: the default 1
    differentiates the tasks one after another, which needs the least memory and works under
    bf16 autocast, where torch's vmap over the backward pass fails on CPU; ``null`` batches all
    tasks at once. Every other option goes to the aggregator.
    """

    gradient_based = True

    def __init__(self, tasks: list[str], method: str, **options: Any):
        super().__init__(tasks)
        self.parallel_chunk_size = options.pop("parallel_chunk_size", 1)
        options = {**AGGREGATOR_DEFAULTS.get(method, {}), **{k: _as_option(v) for k, v in options.items()}}
        if method == "nashmtl":
            options.setdefault("n_tasks", len(self.tasks))
        self.aggregator = AGGREGATORS[method](**options)

    def backward(self, losses: dict[str, Tensor], features: list[Tensor], shared_params: list[nn.Parameter],
                 task_params: dict[str, list[nn.Parameter]]) -> dict[str, Tensor]:
        """Heads' gradients from their own losses, the shared parameters' from the aggregated
        Jacobian. Returns the aggregator's task weights when it has them (else an empty dict).

        Runs outside autocast: the Gramian and the aggregators' solvers need float32.
        """
        device_type = features[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            mtl_backward([losses[t].float() for t in self.tasks], features=features,
                         tasks_params=[task_params[t] for t in self.tasks], shared_params=shared_params,
                         parallel_chunk_size=self.parallel_chunk_size)
            weights = jac_to_grad(shared_params, self.aggregator)
        return {} if weights is None else dict(zip(self.tasks, weights.detach()))
