"""Gradient aggregation (torchjd): per-task gradients on the shared network, combined by an aggregator.

The task losses' Jacobian with respect to the shared parameters (encoder, decoder, task
interaction) is computed with ``torchjd.autojac.mtl_backward`` and reduced to one update by a
torchjd aggregator (UPGrad, MGDA, PCGrad, CAGrad, Nash-MTL ...); each head gets the gradient of its
own loss only. Under DDP the ranks' Jacobians and heads' gradients are averaged before aggregating
(``average_over_ranks``), so the engine keeps DDP's own gradient reduction out of these steps.

Some aggregators carry state from step to step (torchjd's ``Stateful``: Nash-MTL its last weights
and step count, GradVac its EMA targets). ``state_for_checkpoint`` takes it apart into tensors and
plain values that a ``weights_only`` load accepts; objects that cannot be saved so (Nash-MTL's
cvxpy problem) are rebuilt on loading by torchjd's own code. The aggregator is not pickled: a
pickle inside the checkpoint would run whatever it holds, which ``weights_only`` is there to stop.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchjd import Stateful
from torchjd import aggregation as agg
from torchjd.autojac import jac_to_grad, mtl_backward

from crossvit_mtl.weighting.base import SharedNetwork, Weighting

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


#: torchjd weighting classes (by name) holding solver objects built from their other state, and
#: how to build them again once that state is restored; Nash-MTL builds its cvxpy problem at step 0
_REBUILD: dict[str, Callable[[Any], None]] = {
    "_NashMTLWeighting": lambda weighting: weighting._init_optim_problem() if weighting.step else None,
}
#: what every ``nn.Module`` keeps in its ``__dict__`` (hooks, children ...): not aggregator state
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_NDARRAY = "__ndarray__"


def _encode(value: Any) -> tuple[bool, Any]:
    """``(True, value)`` as a ``weights_only`` load reads it back (numpy arrays as tagged tensors),
    or ``(False, None)`` for what cannot be (solver objects, callables ...)."""
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype)):
        return True, value
    if isinstance(value, Tensor):
        return True, value.detach().clone()  # the aggregator updates its tensors in place
    if isinstance(value, (np.ndarray, np.generic)):
        try:
            array = torch.from_numpy(np.array(value, copy=True))
        except TypeError:  # object arrays, dtypes torch lacks
            return False, None
        return True, {_NDARRAY: array, "scalar": isinstance(value, np.generic)}
    if isinstance(value, (list, tuple)):
        items = [_encode(v) for v in value]
        return all(ok for ok, _ in items), type(value)(v for _, v in items)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        encoded = {k: _encode(v) for k, v in value.items()}
        return all(ok for ok, _ in encoded.values()), {k: v for k, (_, v) in encoded.items()}
    return False, None


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and _NDARRAY in value:
        array = value[_NDARRAY].numpy().copy()
        return array[()] if value["scalar"] else array
    if isinstance(value, (list, tuple)):
        return type(value)(_decode(v) for v in value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


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


def _without_aggregator(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """State-dict hook: leaves out the aggregator's entries when saving."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}aggregator.")]:
        del state_dict[key]


