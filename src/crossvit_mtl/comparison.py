"""Comparing finished runs: every metric with its seed noise, Delta-m both ways (over every task and
over the dense tasks alone), and which differences survive a correction for testing many at once.

A *run* is a run folder (it holds ``metrics_test.json`` or ``metrics.json``) or a folder of run
folders, one per seed (what ``crossvit-mtl sweep`` writes: ``NAME/seed0``, ``NAME/seed1`` ...).
Seeds are matched by folder name across runs and baselines, so each seed's Delta-m is measured
against the baselines trained with the same seed, and differences between two methods are paired
by seed. A run seed without the same seed of every baseline is refused, not compared with some
other seed or a mean.

**Intervals.** A figure averaged over n seeds that were all tested on the same N test samples
varies with the seeds and with the draw of those N samples. The first part is the seeds' spread,
s^2 / n; the second is measured by a bootstrap over test samples (Efron and Tibshirani, *An
Introduction to the Bootstrap*, ch. 6): every test saves each sample's summed metric states
(:data:`SAMPLES_FILE`), so B resamples of the N samples, drawn once and shared by every run and
seed (they saw the same samples), recompute every metric, Delta-m and difference exactly; the
variance over resamples of the seed mean is the test set's part, v. The interval is
mean ± t * sqrt(s^2 / n + v) with Welch-Satterthwaite degrees of freedom
(s^2/n + v)^2 / ((s^2/n)^2 / (n - 1) + v^2 / (N - 1)). Without per-sample states (the val split, older
runs) v is left out and the interval is the plain seed-paired t-interval, as the output says.

**Many comparisons.** Every figure that can carry a mark (each run's Delta-m, each task's own
Delta, each difference to the reference run) is one test of the null "no difference", with its
two-sided p-value from the interval's t. Holm's step-down correction (Holm 1979) over all of them
keeps the chance of any false mark at 5 %; ``*`` marks only what survives it (``correction``:
``bonferroni``, or ``none`` for the uncorrected 95 % intervals).

**Published figures.** ``published`` (a benchmark of ``data.published``) adds the papers' figures
as rows beside the runs, on the runs' tasks. They are figures, not runs: no seeds, no sample
states, nothing tested. Their Delta-m is against each seed the baselines share (the papers' own
single-task runs are not published), over the metrics they report.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossvit_mtl.tasks import DELTA_M_CONVENTIONS, DELTA_M_SETS, delta_m, get_task, is_task, task_names
from crossvit_mtl.tasks.delta import set_members

#: the metrics file of each split, as the engine writes it
METRICS_FILES = {"test": "metrics_test.json", "val": "metrics.json"}
#: each test sample's summed metric states, beside metrics_test.json (written by the engine's test)
SAMPLES_FILE = "test_samples.npz"
#: family-wise level of the marks; each interval's confidence
CONFIDENCE = 0.95
#: corrections for testing every markable figure at once
CORRECTIONS = {
    "holm": "Holm's step-down correction over every test: family-wise error at most 5 %",
    "bonferroni": "Bonferroni's: each test at 5 % / m, intervals at 1 - 5 % / m",
    "none": "none: each test at 5 % on its own",
}
#: bootstrap resamples of the test samples (0: no test-set noise)
BOOTSTRAP = 400
#: Delta-m's scopes: every task, and the dense tasks alone (``Task.kind == "dense"``)
SCOPES = ("all", "dense")


class ComparisonError(ValueError):
    """A run folder that cannot be compared: one line naming the folder and the problem; ``role``
    says whether it came in as a compared ``run`` or a ``baseline`` (or is about several: None)."""

    def __init__(self, message: str, role: str | None = None):
        super().__init__(message)
        self.role = role


Results = dict[str, dict[str, float]]


@dataclass
class Group:
    """One configuration: its name and its results per seed (seed folder name -> task -> metric -> value)."""

    name: str
    seeds: dict[str, Results]
    baseline: bool = False
    #: a paper's figures (``data.published``), not a run: its Delta-m is per baseline seed
    published: bool = False
    #: per seed: the run's checkpoint rule, as its metrics file records it (None: not recorded)
    selection: dict[str, str | None] = field(default_factory=dict)
    #: per seed: the folder the seed's files are in
    folders: dict[str, Path] = field(default_factory=dict)
    #: Delta-m key ("metrics", "tasks", "dense metrics", "dense tasks") -> seed -> value, and its bootstrap resamples
    delta: dict[str, dict[str, float]] = field(default_factory=dict)
    delta_reps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    #: task -> seed -> its own Delta-m, and its resamples
    task_delta: dict[str, dict[str, float]] = field(default_factory=dict)
    task_delta_reps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- files

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


def _scalars(results: dict[str, Any]) -> Results:
    """task -> metric -> float of the task's known scalar metrics (NaN where the engine wrote null)."""
    return {task: {k: math.nan if v is None else float(v) for k, v in values.items()
                   if k in get_task(task).metrics and (v is None or isinstance(v, (int, float)))}
            for task, values in results.items()}


def read_run(run: Path, split: str) -> tuple[Results, str | None]:
    """A run folder's scalar metrics of ``split`` and the checkpoint rule its file records."""
    path = Path(run) / METRICS_FILES[split]
    if not path.exists():
        hint = ("evaluate its checkpoint with `crossvit-mtl test`, or fit with --test_after_fit true"
                if split == "test" else "has its fit finished?")
        raise ComparisonError(f"{run}: no {path.name} ({hint})")
    try:
        payload = read_metrics_file(path)
    except ValueError as err:
        raise ComparisonError(str(err)) from None
    unknown = [task for task in payload["results"] if not is_task(task)]
    if unknown:
        raise ComparisonError(f"{path}: task {unknown[0]!r} is not a registered task (is the package that "
                              "defines it installed?)")
    selection = payload.get("checkpoint_selection")
    return _scalars(payload["results"]), selection if isinstance(selection, str) else None


