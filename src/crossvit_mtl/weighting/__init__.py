"""Multi-task balancing, chosen by name in the config (``model.weighting``, ``model.weighting_options``).

Every method keeps one contract (``base.Weighting``: ``forward(losses) -> total``,
``backward(total, losses, network) -> weights``, ``on_epoch_end``): loss weightings
(``loss_weighting.py``: fixed / ew, uw, dwa, rlw, gls) backpropagate their weighted total; gradient
aggregators (``gradient.py``: torchjd's upgrad, mgda, pcgrad, cagrad, nashmtl ...) combine per-task
gradients on the shared network.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict, get_args

from crossvit_mtl.weighting.base import SharedNetwork, Weighting
from crossvit_mtl.weighting.gradient import AGGREGATORS, GradientAggregation
from crossvit_mtl.weighting.loss_weighting import (
    ALIASES,
    LOSS_WEIGHTINGS,
    DynamicWeightAverage,
    FixedWeighting,
    GeometricLossStrategy,
    LossWeighting,
    RandomLossWeighting,
    UncertaintyWeighting,
)

#: every name ``build_weighting`` accepts, loss weightings first (the config's type: a name outside
#: it fails while the config is parsed)
WeightingName = Literal["ew", "fixed", "uw", "dwa", "rlw", "gls", "upgrad", "mgda", "pcgrad", "cagrad", "nashmtl",
                        "imtlg", "alignedmtl", "dualproj", "graddrop", "config", "fairgrad", "gradvac", "mean",
                        "sum", "random"]
WEIGHTINGS: tuple[str, ...] = get_args(WeightingName)


class WeightingOptions(TypedDict, total=False):
    """``model.weighting_options``: every option some method takes, typed; which method takes which
    is the method's own signature to say (``build_weighting`` names a misplaced one)."""

    temperature: float            # dwa: softmax temperature of the loss ratios (> 0)
    init: float                   # uw: starting log-variance
    parallel_chunk_size: int | None  # aggregators: tasks differentiated at once (torchjd's mtl_backward)
    pref_vector: list[float]      # upgrad, dualproj, alignedmtl, config
    epsilon: float                # mgda
    max_iters: int | None         # mgda, fairgrad
    c: float                      # cagrad
    norm_eps: float               # cagrad
    max_norm: float               # nashmtl
    update_weights_every: int     # nashmtl
    optim_niter: int              # nashmtl
    scale_mode: Literal["min", "median", "rmse"]  # alignedmtl
    leak: list[float]             # graddrop
    alpha: float                  # fairgrad
    beta: float                   # gradvac
    eps: float                    # gradvac


def build_weighting(name: str, tasks: list[str], options: Mapping[str, Any] | None = None) -> Weighting:
    """The method ``name`` for ``tasks``; a wrong name or option raises ``ValueError`` naming it."""
    options, method = dict(options or {}), ALIASES.get(name, name)
    try:
        if method in LOSS_WEIGHTINGS:
            return LOSS_WEIGHTINGS[method](tasks, **options)
        if method in AGGREGATORS:
            return GradientAggregation(tasks, method, **options)
    except (TypeError, ValueError) as err:  # an option the method does not take, or a value it refuses
        raise ValueError(f"weighting_options for {name!r}: {err}") from None
    except ImportError as err:  # torchjd's solvers are optional extras: `pip install "torchjd[full]"`
        raise ValueError(f"weighting {name!r}: {err}") from None
    raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {name!r}")


__all__ = [
    "AGGREGATORS", "ALIASES", "LOSS_WEIGHTINGS", "WEIGHTINGS", "WeightingName", "WeightingOptions", "build_weighting",
    "Weighting", "SharedNetwork", "LossWeighting", "FixedWeighting", "UncertaintyWeighting", "DynamicWeightAverage",
    "RandomLossWeighting", "GeometricLossStrategy", "GradientAggregation",
]
