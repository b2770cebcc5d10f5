"""`crossvit-mtl sweep CONFIG`: several fits over several seeds, each tested, then their comparison.

A sweep config holds ``sweep_dir``, ``seeds`` (default ``[0, 1, 2]``), a ``base`` fit config
(model:, data:, trainer: as for `crossvit-mtl fit`) and ``runs``: name -> overrides merged into the
base, with ``baseline: true`` on the single-task runs Delta-m is measured against and, where a
run has its own, ``seeds:`` (e.g. one seed for methods screened out on val). Every run is fit
once per seed in ``{sweep_dir}/{name}/seed{seed}`` (its resolved config in
``{sweep_dir}/configs/{name}.yaml``): the best checkpoint on val is then evaluated on the test split.
A sweep that stops part-way continues where it stopped: finished runs are skipped and an
interrupted one resumes from its last checkpoint. The comparison (``crossvit_mtl.comparison``)
goes to the screen and to ``{sweep_dir}/compare.md`` and ``compare.json``.
"""
from __future__ import annotations

import argparse
import copy
import shlex
from pathlib import Path
from typing import Any

import yaml

from crossvit_mtl.cli.args import UserError

DEFAULT_SEEDS = (0, 1, 2)
SWEEP_KEYS = ("sweep_dir", "seeds", "base", "runs")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merged key by key; any other value in ``override`` replaces the base's."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def _seeds(value: Any, where: str) -> list[int]:
    if not (isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                     for s in value) and len(set(value)) == len(value)):
        raise UserError(f"{where}: seeds must be a list of distinct integers >= 0, got {value!r}")
    return list(value)