def read_metrics(run: Path, split: str) -> Results:
    """A run folder's scalar metrics of ``split``, task -> metric -> value (NaN where the engine wrote null)."""
    return read_run(run, split)[0]


def seed_name(seed: int | str) -> str:
    """A seed's folder name: ``seed3`` for 3."""
    return f"seed{seed}" if isinstance(seed, int) or str(seed).isdigit() else str(seed)


def load_group(folder: str | Path, split: str = "test", baseline: bool = False,
               seeds: Sequence[int | str] | None = None) -> Group:
    """A run folder (one seed) or a folder of seed run folders, as one :class:`Group`; ``seeds``
    keeps only those seed folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ComparisonError(f"{folder}: not a folder")
    name = METRICS_FILES[split]
    if (folder / name).is_file() or not any((sub / name).is_file() for sub in folder.iterdir() if sub.is_dir()):
        found = {"": folder}
    else:
        found = {sub.name: sub for sub in sorted(folder.iterdir()) if sub.is_dir() and (sub / name).is_file()}
        if seeds is not None:
            wanted = [seed_name(s) for s in seeds]
            found = {s: path for s, path in found.items() if s in wanted}
            if not found:
                raise ComparisonError(f"{folder}: none of the seeds {', '.join(wanted)} has a {name}")
    group = Group(folder.name, {}, baseline)
    for seed, path in found.items():
        group.seeds[seed], group.selection[seed] = read_run(path, split)
        group.folders[seed] = path
    return group


def write_sample_states(path: str | Path, meta: dict[str, Any], states: dict[str, dict[str, np.ndarray]],
                        digests: dict[str, np.ndarray] | None = None) -> None:
    """Each test sample's metric states (task -> state -> (N, ...)), the data set's description the
    metrics are built from, and per task a digest of each sample's target (which test set it was),
    as :data:`SAMPLES_FILE`; counts are stored as int32 where they fit."""
    arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta))}
    for task, named in states.items():
        for name, array in named.items():
            fits = array.dtype == np.int64 and (not array.size or np.abs(array).max() < 2 ** 31)
            arrays[f"state/{task}/{name}"] = array.astype(np.int32) if fits else array
    for task, digest in (digests or {}).items():
        arrays[f"digest/{task}"] = np.asarray(digest, dtype=np.uint32)
    np.savez_compressed(path, **arrays)


@dataclass
class SampleStates:
    """What a :data:`SAMPLES_FILE` holds."""

    meta: dict[str, Any]
    states: dict[str, dict[str, np.ndarray]]
    digests: dict[str, np.ndarray]

    @property
    def count(self) -> int:
        return len(next(iter(next(iter(self.states.values())).values())))


def read_sample_states(path: str | Path) -> SampleStates:
    """A :data:`SAMPLES_FILE`; ``ValueError`` naming it when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            states: dict[str, dict[str, np.ndarray]] = {}
            digests = {}
            for key in data.files:
                kind, _, rest = key.partition("/")
                if kind == "state":
                    task, name = rest.split("/", 1)
                    states.setdefault(task, {})[name] = data[key]
                elif kind == "digest":
                    digests[rest] = data[key]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a file of per-sample metric states ({err})") from None
    counts = {len(a) for named in states.values() for a in named.values()}
    if not states or len(counts) != 1:
        raise ValueError(f"{path}: not a file of per-sample metric states (tasks hold {sorted(counts)} samples)")
    return SampleStates(meta, states, digests)


# ----------------------------------------------------------------------------------- bootstrap

def bootstrap_counts(samples: int, replicates: int, seed: int = 0) -> np.ndarray:
    """(replicates, samples): how often each test sample appears in each resample of ``samples``
    drawn with replacement (multinomial); fixed by ``seed`` so a comparison prints the same twice."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(samples, np.full(samples, 1.0 / samples), size=replicates)


def replicate_results(sample: SampleStates, counts: np.ndarray, chunk: int = 64) -> list[Results]:
    """Every scalar metric of each resample: the samples' states summed with the resample's
    counts, and each task's metric computed from them as at test time."""
    import torch

    out: list[Results] = [{} for _ in range(len(counts))]
    for task, named in sample.states.items():
        metric = get_task(task).build_metric(sample.meta, "test")
        defaults = {name: state for name in named if isinstance(state := metric.metric_state[name], torch.Tensor)}
        compute = type(metric).compute  # the metric's own formula, without torchmetrics' caching and sync
        keys = get_task(task).metrics
        flat = {name: array.reshape(len(array), -1).astype(np.float64) for name, array in named.items()}
        for start in range(0, len(counts), chunk):
            weights = counts[start:start + chunk].astype(np.float64)
            summed = {name: weights @ array for name, array in flat.items()}
            for row in range(len(weights)):
                for name, default in defaults.items():
                    value = summed[name][row].reshape(default.shape)
                    if not default.is_floating_point():
                        value = np.rint(value)
                    setattr(metric, name, torch.as_tensor(np.asarray(value)).to(default.dtype))
                values = compute(metric)
                out[start + row][task] = {k: float(v) for k, v in values.items()
                                          if k in keys and isinstance(v, (int, float))}
    return out


