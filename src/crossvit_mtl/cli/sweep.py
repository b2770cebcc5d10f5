"""`crossvit-mtl sweep CONFIG`: several fits over several seeds, each tested, then their comparisons.

A sweep config holds ``sweep_dir``, ``seeds`` (the test seeds, default ``[0, 1, 2]``), optionally
``screen_seeds`` (seeds a screen compares on val, none of them a test seed), a ``base`` fit config
(model:, data:, trainer: as for `crossvit-mtl fit`) and ``runs``: name -> overrides merged into the
base, with ``baseline: true`` on the single-task runs Delta-m is measured against, ``screen: false``
on runs the screen leaves out, ``test: false`` on runs screened out, and, where a run has its own,
``seeds:`` (its test seeds). Every run is fit once per seed in ``{sweep_dir}/{name}/seed{seed}``
(its resolved config in ``{sweep_dir}/configs/{name}.yaml``) and tested on the checkpoint its rule
picks; every run of a sweep has one rule (``checkpoint_selection``) and one training augmentation
(``data.train_transforms``). A sweep that stops part-way continues where it stopped: finished runs
are skipped and an interrupted one resumes from its last checkpoint. The comparisons
(``crossvit_mtl.comparison``) go to the screen and to ``{sweep_dir}/screen.md``/``.json`` (val,
screening seeds) and ``compare.md``/``.json`` (test, test seeds only).

Where the fits run is the ``launcher:`` mapping's (``crossvit_mtl.cli.launch``) or ``--launcher``'s:
here (one after another in this process, or ``--jobs N`` processes at once) or on SLURM (one array
job per run). Before anything runs every run's config is checked as `fit` checks it
(``crossvit_mtl.cli.sweep_check``). Each job leaves its records in ``{sweep_dir}/jobs/``;
``--status`` reads them (and the scheduler's state), and a new `sweep` submits again only the
jobs that are missing or failed.
"""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Any

import yaml

from crossvit_mtl.cli.args import MAX_SEED, Integer, UserError, add_flag, read_yaml_mapping
from crossvit_mtl.cli.launch import LAUNCHERS, chosen, command_line, label, read_settings
from crossvit_mtl.cli.sweep_jobs import RESUBMIT, finished, forget, job_file, read_json, status_of

