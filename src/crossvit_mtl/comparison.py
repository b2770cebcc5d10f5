"""Comparing finished runs: every metric with its seed noise, Delta-m both ways, and which
differences are larger than that noise.

A *run* is a run folder (it holds ``metrics_test.json`` or ``metrics.json``) or a folder of run
folders, one per seed (what ``crossvit-mtl sweep`` writes: ``NAME/seed0``, ``NAME/seed1`` ...).
Seeds are matched by folder name across runs and baselines, so each seed's Delta-m is measured
against the baselines trained with the same seed, and differences between two methods are paired
by seed: a run with seed 0 shares its initialisation and data order with every other run of seed 0.

A difference counts as beyond seed noise when the 95 % confidence interval of its mean over the
paired seeds (Student's t with n - 1 degrees of freedom) excludes zero. With three seeds that
interval is wide (t = 4.30): a gain must be consistent across seeds to count.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossvit_mtl.tasks import DELTA_M_CONVENTIONS, DELTA_M_SETS, delta_m, get_task, is_task, task_names

#: the metrics file of each split, as the engine writes it
METRICS_FILES = {"test": "metrics_test.json", "val": "metrics.json"}
#: confidence level of the intervals that decide "beyond seed noise"
CONFIDENCE = 0.95


class ComparisonError(ValueError):
    """A run folder that cannot be compared: one line naming the folder and the problem; ``role``
    says whether it came in as a compared ``run`` or a ``baseline`` (or is about several: None)."""

    def __init__(self, message: str, role: str | None = None):
        super().__init__(message)
        self.role = role


@dataclass
class Group:
    """One configuration: its name and its results per seed (seed folder name -> task -> metric -> value)."""

    name: str
    seeds: dict[str, dict[str, dict[str, float]]]
    baseline: bool = False
    delta: dict[str, dict[str, float]] = field(default_factory=dict)  # convention -> seed -> Delta-m
    task_delta: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> seed -> its own Delta-m


def read_metrics_file(path: str | Path) -> dict[str, Any]:
    """A metrics JSON file as the engine writes it (``metrics.json``, ``metrics_test.json``);
    ``ValueError`` naming the file otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
        payload = json.loads(data.decode("utf-8")) if data else None
    except FileNotFoundError:
        raise ValueError(f"{path}: missing (has the run's fit finished?)") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, expected a file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not data:
        raise ValueError(f"{path}: empty file")
    results = payload.get("results") if isinstance(payload, dict) else None
    if not (isinstance(results, dict) and all(isinstance(v, dict) for v in results.values())):
        raise ValueError(f"{path}: not a metrics file of crossvit-mtl (no results per task)")
    assert isinstance(payload, dict)  # results were found in it
    return payload


def read_metrics(run: Path, split: str) -> dict[str, dict[str, float]]:
    """A run folder's scalar metrics of ``split``, task -> metric -> value (NaN where the engine wrote null)."""
    path = Path(run) / METRICS_FILES[split]
    if not path.exists():
        hint = ("evaluate its best checkpoint with `crossvit-mtl test`, or fit with --test_after_fit true"
                if split == "test" else "has its fit finished?")
        raise ComparisonError(f"{run}: no {path.name} ({hint})")
    try:
        results = read_metrics_file(path)["results"]
    except ValueError as err:
        raise ComparisonError(str(err)) from None
    unknown = [task for task in results if not is_task(task)]
    if unknown:
        raise ComparisonError(f"{path}: task {unknown[0]!r} is not a registered task (is the package that "
                              "defines it installed?)")
    return {task: {k: math.nan if v is None else float(v) for k, v in values.items()
                   if k in get_task(task).metrics and (v is None or isinstance(v, (int, float)))}
            for task, values in results.items()}