# ----------------------------------------------------------------------------------- inference

@dataclass
class Estimate:
    """A figure's mean over seeds with its standard error (seeds, and the test set's bootstrap
    variance where known), degrees of freedom and two-sided p-value against 0."""

    mean: float
    se: float
    df: float
    n: int
    test_noise: bool
    p: float = math.nan
    p_adjusted: float = math.nan
    survives: bool = False

    @property
    def testable(self) -> bool:
        return self.n >= 2 and math.isfinite(self.se)

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        if not self.testable:
            return math.nan, math.nan
        if self.se == 0:
            return self.mean, self.mean
        from scipy.stats import t

        half = float(t.ppf(0.5 + confidence / 2, self.df)) * self.se
        return self.mean - half, self.mean + half


def estimate(points: dict[str, float], replicates: dict[str, np.ndarray] | None = None,
             test_samples: int | None = None) -> Estimate:
    """Mean of ``points`` (seed -> value) over seeds, its standard error sqrt(s^2 / n + v) and
    Welch-Satterthwaite degrees of freedom, where v is the variance over bootstrap resamples of the
    seed mean (``replicates``: seed -> value per resample, one resample set shared by every seed)
    and ``test_samples`` the N it resampled; without replicates, v = 0 and df = n - 1."""
    from scipy.stats import t

    seeds = [s for s in sorted(points) if math.isfinite(points[s])]
    values = np.array([points[s] for s in seeds], dtype=np.float64)
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, False)
    mean = float(values.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n, False)
    a = float(values.var(ddof=1)) / n
    b, noise = 0.0, replicates is not None and all(s in replicates for s in seeds)
    if noise:
        assert replicates is not None
        means = np.stack([replicates[s] for s in seeds]).mean(axis=0)
        means = means[np.isfinite(means)]
        noise = len(means) >= 2
        b = float(means.var(ddof=1)) if noise else 0.0
    se = math.sqrt(a + b)
    df_test = (test_samples or 2) - 1
    denominator = a * a / (n - 1) + (b * b / df_test if b else 0.0)
    df = (a + b) ** 2 / denominator if denominator > 0 else math.inf
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(2 * t.sf(abs(mean) / se, df))
    return Estimate(mean, se, df, n, noise, p)


