"""The `crossvit-mtl` command: one sub-command per module under `crossvit_mtl.cli`.

Each sub-command module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` to a callable taking the parsed namespace and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from crossvit_mtl.cli.args import LIGHTNING_COMMANDS, UserError, print_error

#: sub-command modules, in the order `--help` lists them (imported by name: each imports what it
#: needs only when it runs, and none imports this package)
COMMAND_MODULES = ("demo", "train", "predict", "export", "report", "models", "data", "bench", "compare", "sweep", "edges")


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
    try:
        if command in LIGHTNING_COMMANDS:
            from crossvit_mtl.cli.train import run_command

            return run_command(argv)
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "takes_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
        return int(args.func(args) or 0)
    except UserError as err:
        return print_error(command, err)


__all__ = ["LIGHTNING_COMMANDS", "UserError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