def load_group(folder: str | Path, split: str = "test", baseline: bool = False) -> Group:
    """A run folder (one seed) or a folder of seed run folders, as one :class:`Group`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ComparisonError(f"{folder}: not a folder")
    name = METRICS_FILES[split]
    if (folder / name).is_file() or not any((sub / name).is_file() for sub in folder.iterdir() if sub.is_dir()):
        seeds = {"": read_metrics(folder, split)}
    else:
        seeds = {sub.name: read_metrics(sub, split) for sub in sorted(folder.iterdir())
                 if sub.is_dir() and (sub / name).is_file()}
    return Group(folder.name, seeds, baseline)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN for a single value) of the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


def interval(differences: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided t confidence interval (NaN bounds below 2 values)."""
    from scipy.stats import t

    mean, std = mean_std(differences)
    n = len([d for d in differences if math.isfinite(d)])
    if n < 2 or not math.isfinite(std):
        return mean, math.nan, math.nan
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return mean, mean - half, mean + half


def beyond_noise(low: float, high: float) -> bool:
    return math.isfinite(low) and math.isfinite(high) and (low > 0 or high < 0)


@dataclass
class Comparison:
    """Runs and baselines with Delta-m per seed and paired differences to a reference run."""

    groups: list[Group]
    reference: str | None
    split: str
    metric_set: str = "default"

    @property
    def baselines(self) -> list[Group]:
        return [g for g in self.groups if g.baseline]

    @property
    def runs(self) -> list[Group]:
        return [g for g in self.groups if not g.baseline]

    def columns(self) -> list[tuple[str, str]]:
        """Every (task, metric) any group has, in the engine's order."""
        return [(task, key) for task in task_names() for key in get_task(task).metrics
                if any(key in seed.get(task, {}) for g in self.groups for seed in g.seeds.values())]

    def values(self, group: Group, task: str, key: str) -> list[float]:
        return [seed[task][key] for seed in group.seeds.values() if key in seed.get(task, {})]

    def paired(self, group: Group, task: str | None, key: str) -> list[float]:
        """Per matched seed: ``group`` minus the reference run, for a metric or for Delta-m (``task`` None)."""
        ref = next(g for g in self.groups if g.name == self.reference)
        if task is None:
            mine, theirs = group.delta[key], ref.delta[key]
        else:
            mine = {s: r[task][key] for s, r in group.seeds.items() if key in r.get(task, {})}
            theirs = {s: r[task][key] for s, r in ref.seeds.items() if key in r.get(task, {})}
        return [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))]


