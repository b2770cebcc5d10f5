"""Every config of a sweep checked as `crossvit-mtl fit` checks it, before the first job starts: a
typo in the last run stops the sweep at once, not after every other run has trained.

Each run's config goes through fit's own parser (unknown keys, wrong types) and its model and data
module are built, their constructors checking what they check (impossible values, a missing data
root, a task the data lacks). A run's seeds share its config: the seed is no input of these checks
(``plan`` checks the seeds, ``check_run_folder`` the run folders), so each run is built once. No
trainer is built (the machine that submits may have no GPU), nothing is seeded, nothing is written.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml

from crossvit_mtl.cli.args import UserError


def _check_one(config_file: Path) -> None:
    """fit's parser and class instantiation on one config, without what a fit does around them."""
    from crossvit_mtl.cli.train import CrossViTCLI, cli_kwargs

    class ConfigCheck(CrossViTCLI):
        def before_instantiate_classes(self) -> None:
            pass  # no run folder, no allocator setting: this process trains nothing

        def instantiate_trainer(self, **kwargs):
            return None

    ConfigCheck(**{**cli_kwargs(), "seed_everything_default": False}, args=["--config", str(config_file)], run=False)


def check_configs(runs: list[dict[str, Any]], config: str | Path) -> None:
    """Raises a one-line ``UserError`` naming the sweep file, the run and fit's message, which
    names the key and the value."""
    from jsonargparse import ArgumentError

    from crossvit_mtl.cli.train import one_line
    from crossvit_mtl.data.errors import DataError
    from crossvit_mtl.tasks import TargetError

    configs = {r["name"]: r["config"] for r in runs}
    with tempfile.TemporaryDirectory(prefix="sweep-check-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        for name, run_config in configs.items():
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(run_config, sort_keys=False))
            try:
                _check_one(path)
            except ArgumentError as err:
                message = one_line(str(err)).replace(str(path), f"runs.{name}")
                raise UserError(f"CONFIG {config}: run {name!r}: {message}") from None
            except (UserError, DataError, TargetError) as err:
                raise UserError(f"CONFIG {config}: run {name!r}: {err}") from None
