"""`crossvit-mtl sweep CONFIG [--dry-run]`: several fits one after another, then their comparison.

A sweep config holds ``sweep_dir``, a ``base`` fit config (model:, data:, trainer: as for
`crossvit-mtl fit`) and ``runs``: name -> overrides merged into the base, with ``baseline: true``
on the single-task runs Delta-m is measured against. Each run gets its own folder
``{sweep_dir}/{name}`` (its resolved config is written to ``{sweep_dir}/configs/{name}.yaml``);
the table goes to the screen and to ``{sweep_dir}/compare.md`` and ``compare.json``.
"""
from __future__ import annotations

import argparse
import copy
import shlex
from pathlib import Path
from typing import Any

import yaml

from crossvit_mtl.cli import UserError


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merged key by key; any other value in ``override`` replaces the base's."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def plan(config_path: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """The sweep folder and, per run, ``{"name", "baseline", "config", "config_path", "run_dir"}``."""
    from crossvit_mtl.cli.args import read_yaml_mapping

    spec = read_yaml_mapping("CONFIG", config_path)
    unknown = sorted(set(spec) - {"sweep_dir", "base", "runs"})
    if unknown or not isinstance(spec.get("runs"), dict) or not spec["runs"]:
        raise UserError(f"CONFIG {config_path}: needs `runs:` mapping run names to overrides (and may have "
                        f"`sweep_dir:`, `base:`); unknown keys: {unknown}")
    sweep_dir = Path(spec.get("sweep_dir") or "runs/sweep")
    runs = []
    for name, override in spec["runs"].items():
        if not isinstance(override or {}, dict):
            raise UserError(f"CONFIG {config_path}: runs.{name} must map keys to overrides, got {override!r}")
        override = dict(override or {})
        baseline = bool(override.pop("baseline", False))
        runs.append({"name": name, "baseline": baseline, "config": merge(spec.get("base") or {}, override),
                     "config_path": sweep_dir / "configs" / f"{name}.yaml", "run_dir": sweep_dir / name})
    if not any(r["baseline"] for r in runs) or all(r["baseline"] for r in runs):
        raise UserError(f"CONFIG {config_path}: needs baseline runs (`baseline: true`) "
                        "and runs to compare with them")
    return sweep_dir, runs


def fit_args(run: dict[str, Any]) -> list[str]:
    return ["fit", "--config", str(run["config_path"]), "--run_dir", str(run["run_dir"])]


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli import main
    from crossvit_mtl.cli.compare import compare_runs, format_markdown, write_report

    sweep_dir, runs = plan(args.config)
    for item in [] if args.dry_run else runs:  # every run starts afresh: none may find its folder taken
        taken = next((p for p in (item["run_dir"], *item["run_dir"].parents)
                      if p.exists() and (not p.is_dir() or p == item["run_dir"] and any(p.iterdir()))), None)
        if taken is not None:
            raise UserError(f"CONFIG {args.config}: run {item['name']!r} would write into {item['run_dir']}, but "
                            f"{taken} already exists; choose another sweep_dir")
    for item in runs:
        print(shlex.join(["crossvit-mtl", *fit_args(item)]) + ("   # baseline" if item["baseline"] else ""))
        if args.dry_run:
            continue
        item["config_path"].parent.mkdir(parents=True, exist_ok=True)
        item["config_path"].write_text(yaml.safe_dump(item["config"], sort_keys=False))
        code = main(fit_args(item))
        if code:
            raise UserError(f"run {item['name']!r} failed (exit code {code}); its folder: {item['run_dir']}")
    if args.dry_run:
        return 0
    rows = compare_runs([r["run_dir"] for r in runs if not r["baseline"]],
                        [r["run_dir"] for r in runs if r["baseline"]])
    print(format_markdown(rows))
    for suffix in (".md", ".json"):
        write_report(rows, sweep_dir / f"compare{suffix}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="fit several configs in turn, then compare them (Delta-m)",
                       description="Run every run of a sweep config as a `fit`, each in its own run "
                       "folder, then print the comparison table against the baseline runs.")
    p.add_argument("config", metavar="CONFIG", help="sweep YAML (see configs/sweep_synth.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the planned commands, run nothing")
    p.set_defaults(func=run)
