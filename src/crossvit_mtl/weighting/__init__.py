"""Multi-task balancing, chosen by name in the config (``model.weighting``, ``model.weighting_options``).

Two families share one interface (``forward(losses) -> (total, weights)``, ``on_epoch_end``):
loss weightings (``loss_weighting.py``: ew / fixed, uw, dwa, rlw, gls) combine the losses before a
plain backward pass; gradient aggregators (``gradient.py``: torchjd's upgrad, mgda, pcgrad, cagrad,
nashmtl ...) combine per-task gradients on the shared network.
"""
from __future__ import annotations

from typing import Any

from crossvit_mtl.weighting.gradient import AGGREGATORS, GradientAggregation
from crossvit_mtl.weighting.loss_weighting import (
    LOSS_WEIGHTINGS,
    DynamicWeightAverage,
    EqualWeighting,
    GeometricLossStrategy,
    LossWeighting,
    RandomLossWeighting,
    UncertaintyWeighting,
)

#: every name ``build_weighting`` accepts, loss weightings first
WEIGHTINGS: tuple[str, ...] = tuple(LOSS_WEIGHTINGS) + tuple(AGGREGATORS)


def build_weighting(name: str, tasks: list[str], options: dict[str, Any] | None = None) -> LossWeighting:
    """The method ``name`` for ``tasks``; a wrong name or option raises ``ValueError`` naming it."""
    options = dict(options or {})
    try:
        if name in LOSS_WEIGHTINGS:
            return LOSS_WEIGHTINGS[name](tasks, **options)
        if name in AGGREGATORS:
            return GradientAggregation(tasks, name, **options)
    except TypeError as err:  # an option the method does not take
        raise ValueError(f"weighting_options for {name!r}: {err}") from None
    except ImportError as err:  # torchjd's solvers are optional extras: `pip install "torchjd[full]"`
        raise ValueError(f"weighting {name!r}: {err}") from None
    raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {name!r}")


__all__ = [
    "AGGREGATORS", "LOSS_WEIGHTINGS", "WEIGHTINGS", "build_weighting", "LossWeighting", "EqualWeighting",
    "UncertaintyWeighting", "DynamicWeightAverage", "RandomLossWeighting", "GeometricLossStrategy",
    "GradientAggregation",
]
