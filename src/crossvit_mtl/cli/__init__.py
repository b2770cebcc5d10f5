"""The `crossvit-mtl` command: one sub-command per module under `crossvit_mtl.cli`.

Each sub-command module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` to a callable taking the parsed namespace and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command modules, in the order `--help` lists them
COMMAND_MODULES = ("demo", "train", "predict", "export", "report", "models", "data", "bench", "compare", "sweep")
#: handed whole to Lightning's CLI (cli/train.py), which parses YAML configs and overrides
LIGHTNING_COMMANDS = ("fit", "validate", "test")


class UserError(Exception):
    """An error in what the user asked for; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossvit-mtl",
        description="Dual-branch cross-attention vision transformers: classification, "
        "segmentation and multi-task dense prediction.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"crossvit_mtl.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else None
    from crossvit_mtl.engine.host_memory import keep_host_memory

    keep_host_memory()
    try:
        if command in LIGHTNING_COMMANDS:
            from crossvit_mtl.cli.train import run_lightning

            return run_lightning(argv)
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "takes_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"crossvit-mtl {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