DEFAULT_SEEDS = (0, 1, 2)
SWEEP_KEYS = ("sweep_dir", "seeds", "screen_seeds", "base", "runs", "launcher")
#: what a run of a sweep may say of itself beside its fit config
RUN_KEYS = ("baseline", "seeds", "screen", "test")
#: folders of the sweep's own beside the runs'
RESERVED = ("configs", "jobs")


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
    """The sweep folder and, per run and seed, ``{"name", "seed", "stage", "baseline", "config",
    "config_path", "run_dir"}`` (``stage``: ``screen`` or ``test``); ``seeds`` (replacing the
    config's test seeds, a run's own too) and ``only`` (run names) narrow it."""
    path = Path(config_path)
    spec = read_yaml_mapping("CONFIG", path)
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown or not isinstance(spec.get("runs"), dict) or not spec["runs"]:
        raise UserError(f"CONFIG {path}: needs `runs:` mapping run names to overrides (and may have "
                        f"`sweep_dir:`, `seeds:`, `screen_seeds:`, `base:`, `launcher:`); unknown keys: {unknown}")
    given_seeds = seeds
    seeds = _seeds(seeds, "--seeds") if seeds is not None else _seeds(spec.get("seeds", list(DEFAULT_SEEDS)),
                                                                       f"CONFIG {path}")
    screen_seeds = _seeds(spec["screen_seeds"], f"CONFIG {path}: screen_seeds") if spec.get("screen_seeds") else []
    names = list(spec["runs"])
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise UserError(f"--runs: no run {missing[0]!r} in {str(path)!r} (it has: {', '.join(names)})")
    sweep_dir = Path(spec.get("sweep_dir") or "runs/sweep")
    runs: list[dict[str, Any]] = []
    configs: dict[str, dict[str, Any]] = {}
    for name, override in spec["runs"].items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)) or name in RESERVED or set(str(name)) == {"."}:
            raise UserError(f"CONFIG {path}: runs.{name}: a run's name is its folder's: letters, digits, '_', '-', "
                            f"'.', and not {' or '.join(RESERVED)}")
        if not isinstance(override or {}, dict):
            raise UserError(f"CONFIG {path}: runs.{name} must map keys to overrides, got {override!r}")
        override = dict(override or {})
        flags = {key: override.pop(key) for key in RUN_KEYS if key in override}
        for key in ("baseline", "screen", "test"):
            if not isinstance(flags.get(key, False), bool):
                raise UserError(f"CONFIG {path}: runs.{name}.{key} must be true or false, got {flags[key]!r}")
        own = flags.get("seeds")
        config = merge(spec.get("base") or {}, override)
        configs[name] = config
        if only and name not in only:
            continue
        run_seeds = seeds if given_seeds is not None or own is None else _seeds(own, f"CONFIG {path}: runs.{name}")
        overlap = sorted(set(run_seeds) & set(screen_seeds))
        if overlap:
            raise UserError(f"CONFIG {path}: runs.{name}: seed {overlap[0]} is a screening seed and a test seed; the "
                            "test comparison needs seeds the screen never saw")
        stages = ([("screen", s) for s in screen_seeds] if flags.get("screen", True) else []) + \
                 ([("test", s) for s in run_seeds] if flags.get("test", True) else [])
        for stage, seed in stages:
            runs.append({"name": name, "seed": seed, "stage": stage, "baseline": flags.get("baseline", False),
                         "config": config, "config_path": sweep_dir / "configs" / f"{name}.yaml",
                         "run_dir": sweep_dir / name / f"seed{seed}"})
    if not only and (not any(r["baseline"] for r in runs) or all(r["baseline"] for r in runs)):
        raise UserError(f"CONFIG {path}: needs baseline runs (`baseline: true`) and runs to compare with them")
    check_one_protocol(configs, path, any(r["baseline"] for r in runs))
    return sweep_dir, runs


def check_one_protocol(configs: dict[str, dict[str, Any]], path: Path, baselines: bool) -> None:
    """Every run of a sweep is picked by one checkpoint rule and trained on one augmentation: a
    comparison of runs that differ in either compares the protocols too."""
    for what, value in (("checkpoint_selection", lambda c: c.get("checkpoint_selection", "last")),
                        ("data.train_transforms", lambda c: (c.get("data") or {}).get("train_transforms") or {})):
        values = {name: value(config) for name, config in configs.items()}
        first = next(iter(values))
        other = next((name for name, v in values.items() if v != values[first]), None)
        if other is not None:
            raise UserError(f"CONFIG {path}: runs {first!r} and {other!r} differ in {what} ({values[first]!r} against "
                            f"{values[other]!r}); every run of a sweep shares one (set it in base:)")
    rule = next(iter(configs.values())).get("checkpoint_selection", "last")
    if baselines and rule == "val_metric":
        raise UserError(f"CONFIG {path}: checkpoint_selection val_metric picks a multi-task run by one task's metric "
                        "and each baseline by its own; use last or val_loss, one rule for every run")


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




def statuses(runs: list[dict[str, Any]], jobs_dir: Path) -> list:
    """Each job's ``JobStatus``, the scheduler asked once for all the SLURM jobs among them."""
    from crossvit_mtl.cli.launch import slurm_states

    records = [read_json(job_file(jobs_dir, r, ".json")) or {} for r in runs]
    slurm_ids = [r["job_id"] for r, run in zip(records, runs)
                 if r.get("launcher") == "slurm" and r.get("job_id") and not finished(run)]
    scheduler = slurm_states(slurm_ids)
    return [status_of(run, jobs_dir, scheduler) for run in runs]


