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
    try:
        spec = yaml.safe_load(Path(config_path).read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"no sweep config {str(config_path)!r}") from None
    unknown = sorted(set(spec) - {"sweep_dir", "base", "runs"})
    if unknown or not spec.get("runs"):
        raise UserError(f"sweep config {str(config_path)!r} needs `runs:` (and may have `sweep_dir:`, "
                        f"`base:`); unknown keys: {unknown}")
    sweep_dir = Path(spec.get("sweep_dir") or "runs/sweep")
    runs = []
    for name, override in spec["runs"].items():
        override = dict(override or {})
        baseline = bool(override.pop("baseline", False))
        runs.append({"name": name, "baseline": baseline, "config": merge(spec.get("base") or {}, override),
                     "config_path": sweep_dir / "configs" / f"{name}.yaml", "run_dir": sweep_dir / name})
    if not any(r["baseline"] for r in runs) or all(r["baseline"] for r in runs):
        raise UserError(f"sweep config {str(config_path)!r} needs baseline runs (`baseline: true`) "
                        "and runs to compare with them")
    return sweep_dir, runs


def fit_args(run: dict[str, Any]) -> list[str]:
    return ["fit", "--config", str(run["config_path"]), "--run_dir", str(run["run_dir"])]


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli import main
    from crossvit_mtl.cli.compare import compare_runs, format_markdown, write_report

    sweep_dir, runs = plan(args.config)
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
    p.add_argument("config", help="sweep YAML (see configs/sweep_synth.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the planned commands, run nothing")
    p.set_defaults(func=run)
