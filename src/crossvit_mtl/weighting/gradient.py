"""Gradient aggregation (torchjd): per-task gradients on the shared network, combined by an aggregator.

The task losses' Jacobian with respect to the shared parameters (encoder, decoder, task
interaction) is computed with ``torchjd.autojac.mtl_backward`` and reduced to one update by a
torchjd aggregator (UPGrad, MGDA, PCGrad, CAGrad, Nash-MTL ...); each head gets the gradient of its
own loss only. The engine switches to manual optimisation for these methods. Under DDP the ranks'
Jacobians and heads' gradients are averaged before aggregating (``average_over_ranks``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as dist
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


def _world_size() -> int:
    """Processes in the default process group (the one Lightning's DDP uses); 1 if not distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _coalesced(tensors: list[Tensor], collective: Callable[[Tensor], Any]) -> list[Tensor]:
    """Runs ``collective`` in place on one flat copy of ``tensors`` per (dtype, device) rather
    than on each tensor, and returns the results in order, as views of those flat tensors.

    Every rank must pass tensors of the same shapes and dtypes in the same order.
    """
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, t.device), []).append(i)
    out: list[Tensor] = list(tensors)
    for indices in groups.values():  # insertion order: the same on every rank
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in indices])
        collective(flat)
        for i, chunk in zip(indices, flat.split([tensors[i].numel() for i in indices])):
            out[i] = chunk.view(tensors[i].shape)
    return out


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
            if _world_size() > 1:
                self.average_over_ranks(shared_params, task_params)
            weights = jac_to_grad(shared_params, self.aggregator)
        return {} if weights is None else dict(zip(self.tasks, weights.detach()))

    @staticmethod
    def average_over_ranks(shared_params: list[nn.Parameter], task_params: dict[str, list[nn.Parameter]]) -> None:
        """Under DDP, before aggregating: every shared parameter's Jacobian (its ``.jac``, one row
        per task, shape ``(tasks, *param.shape)``) and every head parameter's ``.grad``, averaged
        over the ranks (a sum, then divided by the world size), in one all-reduce per dtype.

        With each rank's loss a mean over its share of the batch, the average is the Jacobian of
        the losses over the union of the ranks' batches; every rank then aggregates the same
        matrix and takes the same step (the aggregators are not linear: averaging the aggregated
        gradients instead would not give that step).
        """
        shared = [p for p in shared_params if hasattr(p, "jac")]  # jac_to_grad refuses the others
        heads = list({id(p): p for params in task_params.values() for p in params if p.grad is not None}.values())
        n = _world_size()

        def average(flat: Tensor) -> None:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(n)

        averaged = _coalesced([p.jac for p in shared] + [p.grad for p in heads], average)
        for p, jac in zip(shared, averaged):
            p.jac = jac
        for p, grad in zip(heads, averaged[len(shared):]):
            p.grad = grad