def print_status(runs: list[dict[str, Any]], jobs_dir: Path) -> int:
    found = statuses(runs, jobs_dir)
    for run, status in zip(runs, found):
        job = f" [job {status.job_id}]" if status.job_id else ""
        detail = f" ({status.detail})" if status.detail and status.status != "done" else ""
        print(f"{label(run)}: {status.status}{job}{detail}" + (f"; log: {status.log}" if status.log else ""))
    counts = {s: sum(f.status == s for f in found) for s in ("done", "running", "queued", "failed", "missing", "unknown")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "unknown"))
    return 0


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli.compare import write_outputs
    from crossvit_mtl.comparison import report_markdown

    sweep_dir, runs = plan(args.config, args.seeds, args.runs)
    where = f"CONFIG {args.config}"
    in_file = read_settings(read_yaml_mapping("CONFIG", args.config).get("launcher"), where)
    for item in runs:  # before any fit: nothing of the user's is written over
        check_run_folder(item, args.config)
    jobs_dir = sweep_dir / "jobs"
    if args.status:
        return print_status(runs, jobs_dir)
    settings = chosen(in_file, args.launcher, args.jobs, where)
    todo = []
    for item, status in zip(runs, statuses(runs, jobs_dir)):
        if status.status == "done":
            print(f"{label(item)}: finished, skipped ({item['run_dir']})")
        elif status.status not in RESUBMIT:
            print(f"{label(item)}: {status.status} ({status.detail}), not submitted again")
        else:
            todo.append(item)
    if todo:
        from crossvit_mtl.cli.sweep_check import check_configs

        check_configs(todo, args.config)  # every config, before the first job: fails in one line
        if settings.name != "local" or settings.jobs > 1:
            print(settings.describe())
    if args.dry_run or settings.name == "local" and settings.jobs == 1:
        _run_here(todo, jobs_dir, args.dry_run)
    else:
        _launch(todo, jobs_dir, settings, sweep_dir)
    if args.dry_run:
        return 0
    _, runs = plan(args.config, args.seeds)  # the comparison is over the whole sweep
    waiting = [r for r in runs if not finished(r)]
    if waiting:
        print(f"{len(waiting)} run(s) of the sweep are not finished (e.g. {waiting[0]['run_dir']}); "
              f"the comparison follows once they are (`crossvit-mtl sweep {args.config} --status` lists them)")
        return 0
    for stem, title, comparison in comparisons(args.config, args.seeds)[1]:
        print(f"\n{title}\n\n{report_markdown(comparison)}\n")
        for suffix in (".md", ".json"):
            write_outputs(comparison, sweep_dir / f"{stem}{suffix}")
        print(f"tables: {sweep_dir / (stem + '.md')}, numbers: {sweep_dir / (stem + '.json')}")
    return 0


#: the sweep's comparisons: the file stem, the stage whose runs it compares, the split and its title
STAGES = (("screen", "screen", "val", "Screen: every screened run on val, its screening seeds"),
          ("compare", "test", "test", "Test: the runs carried to test on their test seeds (no screening seed)"))


def comparisons(config_path: str | Path, seeds: list[int] | None = None,
                bootstrap: int | None = None) -> tuple[Path, list[tuple[str, str, Any]]]:
    """The sweep folder and its comparisons of finished runs, as (file stem, title, Comparison):
    the screen (val, screening seeds) when there is one, then the test (test seeds only)."""
    from crossvit_mtl.comparison import BOOTSTRAP, ComparisonError, compare

    sweep_dir, runs = plan(config_path, seeds)
    out = []
    for stem, stage, split, title in STAGES:
        chosen = [r for r in runs if r["stage"] == stage]
        if not chosen:
            continue
        names = {r["name"]: r["baseline"] for r in chosen}
        try:
            comparison = compare([sweep_dir / n for n, b in names.items() if not b],
                                 [sweep_dir / n for n, b in names.items() if b], split=split,
                                 seeds=sorted({r["seed"] for r in chosen}),
                                 bootstrap=BOOTSTRAP if bootstrap is None else bootstrap)
        except ComparisonError as err:
            raise UserError(str(err)) from None
        out.append((stem, title, comparison))
    return sweep_dir, out


