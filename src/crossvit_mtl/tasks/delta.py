"""Multi-task gain Delta-m against single-task baselines, in percent, in its two conventions.

Each (task, metric) pair gives a relative change ``(-1)^l * (M - M_b) / M_b * 100`` (l = 1 where
lower is better); positive means better than the baseline. The literature averages them two ways:

* ``metrics``: the mean over all (task, metric) pairs (Maninis et al. 2019, Vandenhende et al.
  2021; Nash-MTL, CAGrad, FAMO and the MTAN-protocol tables that follow them);
* ``tasks``: the mean over each task's metrics first, then over tasks (LibMTL's
  ``count_improvement``, and the papers that report LibMTL's figures).

With many metrics on one task (normals report five) the two can disagree even in sign, so the
project prints both, named.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from crossvit_mtl.tasks.base import Task
from crossvit_mtl.tasks.registry import get_task, is_task

#: Named metric sets, each task's choice (``Task.delta_metrics`` / ``single_delta_metric``):
#: ``default`` is what MTAN / LibMTL / Nash-MTL average (it leaves out ``thesis_iou``, a function of
#: pixel accuracy, and depth's rmse / log_rmse / delta_k); ``single`` is one metric per task, as
#: MTI-Net and the PASCAL-Context / NYUD-v2 papers after it report Delta-m (saliency by mIoU,
#: edges by odsF, depth by RMSE); ``all`` is every scalar metric.
DELTA_M_SETS: dict[str, str] = {
    "default": "each task's Delta-m metrics (MTAN, LibMTL, Nash-MTL)",
    "single": "one metric per task (MTI-Net, ATRC, InvPT)",
    "all": "every scalar metric of every task",
}


def set_members(task: Task, name: str) -> tuple[str, ...]:
    """The metrics of ``task`` that metric set ``name`` (:data:`DELTA_M_SETS`) averages."""
    if name == "all":
        return tuple(task.metrics)
    if name == "single":
        return (task.single_delta_metric,) if task.single_delta_metric else ()
    return task.delta_metrics


def _selected_pairs(results, baselines, metrics) -> list[tuple[str, str]]:
    if metrics is None or isinstance(metrics, str):
        name = "default" if metrics is None else metrics
        if name not in DELTA_M_SETS:
            raise ValueError(f"metric set must be one of {', '.join(DELTA_M_SETS)}, got {name!r}")
        return [(task, key) for task in results if is_task(task) for key in set_members(get_task(task), name)
                if key in results.get(task, {}) and key in baselines.get(task, {})]
    if not isinstance(metrics, Mapping):
        raise TypeError('metrics must be None, a set name or a mapping task -> metric names')
    pairs = [(task, key) for task, keys in metrics.items() for key in _as_names(keys)]
    for task, key in pairs:
        known = get_task(task).metrics if is_task(task) else {}
        if key not in known:
            raise ValueError(f"no direction known for {task}/{key}; known: {', '.join(known)}")
        for what, table in (("results", results), ("baselines", baselines)):
            if key not in table.get(task, {}):
                raise KeyError(f"{task}/{key} requested but missing from {what}")
    return pairs


def _as_names(keys: str | Iterable[str]) -> list[str]:
    return [keys] if isinstance(keys, str) else list(keys)


#: the two averaging conventions, by name, and who uses them
DELTA_M_CONVENTIONS: dict[str, str] = {
    "metrics": "mean over (task, metric) pairs: Nash-MTL, CAGrad, FAMO, MTAN-protocol tables",
    "tasks": "mean over each task's metrics, then over tasks: LibMTL",
}


def delta_m(results: Mapping[str, Mapping[str, float]], baselines: Mapping[str, Mapping[str, float]],
            metrics: None | str | Mapping[str, str | Iterable[str]] = None, average: str = "metrics") -> float:
    """Delta-m in percent of ``results`` against single-task ``baselines`` (task -> metric -> value).

    ``metrics`` chooses the pairs: None or a name of :data:`DELTA_M_SETS` -> that set's pairs
    present in both dicts; a mapping task -> names -> exactly those (each must be present in both). ``average`` is the convention
    (:data:`DELTA_M_CONVENTIONS`): ``metrics`` or ``tasks``. A zero or non-finite baseline, a
    non-finite result, or an empty selection raises ``ValueError``.
    """
    if average not in DELTA_M_CONVENTIONS:
        raise ValueError(f"average must be one of {', '.join(DELTA_M_CONVENTIONS)}, got {average!r}")
    pairs = _selected_pairs(results, baselines, metrics)
    if not pairs:
        raise ValueError("no (task, metric) pair is present in both results and baselines")
    terms: dict[str, list[float]] = {}
    for task, key in pairs:
        value, base = float(results[task][key]), float(baselines[task][key])
        if not (math.isfinite(value) and math.isfinite(base)):
            raise ValueError(f"{task}/{key}: non-finite value (result {value}, baseline {base})")
        if base == 0:
            raise ValueError(f"{task}/{key}: baseline is 0, the relative change is undefined; "
                             "leave this metric out via `metrics=`")
        sign = 1.0 if get_task(task).metrics[key].higher_is_better else -1.0
        terms.setdefault(task, []).append(sign * (value - base) / base * 100.0)
    if average == "metrics":
        flat = [term for values in terms.values() for term in values]
        return sum(flat) / len(flat)
    return sum(sum(values) / len(values) for values in terms.values()) / len(terms)