def compare(runs: Sequence[str | Path], baselines: Sequence[str | Path], split: str = "test",
            reference: str | None = None, metric_set: str = "default") -> Comparison:
    """Load runs and single-task baselines, and give every run its Delta-m per seed in both conventions.

    ``reference`` names the run the others are tested against (seed-paired); None picks a run
    named ``ew`` when there is one. ``metric_set`` is the metrics Delta-m averages
    (``tasks.DELTA_M_SETS``: ``default``, ``single`` for MTI-Net's one per task, ``all``).
    """
    if split not in METRICS_FILES:
        raise ComparisonError(f"split must be one of {', '.join(METRICS_FILES)}, got {split!r}")
    if metric_set not in DELTA_M_SETS:
        raise ComparisonError(f"metric set must be one of {', '.join(DELTA_M_SETS)}, got {metric_set!r}")
    base_groups = [_load(b, split, "baseline") for b in baselines]
    owner: dict[str, str] = {}
    for group in base_groups:
        for task in next(iter(group.seeds.values())):
            if task in owner:
                raise ComparisonError(f"{group.name}: a second baseline for task {task!r} "
                                      f"(also {owner[task]})", "baseline")
            owner[task] = group.name
    run_groups = [_load(r, split, "run") for r in runs]
    names = [g.name for g in base_groups + run_groups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ComparisonError(f"two runs are named {duplicates[0]!r}; compare folders with distinct names")
    for group in run_groups:
        for seed, results in group.seeds.items():
            missing = [t for t in results if t not in owner]
            if missing:
                raise ComparisonError(f"{group.name}: no baseline for task(s) {', '.join(missing)}", "run")
            reference_results = {}
            for b in base_groups:
                matched = b.seeds[seed] if seed in b.seeds else _mean_results(b)
                reference_results.update({t: v for t, v in matched.items() if t in results})
            mine, theirs = _finite(results), _finite(reference_results)
            for convention in DELTA_M_CONVENTIONS:
                try:
                    value = delta_m(mine, theirs, metrics=metric_set, average=convention)
                except ValueError as err:
                    raise ComparisonError(f"{group.name}{' ' + seed if seed else ''}: {err}", "run") from None
                group.delta.setdefault(convention, {})[seed] = value
            for task in mine:  # which tasks gain and which lose: the terms "tasks" averages
                try:
                    value = delta_m({task: mine[task]}, {task: theirs[task]}, metrics=metric_set)
                except ValueError:  # none of the task's Delta-m metrics is finite in this seed
                    continue
                group.task_delta.setdefault(task, {})[seed] = value
    if reference is None:
        reference = "ew" if any(g.name == "ew" for g in run_groups) else None
    elif reference not in [g.name for g in run_groups]:
        raise ComparisonError(f"reference run {reference!r} is not among the runs "
                              f"({', '.join(g.name for g in run_groups)})")
    return Comparison(base_groups + run_groups, reference, split, metric_set)


def _load(folder: str | Path, split: str, role: str) -> Group:
    try:
        return load_group(folder, split, baseline=role == "baseline")
    except ComparisonError as err:
        raise ComparisonError(str(err), role) from None


def _finite(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {t: {k: v for k, v in m.items() if math.isfinite(v)} for t, m in results.items()}


def _mean_results(group: Group) -> dict[str, dict[str, float]]:
    """A baseline without the matching seed: its mean over seeds."""
    out: dict[str, dict[str, float]] = {}
    for results in group.seeds.values():
        for task, values in results.items():
            for key in values:
                out.setdefault(task, {})[key] = mean_std([r[task][key] for r in group.seeds.values()
                                                          if key in r.get(task, {})])[0]
    return out


# ----------------------------------------------------------------------------------- output

_ARROW = {True: "↑", False: "↓"}


def _cell(values: list[float], digits: int = 4) -> str:
    mean, std = mean_std(values)
    if not math.isfinite(mean):
        return ""
    return f"{mean:.{digits}f}" if not math.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _signed(value: float) -> str:
    """``+1.23`` / ``-1.23``, and ``+0.00`` for what rounds to zero (never ``-0.00``)."""
    return f"{round(value, 2) + 0.0:+.2f}"


def _delta_cell(values: list[float], mark: bool) -> str:
    mean, std = mean_std(values)
    if not math.isfinite(mean):
        return ""
    text = _signed(mean) if not math.isfinite(std) else f"{_signed(mean)} ± {std:.2f}"
    if mark:
        _, low, high = interval(values)
        text += " *" if beyond_noise(low, high) else ""
    return text


def _diff_cell(values: list[float]) -> str:
    mean, low, high = interval(values)
    if not math.isfinite(mean):
        return ""
    if not math.isfinite(low):
        return _signed(mean)
    return f"{_signed(mean)} [{_signed(low)}, {_signed(high)}]" + (" *" if beyond_noise(low, high) else "")


def to_markdown(comparison: Comparison, columns: list[tuple[str, str]] | None = None) -> str:
    """One row per baseline then per run: mean ± std over seeds of every metric, Delta-m in both
    conventions (``*``: its 95 % interval excludes 0, i.e. the gain or loss against the single-task
    baselines is beyond seed noise) and, with a reference run, the seed-paired difference of each
    Delta-m to it with its 95 % interval (``*``: beyond seed noise)."""
    columns = comparison.columns() if columns is None else columns
    header = ["run", "seeds"] + [f"{task} {info.label} {_ARROW[info.higher_is_better]}"
                                 for task, key in columns for info in [get_task(task).metrics[key]]]
    header += [f"Δm {c} (%) ↑" for c in DELTA_M_CONVENTIONS]
    ref = comparison.reference
    if ref:
        header += [f"Δm {c} − {ref}" for c in DELTA_M_CONVENTIONS]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for group in comparison.groups:
        cells = [group.name + (" (baseline)" if group.baseline else ""), str(len(group.seeds))]
        cells += [_cell(comparison.values(group, task, key)) for task, key in columns]
        for convention in DELTA_M_CONVENTIONS:
            cells.append(_delta_cell(list(group.delta.get(convention, {}).values()), mark=True))
        if ref:
            for convention in DELTA_M_CONVENTIONS:
                cells.append("" if group.baseline or group.name == ref
                             else _diff_cell(comparison.paired(group, None, convention)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_delta_markdown(comparison: Comparison) -> str:
    """One row per compared run: each task's own Delta-m (the mean relative change of its Delta-m
    metrics against its single-task baseline, %), mean ± std over seeds, ``*`` where its 95 %
    interval excludes 0. The "tasks" convention is the mean of these columns."""
    tasks = [t for t in task_names() if any(t in g.task_delta for g in comparison.runs)]
    header = ["run", "seeds"] + [f"Δ {task} (%) ↑" for task in tasks]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for group in comparison.runs:
        cells = [group.name, str(len(group.seeds))]
        cells += [_delta_cell(list(group.task_delta.get(task, {}).values()), mark=True) for task in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(comparison: Comparison, every_metric: bool = False) -> str:
    """What ``compare`` and ``sweep`` print: the table of each task's primary metric (or of every
    metric) with Delta-m both ways, then each task's own Delta-m."""
    table = to_markdown(comparison, None if every_metric else summary_columns(comparison))
    which = f"Δm over {DELTA_M_SETS[comparison.metric_set]} (`--delta_m_set`)."
    return f"{table}\n\n{which}\n\nEach task against its single-task baseline:\n\n{task_delta_markdown(comparison)}"


def summary_columns(comparison: Comparison) -> list[tuple[str, str]]:
    """Each task's primary metric: the condensed table."""
    present = {task for task, _ in comparison.columns()}
    return [(task, get_task(task).primary_metric) for task in task_names() if task in present]


def to_json(comparison: Comparison) -> dict[str, Any]:
    """Everything the tables show, as data: per group the per-seed results, mean and std of every
    metric and of Delta-m in both conventions, and the paired differences to the reference."""
    out: dict[str, Any] = {"split": comparison.split, "reference": comparison.reference,
                           "confidence": CONFIDENCE, "delta_m_conventions": DELTA_M_CONVENTIONS,
                           "delta_m_set": comparison.metric_set, "groups": []}
    for group in comparison.groups:
        entry: dict[str, Any] = {"name": group.name, "baseline": group.baseline, "seeds": group.seeds,
                                 "mean": {}, "std": {}, "delta_m": {}}
        for task, key in comparison.columns():
            values = comparison.values(group, task, key)
            if values:
                mean, std = mean_std(values)
                entry["mean"].setdefault(task, {})[key] = _json_number(mean)
                entry["std"].setdefault(task, {})[key] = _json_number(std)
        for convention, per_seed in group.delta.items():
            record = _seed_summary(per_seed)
            if comparison.reference and not group.baseline and group.name != comparison.reference:
                diff, dlow, dhigh = interval(comparison.paired(group, None, convention))
                record["minus_reference"] = {"mean": _json_number(diff), "ci": [_json_number(dlow), _json_number(dhigh)],
                                             "beyond_noise": beyond_noise(dlow, dhigh)}
            entry["delta_m"][convention] = record
        entry["task_delta_m"] = {task: _seed_summary(per_seed) for task, per_seed in group.task_delta.items()}
        out["groups"].append(entry)
    return out


def _seed_summary(per_seed: dict[str, float]) -> dict[str, Any]:
    """A Delta-m over seeds as data: the values, mean, std, 95 % interval and whether it excludes 0."""
    values = list(per_seed.values())
    mean, std = mean_std(values)
    _, low, high = interval(values)
    return {"per_seed": per_seed, "mean": _json_number(mean), "std": _json_number(std),
            "ci": [_json_number(low), _json_number(high)], "beyond_noise": beyond_noise(low, high)}


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None