def _aggregator_as_it_is(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load-state-dict hook: the aggregator's buffers load as they are (``load_state_from_checkpoint``
    restores them, before or after this), and entries of checkpoints written before its state was
    saved apart (GradVac's, which a fresh module could not load) are ignored."""
    _without_aggregator(module, state_dict, prefix)
    buffers = module.get_submodule("aggregator").named_buffers(remove_duplicate=False)  # GradVac holds its weighting twice
    state_dict.update({f"{prefix}aggregator.{name}": b for name, b in buffers})


class GradientAggregation(Weighting):
    """A torchjd aggregator behind the weighting contract.

    ``forward`` gives the plain sum (what the engine logs as the training loss); ``backward`` fills
    the ``.grad`` fields from the task losses' Jacobian. Option ``parallel_chunk_size`` goes to
    ``mtl_backward``: the default 1
    differentiates the tasks one after another, which needs the least memory and works under
    bf16 autocast, where torch's vmap over the backward pass fails on CPU; ``null`` batches all
    tasks at once. Every other option goes to the aggregator.
    """

    needs_network = True

    def __init__(self, tasks: list[str], method: str, **options: Any):
        super().__init__(tasks)
        self.parallel_chunk_size = options.pop("parallel_chunk_size", 1)
        options = {**AGGREGATOR_DEFAULTS.get(method, {}), **{k: _as_option(v) for k, v in options.items()}}
        if method == "nashmtl":
            options.setdefault("n_tasks", len(self.tasks))
        self.method = method
        self.aggregator = AGGREGATORS[method](**options)
        #: functions the aggregator was built with (torchjd's Gramian or normalisation steps):
        #: stateless, and built again with it, so not saved while they are the same objects
        self._built_routines = {(path, name): value for path, module in self.aggregator.named_modules()
                                for name, value in vars(module).items() if inspect.isroutine(value)}
        self._warned_unsaved = False
        # The aggregator's buffers (GradVac's EMA targets, registered as None and filled at the
        # first step, which a fresh module could not load) go through ``state_for_checkpoint``
        # with the rest of its state, not through the module's state dict.
        self.register_state_dict_post_hook(_without_aggregator)
        self.register_load_state_dict_pre_hook(_aggregator_as_it_is)

    def state_for_checkpoint(self) -> dict[str, Any]:
        """A stateful aggregator's state: for each of its modules (itself and the torchjd
        weightings inside it) every instance attribute and buffer, as tensors and plain values,
        options included; the names of those that cannot be saved so (but the functions it was
        built with) are listed to be rebuilt on loading. ``{}`` for the stateless aggregators."""
        if not isinstance(self.aggregator, Stateful):
            return {}
        modules = {}
        for path, module in self.aggregator.named_modules():
            values = {k: v for k, v in vars(module).items() if k not in _MODULE_INTERNALS}
            values.update(module._buffers)
            saved, unsaved = {}, []
            for name, value in values.items():
                if self._built_routines.get((path, name)) is value:
                    continue
                ok, encoded = _encode(value)
                if ok:
                    saved[name] = encoded
                else:
                    unsaved.append(name)
            modules[path] = {"class": type(module).__name__, "attributes": saved, "rebuilt": unsaved}
            if unsaved and type(module).__name__ not in _REBUILD and not self._warned_unsaved:
                self._warned_unsaved = True
                warnings.warn(f"weighting {self.method!r}: {type(module).__name__}.{', '.join(unsaved)} "
                              "cannot be saved in a checkpoint; a resume from it will fail", stacklevel=2)
        return {"aggregator": repr(self.aggregator), "modules": modules}

    def load_state_from_checkpoint(self, state: dict[str, Any]) -> None:
        """Puts the aggregator back as ``state_for_checkpoint`` found it, or raises a one-line
        ``ValueError`` naming the weighting when it cannot: another aggregator or other options
        than the saved run's, or state that can be neither loaded nor rebuilt. ``{}`` leaves it
        as built."""
        if not state:
            return

        def fail(reason: str) -> NoReturn:
            raise ValueError(f"weighting {self.method!r}: cannot restore the aggregator's state from the "
                             f"checkpoint: {reason}")

        if state.get("aggregator") != repr(self.aggregator):
            fail(f"it was saved by {state.get('aggregator')}, this run has {self.aggregator!r} "
                 "(resume with the same weighting and weighting_options)")
        modules = dict(self.aggregator.named_modules())
        if set(state["modules"]) != set(modules):
            fail(f"its parts {sorted(state['modules'])} are not this torchjd version's {sorted(modules)}")
        for path, saved in state["modules"].items():
            cls = type(modules[path]).__name__
            if saved["class"] != cls:
                fail(f"{path or 'the aggregator'} was a {saved['class']}, here it is a {cls}")
            if saved["rebuilt"] and cls not in _REBUILD:
                fail(f"{cls}.{', '.join(saved['rebuilt'])} could not be saved and cannot be rebuilt")
        aggregator = self.aggregator
        if not isinstance(aggregator, Stateful):
            fail(f"{aggregator!r} keeps no state between steps")
        aggregator.reset()
        for path, saved in state["modules"].items():
            module = modules[path]
            for name, value in saved["attributes"].items():
                setattr(module, name, _decode(value))  # a registered buffer stays one
        for path, saved in state["modules"].items():
            if saved["rebuilt"]:
                _REBUILD[type(modules[path]).__name__](modules[path])

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        return torch.stack([losses[t].float() for t in self.tasks]).sum()

    def backward(self, total: Tensor, losses: dict[str, Tensor], network: SharedNetwork | None) -> dict[str, Tensor]:
        """Heads' gradients from their own losses, the shared parameters' from the aggregated
        Jacobian (``total`` is not used). Returns the aggregator's task weights when it has them
        (else an empty dict).

        Runs outside autocast: the Gramian and the aggregators' solvers need float32.
        """
        if network is None:
            raise ValueError(f"weighting {self.method!r} aggregates gradients on a shared network; none was given")
        with torch.autocast(device_type=network.features[0].device.type, enabled=False):
            mtl_backward([losses[t].float() for t in self.tasks], features=network.features,
                         tasks_params=[network.task_params[t] for t in self.tasks],
                         shared_params=network.shared_params, parallel_chunk_size=self.parallel_chunk_size)
            if _world_size() > 1:
                self.average_over_ranks(network.shared_params, network.task_params)
            weights = jac_to_grad(network.shared_params, self.aggregator)
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