def adjust(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """p-values adjusted for testing them all at once: Holm's step-down (the i-th smallest of m
    multiplied by m - i + 1, then made non-decreasing), Bonferroni's (times m) or none; at most 1."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {method!r}")
    m = len(pvalues)
    if method == "none":
        return [min(1.0, p) for p in pvalues]
    if method == "bonferroni":
        return [min(1.0, m * p) for p in pvalues]
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN for a single value) of the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


# ----------------------------------------------------------------------------------- comparison

@dataclass
class Test:
    """One markable figure: whose, which (``delta`` / ``task`` / ``minus_reference``) and its estimate."""

    group: str
    kind: str
    key: str
    estimate: Estimate

    def label(self, reference: str | None) -> str:
        if self.kind == "task":
            return f"{self.group}: Δ {self.key}"
        if self.kind == "delta":
            return f"{self.group}: Δm {self.key}"
        return f"{self.group}: Δm {self.key} − {reference}"


@dataclass
class Comparison:
    """Runs and baselines with Delta-m per seed, its tests against 0 and the paired differences to a
    reference run, all corrected together."""

    groups: list[Group]
    reference: str | None
    split: str
    metric_set: str = "default"
    correction: str = "holm"
    #: the Delta-m keys, "metrics" and "tasks", then "dense ..." when the tasks are of both kinds
    delta_keys: list[str] = field(default_factory=lambda: list(DELTA_M_CONVENTIONS))
    dense_tasks: list[str] = field(default_factory=list)
    replicates: int = 0
    test_samples: int = 0
    tests: list[Test] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the benchmark whose published figures are rows (``data.published``), or None
    published: str | None = None

    @property
    def baselines(self) -> list[Group]:
        return [g for g in self.groups if g.baseline]

    @property
    def runs(self) -> list[Group]:
        """The compared runs: what is tested (the published rows are not)."""
        return [g for g in self.groups if not (g.baseline or g.published)]

    @property
    def published_rows(self) -> list[Group]:
        return [g for g in self.groups if g.published]

    def columns(self) -> list[tuple[str, str]]:
        """Every (task, metric) any group has, in the engine's order."""
        return [(task, key) for task in task_names() for key in get_task(task).metrics
                if any(key in seed.get(task, {}) for g in self.groups for seed in g.seeds.values())]

    def values(self, group: Group, task: str, key: str) -> list[float]:
        return [seed[task][key] for seed in group.seeds.values() if key in seed.get(task, {})]

    def paired(self, group: Group, key: str) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
        """Per seed the two share: ``group``'s Delta-m ``key`` minus the reference run's (and per resample)."""
        ref = next(g for g in self.groups if g.name == self.reference)
        mine, theirs = group.delta.get(key, {}), ref.delta.get(key, {})
        common = sorted(set(mine) & set(theirs))
        points = {s: mine[s] - theirs[s] for s in common}
        reps_mine, reps_theirs = group.delta_reps.get(key), ref.delta_reps.get(key)
        reps = ({s: reps_mine[s] - reps_theirs[s] for s in common if s in reps_mine and s in reps_theirs}
                if reps_mine is not None and reps_theirs is not None else None)
        return points, reps

    def test(self, group: str, kind: str, key: str) -> Test | None:
        return next((t for t in self.tests if (t.group, t.kind, t.key) == (group, kind, key)), None)

    def interval_confidence(self) -> float:
        """The confidence of the printed intervals: 95 %, or 1 - 5 % / m under Bonferroni."""
        family = len([t for t in self.tests if t.estimate.testable])
        return 1 - (1 - CONFIDENCE) / max(family, 1) if self.correction == "bonferroni" else CONFIDENCE


def compare(runs: Sequence[str | Path], baselines: Sequence[str | Path], split: str = "test",
            reference: str | None = None, metric_set: str = "default", seeds: Sequence[int | str] | None = None,
            correction: str = "holm", bootstrap: int = BOOTSTRAP, published: str | None = None) -> Comparison:
    """Load runs and single-task baselines, give every run its Delta-m per seed in both conventions
    (over every task, and over the dense tasks when the tasks are of both kinds) and each task's own
    Delta, test them and the seed-paired differences to the reference run, and correct the tests.

    ``reference`` names the run the others are tested against; None picks a run named ``ew`` when
    there is one. ``metric_set`` is the metrics Delta-m averages (``tasks.DELTA_M_SETS``).
    ``seeds`` keeps only those seed folders (e.g. the test seeds of a sweep, not its screening
    seed). ``bootstrap`` resamples of the test samples add the test set's noise (0: none).
    ``published`` (``pascal_context``, ``nyud_v2``) adds the papers' figures as rows; without
    baselines the runs and those rows are shown, with no Delta-m and nothing tested.
    """
    if split not in METRICS_FILES:
        raise ComparisonError(f"split must be one of {', '.join(METRICS_FILES)}, got {split!r}")
    if metric_set not in DELTA_M_SETS:
        raise ComparisonError(f"metric set must be one of {', '.join(DELTA_M_SETS)}, got {metric_set!r}")
    if correction not in CORRECTIONS:
        raise ComparisonError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    if not baselines and reference is not None:
        raise ComparisonError("a reference run compares Delta-m, which needs single-task baselines")
    base_groups = [_load(b, split, "baseline", seeds) for b in baselines]
    owner: dict[str, str] = {}
    for group in base_groups:
        for task in next(iter(group.seeds.values())):
            if task in owner:
                raise ComparisonError(f"{group.name}: a second baseline for task {task!r} "
                                      f"(also {owner[task]})", "baseline")
            owner[task] = group.name
    run_groups = [_load(r, split, "run", seeds) for r in runs]
    rows = published_groups(published, run_groups) if published is not None else []
    names = [g.name for g in base_groups + run_groups + rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ComparisonError(f"two runs are named {duplicates[0]!r}; compare folders with distinct names")
    if reference is None:
        reference = "ew" if base_groups and any(g.name == "ew" for g in run_groups) else None
    elif reference not in [g.name for g in run_groups]:
        raise ComparisonError(f"reference run {reference!r} is not among the runs "
                              f"({', '.join(g.name for g in run_groups)})")
    comparison = Comparison(base_groups + run_groups + rows, reference, split, metric_set, correction,
                            published=published)
    if not base_groups:  # the figures side by side: no Delta-m, nothing to test
        comparison.delta_keys = []
        return comparison
    _check_pairing(run_groups, base_groups, owner)
    usable = {g.name: _common_metrics(g, comparison.warnings) for g in comparison.groups}
    kinds = {get_task(t).kind for t in owner}
    if "dense" in kinds and len(kinds) > 1:
        comparison.dense_tasks = [t for t in task_names() if t in owner and get_task(t).kind == "dense"]
        comparison.delta_keys += [f"dense {c}" for c in DELTA_M_CONVENTIONS]
    replicates = _replicates(comparison, split, bootstrap)
    for group in run_groups:
        for seed, results in group.seeds.items():
            missing = [t for t in results if t not in owner]
            if missing:
                raise ComparisonError(f"{group.name}: no baseline for task(s) {', '.join(missing)}", "run")
            mine = _restrict(results, usable[group.name])
            theirs = _baseline_results(mine, {b.name: b.seeds[seed] for b in base_groups if seed in b.seeds},
                                       owner, usable)
            try:
                deltas, per_task = _deltas(comparison, mine, theirs)
            except ValueError as err:
                raise ComparisonError(f"{group.name}{' ' + seed if seed else ''}: {err}", "run") from None
            for key, value in deltas.items():
                group.delta.setdefault(key, {})[seed] = value
            for task, value in per_task.items():
                group.task_delta.setdefault(task, {})[seed] = value
            if replicates:
                _replicate_deltas(comparison, group, seed, replicates, usable, base_groups)
    for group in rows:
        _published_deltas(comparison, group, base_groups, owner, usable)
    _check_metric_sets(comparison, usable, owner)
    _check_selection(comparison)
    _run_tests(comparison)
    return comparison


def _load(folder: str | Path, split: str, role: str, seeds: Sequence[int | str] | None) -> Group:
    try:
        return load_group(folder, split, baseline=role == "baseline", seeds=seeds)
    except ComparisonError as err:
        raise ComparisonError(str(err), role) from None


def published_groups(dataset: str, runs: Sequence[Group]) -> list[Group]:
    """The papers' rows of ``dataset`` as groups of one "seed", on the tasks the runs have."""
    from crossvit_mtl.data.published import published

    try:
        rows = published(dataset)
    except ValueError as err:
        raise ComparisonError(str(err)) from None
    tasks = {task for group in runs for seed in group.seeds.values() for task in seed}
    groups = [Group(f"{row.method} (published)", {"": {t: dict(v) for t, v in row.results.items() if t in tasks}},
                    published=True) for row in rows]
    if not any(results for g in groups for results in g.seeds.values()):
        raise ComparisonError(f"the runs share no task with the published {dataset} figures "
                              f"({', '.join(rows[0].results)})", "run")
    return groups


def _published_deltas(comparison: Comparison, group: Group, base_groups: list[Group], owner: dict[str, str],
                       usable: dict[str, dict[str, set[str]]]) -> None:
    """A published row's Delta-m and task Deltas against each seed its tasks' baselines share."""
    results = _restrict(group.seeds[""], usable[group.name])
    bases = [b for b in base_groups if any(owner.get(t) == b.name for t in results)]
    shared = sorted(set.intersection(*(set(b.seeds) for b in bases))) if bases else []
    if not shared:
        comparison.warnings.append(f"{group.name}: the baselines of its tasks share no seed; no Δm")
        return
    for seed in shared:
        theirs = _baseline_results(results, {b.name: b.seeds[seed] for b in bases}, owner, usable)
        try:
            deltas, per_task = _deltas(comparison, results, theirs)
        except ValueError as err:
            raise ComparisonError(f"{group.name}: {err}") from None
        for key, value in deltas.items():
            group.delta.setdefault(key, {})[seed] = value
        for task, value in per_task.items():
            group.task_delta.setdefault(task, {})[seed] = value


def published_note(comparison: Comparison) -> str:
    """What the published rows are, and which Delta-m metrics they do not report (left out of theirs)."""
    rows = comparison.published_rows
    if not rows:
        return ""
    measured = {(task, key) for g in comparison.groups if not g.published for seed in g.seeds.values()
                for task, values in seed.items() for key in values}
    lacking = sorted({f"{task} {key}" for g in rows for results in g.seeds.values() for task in results
                      for key in set_members(get_task(task), comparison.metric_set)
                      if key not in results[task] and (task, key) in measured})
    where = "val, edges on its 2498-image subset val_edge" if comparison.published == "pascal_context" else "val"
    text = (f"Published rows: the papers' {comparison.published} figures on {where}, in this table's units (mIoU, "
            "maxF and odsF as fractions); `crossvit_mtl.data.published` gives each one's source, backbone and schedule.")
    if any(g.delta for g in rows):
        text += (" Their Δm is against each seed of the baselines given here (mean ± std over those seeds), not "
                 "the papers' own single-task runs, and is not tested")
        text += f"; it leaves out what they do not report: {', '.join(lacking)}." if lacking else "."
    return text


def _check_pairing(runs: list[Group], baselines: list[Group], owner: dict[str, str]) -> None:
    """Every run seed needs the same seed of the baseline of each of its tasks."""
    for group in runs:
        for seed, results in group.seeds.items():
            for base in baselines:
                if seed not in base.seeds and any(owner.get(t) == base.name for t in results):
                    has = ", ".join(s or "(one run folder)" for s in base.seeds)
                    raise ComparisonError(
                        f"{group.name}{' ' + seed if seed else ''}: baseline {base.name} has no "
                        f"{seed or 'single run folder'} (it has {has}); Delta-m pairs each seed with the "
                        "baselines of the same seed: compare the seeds both have (--seeds)", "run")


def _baseline_results(mine: Results, baselines: dict[str, Results], owner: dict[str, str],
                      usable: dict[str, dict[str, set[str]]]) -> Results:
    """The single-task results of a run's tasks, each from its own baseline, over its usable metrics."""
    return {t: _restrict(baselines[owner[t]], usable[owner[t]])[t] for t in mine}


def _finite_keys(results: Results) -> dict[str, set[str]]:
    return {task: {k for k, v in values.items() if math.isfinite(v)} for task, values in results.items()}


def _common_metrics(group: Group, warnings: list[str]) -> dict[str, set[str]]:
    """Per task, the metrics finite in every seed of ``group``: one metric set for all its seeds;
    a metric finite in some seeds only is left out of all of them, and said."""
    per_seed = [_finite_keys(r) for r in group.seeds.values()]
    common: dict[str, set[str]] = {}
    for task in per_seed[0]:
        sets = [keys.get(task, set()) for keys in per_seed]
        common[task] = set.intersection(*sets)
        dropped = sorted(set.union(*sets) - common[task])
        if dropped:
            warnings.append(f"{group.name}: {task} {', '.join(dropped)} not finite in every seed; left out of "
                            "its Delta-m in all seeds")
    return common


def _restrict(results: Results, keys: dict[str, set[str]]) -> Results:
    return {t: {k: v for k, v in values.items() if k in keys.get(t, set())} for t, values in results.items()}


def _deltas(comparison: Comparison, mine: Results, theirs: Results) -> tuple[dict[str, float], dict[str, float]]:
    """One seed's Delta-m under every key and each task's own Delta (``ValueError`` if undefined)."""
    out = {}
    scopes: list[tuple[str, Results, Results]] = [("", mine, theirs)]
    if comparison.dense_tasks:
        dense = set(comparison.dense_tasks)
        scopes.append(("dense ", {t: v for t, v in mine.items() if t in dense},
                       {t: v for t, v in theirs.items() if t in dense}))
    for prefix, a, b in scopes:
        for convention in DELTA_M_CONVENTIONS:
            if a:
                out[prefix + convention] = delta_m(a, b, metrics=comparison.metric_set, average=convention)
    per_task = {}
    for task in mine:  # which tasks gain and which lose: the terms "tasks" averages
        try:
            per_task[task] = delta_m({task: mine[task]}, {task: theirs[task]}, metrics=comparison.metric_set)
        except ValueError:  # none of the task's Delta-m metrics is finite
            continue
    return out, per_task


def _replicates(comparison: Comparison, split: str, bootstrap: int) -> dict[tuple[str, str], list[Results]]:
    """(group, seed) -> each bootstrap resample's results, one resample set for all; empty (and
    said) when the test set's noise cannot be measured."""
    if bootstrap <= 0:
        comparison.warnings.append("--bootstrap 0: the intervals leave out the test set's sampling noise")
        return {}
    if split != "test":
        comparison.warnings.append("val: per-sample states are kept for test only; the intervals leave out "
                                   "the val set's sampling noise")
        return {}
    files: dict[tuple[str, str], SampleStates] = {}
    for group in comparison.groups:
        for seed, folder in group.folders.items():
            path = folder / SAMPLES_FILE
            where = f"{group.name}{' ' + seed if seed else ''}"
            if not path.is_file():
                comparison.warnings.append(f"{where}: no {SAMPLES_FILE} (tested before it was written, or under "
                                           "DDP): the intervals leave out the test set's sampling noise")
                return {}
            try:
                files[group.name, seed] = read_sample_states(path)
            except ValueError as err:
                raise ComparisonError(str(err), "baseline" if group.baseline else "run") from None
            lacking = [t for t in group.seeds[seed] if t not in files[group.name, seed].states]
            if lacking:
                comparison.warnings.append(f"{where}: no per-sample states for {', '.join(lacking)}: the intervals "
                                           "leave out the test set's sampling noise")
                return {}
    counts = {f.count for f in files.values()}
    seen: dict[str, tuple[str, np.ndarray]] = {}
    for (name, seed), f in files.items():
        for task, digest in f.digests.items():
            first = seen.setdefault(task, (f"{name} {seed}".strip(), digest))
            if len(counts) > 1 or not np.array_equal(first[1], digest):
                comparison.warnings.append(f"{name} {seed}: its {task} test samples are not those of {first[0]}: "
                                           "the intervals leave out the test set's sampling noise")
                return {}
    comparison.test_samples, comparison.replicates = counts.pop(), bootstrap
    resamples = bootstrap_counts(comparison.test_samples, bootstrap)
    return {key: replicate_results(f, resamples) for key, f in files.items()}


def _replicate_deltas(comparison: Comparison, group: Group, seed: str, replicates: dict[tuple[str, str], list[Results]],
                      usable: dict[str, dict[str, set[str]]], base_groups: list[Group]) -> None:
    """``group``'s Delta-m and task Deltas of ``seed`` in every resample (NaN where undefined)."""
    keys = comparison.delta_keys
    reps = {key: np.full(comparison.replicates, np.nan) for key in keys}
    task_reps = {task: np.full(comparison.replicates, np.nan) for task in group.task_delta}
    owner = {t: base.name for base in base_groups for t in next(iter(base.seeds.values()))}
    for b, results in enumerate(replicates[group.name, seed]):
        mine = _restrict(results, usable[group.name])
        theirs = _baseline_results(mine, {base.name: replicates[base.name, seed][b] for base in base_groups
                                          if (base.name, seed) in replicates}, owner, usable)
        try:  # a metric undefined in a resample (no valid pixel) leaves it out, as NaN
            deltas, per_task = _deltas(comparison, mine, theirs)
        except ValueError:
            continue
        for key, value in deltas.items():
            reps[key][b] = value
        for task, value in per_task.items():
            if task in task_reps:
                task_reps[task][b] = value
    for key, values in reps.items():
        group.delta_reps.setdefault(key, {})[seed] = values
    for task, values in task_reps.items():
        group.task_delta_reps.setdefault(task, {})[seed] = values


def _check_metric_sets(comparison: Comparison, usable: dict[str, dict[str, set[str]]], owner: dict[str, str]) -> None:
    """A difference of two runs' Delta-m compares like with like only over the same metrics."""
    ref = comparison.reference
    if ref is None:
        return
    def pairs(group: str) -> set[tuple[str, str]]:
        return {(t, k) for t, keys in usable[group].items() for k in keys & usable[owner[t]].get(t, set())}
    mine = pairs(ref)
    for group in comparison.runs:
        if group.name != ref and pairs(group.name) != mine:
            differ = sorted(f"{t}/{k}" for t, k in pairs(group.name) ^ mine)
            comparison.warnings.append(f"{group.name} and {ref} average Delta-m over different metrics "
                                       f"({', '.join(differ)}): their difference is not like for like")


def _check_selection(comparison: Comparison) -> None:
    """Runs picked by different checkpoint rules are not compared under one rule."""
    rules = {g.name: sorted({r or "not recorded" for r in g.selection.values()}) for g in comparison.groups
             if not g.published}
    distinct = {r for values in rules.values() for r in values}
    if len(distinct) > 1:
        shown = "; ".join(f"{name} {'/'.join(v)}" for name, v in rules.items())
        comparison.warnings.append(f"the runs' checkpoints were not picked by one rule (checkpoint_selection: {shown})")


def _run_tests(comparison: Comparison) -> None:
    """Every markable figure tested against 0, with one correction over all of them."""
    n_test = comparison.test_samples or None
    for group in comparison.runs:
        for key, points in group.delta.items():
            comparison.tests.append(Test(group.name, "delta", key,
                                         estimate(points, group.delta_reps.get(key), n_test)))
        for task, points in group.task_delta.items():
            comparison.tests.append(Test(group.name, "task", task,
                                         estimate(points, group.task_delta_reps.get(task), n_test)))
        if comparison.reference and group.name != comparison.reference:
            for key in comparison.delta_keys:
                points, reps = comparison.paired(group, key)
                ref_seeds = set(next(g for g in comparison.groups if g.name == comparison.reference).delta.get(key, {}))
                unpaired = sorted(set(group.delta.get(key, {})) - ref_seeds)
                if unpaired and key == comparison.delta_keys[0]:
                    comparison.warnings.append(f"{group.name}: {', '.join(unpaired)} not among the reference "
                                               f"{comparison.reference}'s seeds; its differences use the seeds both have")
                comparison.tests.append(Test(group.name, "minus_reference", key, estimate(points, reps, n_test)))
    testable = [t for t in comparison.tests if t.estimate.testable]
    for test, p in zip(testable, adjust([t.estimate.p for t in testable], comparison.correction)):
        test.estimate.p_adjusted = p
        test.estimate.survives = p < 1 - CONFIDENCE


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


def _delta_cell(values: list[float], test: Test | None) -> str:
    """mean ± std over seeds, ``*`` when its test survives the correction."""
    mean, std = mean_std(values)
    if not math.isfinite(mean):
        return ""
    text = _signed(mean) if not math.isfinite(std) else f"{_signed(mean)} ± {std:.2f}"
    return text + (" *" if test is not None and test.estimate.survives else "")


def _diff_cell(test: Test | None, confidence: float) -> str:
    """The paired mean difference and its interval, ``*`` when it survives the correction."""
    if test is None or not math.isfinite(test.estimate.mean):
        return ""
    if not test.estimate.testable:
        return _signed(test.estimate.mean)
    low, high = test.estimate.interval(confidence)
    return f"{_signed(test.estimate.mean)} [{_signed(low)}, {_signed(high)}]" + (" *" if test.estimate.survives else "")


def _delta_header(key: str) -> str:
    return f"Δm {key} (%) ↑"


def to_markdown(comparison: Comparison, columns: list[tuple[str, str]] | None = None) -> str:
    """One row per baseline then per run: mean ± std over seeds of every metric (or of ``columns``)
    and Delta-m under every key (``*``: the gain or loss against the single-task baselines
    survives the correction)."""
    columns = comparison.columns() if columns is None else columns
    header = ["run", "seeds"] + [f"{task} {info.label} {_ARROW[info.higher_is_better]}"
                                 for task, key in columns for info in [get_task(task).metrics[key]]]
    header += [_delta_header(key) for key in comparison.delta_keys]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for group in comparison.groups:
        cells = [group.name + (" (baseline)" if group.baseline else ""), "-" if group.published else str(len(group.seeds))]
        cells += [_cell(comparison.values(group, task, key)) for task, key in columns]
        cells += [_delta_cell(list(group.delta.get(key, {}).values()), comparison.test(group.name, "delta", key))
                  for key in comparison.delta_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_delta_markdown(comparison: Comparison) -> str:
    """One row per compared run: each task's own Delta-m (the mean relative change of its Delta-m
    metrics against its single-task baseline, %), mean ± std over seeds, ``*`` where it survives the
    correction. The "tasks" convention is the mean of these columns."""
    shown = comparison.runs + comparison.published_rows
    tasks = [t for t in task_names() if any(t in g.task_delta for g in shown)]
    header = ["run", "seeds"] + [f"Δ {task} (%) ↑" for task in tasks]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for group in shown:
        cells = [group.name, "-" if group.published else str(len(group.seeds))]
        cells += [_delta_cell(list(group.task_delta.get(task, {}).values()), comparison.test(group.name, "task", task))
                  for task in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_markdown(comparison: Comparison) -> str:
    """One row per run but the reference: the seed-paired mean difference of each Delta-m to the
    reference run with its interval, ``*`` where it survives the correction."""
    ref = comparison.reference
    if not ref:
        return ""
    confidence = comparison.interval_confidence()
    header = ["run", "paired seeds"] + [f"Δm {key} − {ref}" for key in comparison.delta_keys]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for group in comparison.runs:
        if group.name == ref:
            continue
        tests = [comparison.test(group.name, "minus_reference", key) for key in comparison.delta_keys]
        paired = max((t.estimate.n for t in tests if t is not None), default=0)
        lines.append("| " + " | ".join([group.name, str(paired)] + [_diff_cell(t, confidence) for t in tests]) + " |")
    return "\n".join(lines)


def tests_markdown(comparison: Comparison) -> str:
    """Every tested figure, smallest p first: estimate, interval, p and corrected p."""
    confidence = comparison.interval_confidence()
    testable = sorted((t for t in comparison.tests if t.estimate.testable), key=lambda t: t.estimate.p)
    if not testable:
        return ""
    lines = [f"| test | seeds | estimate (%) | {_percent(confidence)} interval | p | p {comparison.correction} | |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for test in testable:
        e = test.estimate
        low, high = e.interval(confidence)
        lines.append(f"| {test.label(comparison.reference)} | {e.n} | {_signed(e.mean)} | [{_signed(low)}, "
                     f"{_signed(high)}] | {_p(e.p)} | {_p(e.p_adjusted)} | {'*' if e.survives else ''} |")
    return "\n".join(lines)


def _percent(confidence: float) -> str:
    return f"{confidence * 100:.4g} %"


def _p(value: float) -> str:
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def method_note(comparison: Comparison) -> str:
    """How the marks and intervals were made, in two sentences."""
    family = len([t for t in comparison.tests if t.estimate.testable])
    survive = len([t for t in comparison.tests if t.estimate.survives])
    if comparison.replicates:
        noise = (f"t over seeds with the test set's sampling noise added (a bootstrap of its {comparison.test_samples} "
                 f"samples, {comparison.replicates} resamples shared by every run and seed)")
    else:
        noise = "t over seeds alone (no test-set noise: see the warnings)"
    dense = f"; dense: {', '.join(comparison.dense_tasks)}" if comparison.dense_tasks else ""
    return (f"Δm over {DELTA_M_SETS[comparison.metric_set]} (`--delta_m_set`){dense}. Intervals: {noise}, "
            f"{_percent(comparison.interval_confidence())}. `*`: survives {CORRECTIONS[comparison.correction]} "
            f"over the {family} tests below; {survive} of {family} do. Single-seed runs are not tested.")


def report_markdown(comparison: Comparison, every_metric: bool = False) -> str:
    """What ``compare`` and ``sweep`` print: each task's own Delta first, then the table of each
    task's primary metric (or of every metric) with Delta-m, the differences to the reference run,
    how they were tested, every test, and the warnings."""
    table = to_markdown(comparison, None if every_metric else summary_columns(comparison))
    if not comparison.baselines:
        parts = ["Metrics (mean ± std over seeds):", table, published_note(comparison),
                 "No single-task baselines (`--baselines`): no Δm."]
        return "\n\n".join(p for p in parts if p)
    parts = ["Each task against its single-task baseline (mean ± std over seeds):", task_delta_markdown(comparison),
             "Metrics (mean ± std over seeds) and Δm against the single-task baselines:", table,
             published_note(comparison)]
    if comparison.reference:
        parts += [f"Against {comparison.reference}, paired by seed:", reference_markdown(comparison)]
    parts += [method_note(comparison), tests_markdown(comparison)]
    if comparison.warnings:
        parts.append("Warnings:\n\n" + "\n".join(f"- {w}" for w in comparison.warnings))
    return "\n\n".join(p for p in parts if p)


def summary_columns(comparison: Comparison) -> list[tuple[str, str]]:
    """Each task's primary metric, and beside it the metrics published rows report: the condensed table."""
    present = {task for task, _ in comparison.columns()}
    reported = {(task, key) for g in comparison.published_rows for seed in g.seeds.values()
                for task, values in seed.items() for key in values}
    columns = []
    for task in task_names():
        if task in present:
            primary = get_task(task).primary_metric
            columns.append((task, primary))
            columns += [(task, key) for key in get_task(task).metrics if key != primary and (task, key) in reported]
    return columns


def to_json(comparison: Comparison) -> dict[str, Any]:
    """Everything the tables show, as data: per group the per-seed results, mean and std of every
    metric, Delta-m under every key and each task's own Delta with their tests, and the paired
    differences to the reference; the method, every test and the warnings."""
    out: dict[str, Any] = {"split": comparison.split, "reference": comparison.reference,
                           "confidence": CONFIDENCE, "interval_confidence": comparison.interval_confidence(),
                           "correction": comparison.correction, "delta_m_conventions": DELTA_M_CONVENTIONS,
                           "delta_m_keys": comparison.delta_keys, "dense_tasks": comparison.dense_tasks,
                           "delta_m_set": comparison.metric_set, "bootstrap_replicates": comparison.replicates,
                           "test_samples": comparison.test_samples or None,
                           "tests": len([t for t in comparison.tests if t.estimate.testable]),
                           "published": comparison.published, "warnings": comparison.warnings, "groups": []}
    for group in comparison.groups:
        entry: dict[str, Any] = {"name": group.name, "baseline": group.baseline, "published": group.published,
                                 "seeds": group.seeds, "checkpoint_selection": group.selection, "mean": {}, "std": {},
                                 "delta_m": {}}
        for task, key in comparison.columns():
            values = comparison.values(group, task, key)
            if values:
                mean, std = mean_std(values)
                entry["mean"].setdefault(task, {})[key] = _json_number(mean)
                entry["std"].setdefault(task, {})[key] = _json_number(std)
        for key, per_seed in group.delta.items():
            record = _seed_summary(per_seed, comparison.test(group.name, "delta", key), comparison)
            minus = comparison.test(group.name, "minus_reference", key)
            if minus is not None:
                record["minus_reference"] = _test_json(minus, comparison)
            entry["delta_m"][key] = record
        entry["task_delta_m"] = {task: _seed_summary(per_seed, comparison.test(group.name, "task", task), comparison)
                                 for task, per_seed in group.task_delta.items()}
        out["groups"].append(entry)
    return out


def _test_json(test: Test, comparison: Comparison) -> dict[str, Any]:
    e = test.estimate
    low, high = e.interval(comparison.interval_confidence())
    return {"mean": _json_number(e.mean), "se": _json_number(e.se), "df": _json_number(e.df), "seeds": e.n,
            "test_noise": e.test_noise, "ci": [_json_number(low), _json_number(high)], "p": _json_number(e.p),
            "p_adjusted": _json_number(e.p_adjusted), "survives": e.survives}


def _seed_summary(per_seed: dict[str, float], test: Test | None, comparison: Comparison) -> dict[str, Any]:
    """A Delta-m over seeds as data: the values, mean, std and its test."""
    mean, std = mean_std(list(per_seed.values()))
    record: dict[str, Any] = {"per_seed": per_seed, "mean": _json_number(mean), "std": _json_number(std)}
    if test is not None:
        record["test"] = _test_json(test, comparison)
    return record


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None