def plan(config_path: str | Path, seeds: list[int] | None = None,
         only: list[str] | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """The sweep folder and, per run and seed, ``{"name", "seed", "baseline", "config", "config_path",
    "run_dir"}``; ``seeds`` (replacing the config's, a run's own too) and ``only`` (run names) narrow it."""
    from crossvit_mtl.cli.args import read_yaml_mapping

    path = Path(config_path)
    spec = read_yaml_mapping("CONFIG", path)
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown or not isinstance(spec.get("runs"), dict) or not spec["runs"]:
        raise UserError(f"CONFIG {path}: needs `runs:` mapping run names to overrides (and may have "
                        f"`sweep_dir:`, `seeds:`, `base:`); unknown keys: {unknown}")
    given_seeds = seeds
    seeds = _seeds(seeds, "--seeds") if seeds is not None else _seeds(spec.get("seeds", list(DEFAULT_SEEDS)),
                                                                       f"CONFIG {path}")
    names = list(spec["runs"])
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise UserError(f"--runs: no run {missing[0]!r} in {str(path)!r} (it has: {', '.join(names)})")
    sweep_dir = Path(spec.get("sweep_dir") or "runs/sweep")
    runs = []
    for name, override in spec["runs"].items():
        if not isinstance(override or {}, dict):
            raise UserError(f"CONFIG {path}: runs.{name} must map keys to overrides, got {override!r}")
        override = dict(override or {})
        baseline = bool(override.pop("baseline", False))
        own = override.pop("seeds", None)
        if only and name not in only:
            continue
        config = merge(spec.get("base") or {}, override)
        run_seeds = seeds if given_seeds is not None or own is None else _seeds(own, f"CONFIG {path}: runs.{name}")
        for seed in run_seeds:
            runs.append({"name": name, "seed": seed, "baseline": baseline, "config": config,
                         "config_path": sweep_dir / "configs" / f"{name}.yaml",
                         "run_dir": sweep_dir / name / f"seed{seed}"})
    if not only and (not any(r["baseline"] for r in runs) or all(r["baseline"] for r in runs)):
        raise UserError(f"CONFIG {path}: needs baseline runs (`baseline: true`) and runs to compare with them")
    return sweep_dir, runs


def fit_args(run: dict[str, Any]) -> list[str]:
    """The `fit` of one run and seed; it resumes a run folder left with a last checkpoint."""
    run_dir = Path(run["run_dir"])
    args = ["fit", "--config", str(run["config_path"]), "--run_dir", str(run_dir),
            "--seed_everything", str(run["seed"]), "--test_after_fit", "true"]
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        args += ["--ckpt_path", "last"]
    elif run_dir.exists():
        args += ["--overwrite", "true"]
    return args


def finished(run: dict[str, Any]) -> bool:
    return (Path(run["run_dir"]) / "metrics_test.json").is_file()


#: what a fit writes into its run folder before its first checkpoint: a folder holding only these
#: is a run killed early, started afresh; anything else in it is not the sweep's to delete
RUN_ENTRIES = frozenset({"config.yaml", "csv", "tensorboard", "checkpoints", "plots"})


def check_run_folder(run: dict[str, Any], config: str) -> None:
    """Refuses a run folder (or a path to it) taken by something that is not this sweep's run."""
    run_dir = Path(run["run_dir"])
    blocking = next((p for p in (run_dir, *run_dir.parents) if p.exists() and not p.is_dir()), None)
    foreign = run_dir.is_dir() and not (run_dir / "checkpoints" / "last.ckpt").is_file() and not finished(run) \
        and any(entry.name not in RUN_ENTRIES for entry in run_dir.iterdir())
    if blocking is not None or foreign:
        raise UserError(f"CONFIG {config}: run {run['name']!r} would write into {run_dir}, but "
                        f"{blocking or run_dir} already exists{'' if blocking else ' and holds other files'}; "
                        "choose another sweep_dir")


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli.compare import write_outputs
    from crossvit_mtl.comparison import ComparisonError, compare, report_markdown

    sweep_dir, runs = plan(args.config, args.seeds, args.runs)
    for item in runs:  # before any fit: nothing of the user's is written over
        check_run_folder(item, args.config)
    for item in runs:
        label = f"{item['name']} seed {item['seed']}" + (" (baseline)" if item["baseline"] else "")
        if finished(item):
            print(f"{label}: finished, skipped ({item['run_dir']})")
            continue
        print(f"{label}: " + shlex.join(["crossvit-mtl", *fit_args(item)]))
        if args.dry_run:
            continue
        item["config_path"].parent.mkdir(parents=True, exist_ok=True)
        item["config_path"].write_text(yaml.safe_dump(item["config"], sort_keys=False))
        from crossvit_mtl.cli.train import run_command

        code = run_command(fit_args(item))
        if code or not finished(item):
            raise UserError(f"run {item['name']!r} seed {item['seed']} failed (exit code {code}); "
                            f"its folder: {item['run_dir']}")
    if args.dry_run:
        return 0
    _, runs = plan(args.config, args.seeds)  # the comparison is over the whole sweep
    waiting = [r for r in runs if not finished(r)]
    if waiting:
        print(f"{len(waiting)} run(s) of the sweep are not finished (e.g. {waiting[0]['run_dir']}); "
              "the comparison follows once they are")
        return 0
    names = {r["name"]: r["baseline"] for r in runs}
    try:
        comparison = compare([sweep_dir / n for n, b in names.items() if not b],
                             [sweep_dir / n for n, b in names.items() if b])
    except ComparisonError as err:
        raise UserError(str(err)) from None
    print(report_markdown(comparison))
    for suffix in (".md", ".json"):
        write_outputs(comparison, sweep_dir / f"compare{suffix}")
    print(f"tables: {sweep_dir / 'compare.md'}, numbers: {sweep_dir / 'compare.json'}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="fit several configs over several seeds, then compare them (Delta-m)",
                       description="Fit every run of a sweep config once per seed, each in its own run "
                       "folder, test each best checkpoint, then print the comparison against the "
                       "baseline runs. Finished runs are skipped, an interrupted one resumes.")
    p.add_argument("config", metavar="CONFIG", help="sweep YAML (see configs/sweep_synth.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the config's, else 0 1 2)")
    p.add_argument("--runs", nargs="+", help="only these runs of the config")
    p.add_argument("--dry-run", action="store_true", help="print the planned commands, run nothing")
    p.set_defaults(func=run)