def _write_config(run: dict[str, Any]) -> None:
    run["config_path"].parent.mkdir(parents=True, exist_ok=True)
    run["config_path"].write_text(yaml.safe_dump(run["config"], sort_keys=False))


def _run_here(todo: list[dict[str, Any]], jobs_dir: Path, dry_run: bool) -> None:
    """One fit after another in this process, each printed as it starts; the first failure stops."""
    from crossvit_mtl.cli.launch import run_here

    for item in todo:
        print(f"{label(item)}: {command_line(item)}", flush=True)
        if dry_run:
            continue
        _write_config(item)
        forget(jobs_dir, item)
        code = run_here(item, jobs_dir)
        if code or not finished(item):
            raise UserError(f"run {item['name']!r} seed {item['seed']} failed (exit code {code}); "
                            f"its folder: {item['run_dir']}")


def _launch(todo: list[dict[str, Any]], jobs_dir: Path, settings, sweep_dir: Path) -> None:
    """Every job to its launcher at once: the local pool (which returns when all have ended) or SLURM."""
    from crossvit_mtl.cli.launch import run_pool, submit_slurm

    for item in todo:
        print(f"{label(item)}: {command_line(item)}", flush=True)
        _write_config(item)
        forget(jobs_dir, item)
    if not todo:
        return
    if settings.name == "slurm":
        for name, ids in submit_slurm(todo, jobs_dir, settings, sweep_dir.name):
            seeds = " ".join(str(r["seed"]) for r in todo if r["name"] == name)
            kind = f"array job {ids[0].split('_')[0]}" if len(ids) > 1 else f"job {ids[0]}"
            print(f"{name}: SLURM {kind}, seed{'s' if len(ids) > 1 else ''} {seeds}")
        print(f"logs and submitted scripts: {jobs_dir / 'slurm'}", flush=True)
        return
    failed = run_pool(todo, jobs_dir, settings.jobs)
    if failed:
        run, why = failed[0]
        raise UserError(f"{len(failed)} of {len(todo)} job(s) failed, e.g. run {run['name']!r} seed {run['seed']}: "
                        f"{why}; log: {job_file(jobs_dir, run, '.log')}; `sweep` again resubmits the failed ones")


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="fit several configs over several seeds, then compare them (Delta-m)",
                       description="Fit every run of a sweep config once per seed, each in its own run "
                       "folder, test each on the checkpoint its rule picks, then print the comparisons "
                       "against the baseline runs (val on the screening seeds, test on the test seeds). "
                       "Every config is checked first, as `fit` checks it. Finished runs are skipped, an "
                       "interrupted one resumes; a new `sweep` submits again only the jobs that are missing "
                       "or failed.")
    p.add_argument("config", metavar="CONFIG", help="sweep YAML (see configs/sweep_synth.yaml)")
    p.add_argument("--seeds", type=Integer(0, MAX_SEED), nargs="+", help="seeds to run (default: the config's, else 0 1 2)")
    p.add_argument("--runs", nargs="+", help="only these runs of the config")
    p.add_argument("--launcher", choices=LAUNCHERS,
                   help="where the fits run: local (this machine) or slurm (one array job per run, through "
                        "submitit); default: the config's launcher.name, else local")
    p.add_argument("--jobs", type=Integer(1, 256), metavar="N",
                   help="local: fits at once, each a separate process (default: launcher.jobs, else 1: "
                        "one after another in this process)")
    add_flag(p, "--status",
             help="list each run and seed as done, running, queued, failed or missing, with its log")
    add_flag(p, "--dry_run", help="check every config, print the planned commands, run nothing")
    p.set_defaults(func=run)
