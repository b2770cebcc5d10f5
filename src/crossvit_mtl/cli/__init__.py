"""The `crossvit-mtl` command: one sub-command per module under `crossvit_mtl.cli`.

Each sub-command module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` to a callable taking the parsed namespace and returning an exit code; fit, validate, test
and demo are parsed by Lightning's CLI instead (``run_command(argv)``), in the same grammar
(``crossvit_mtl.cli.args``).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from crossvit_mtl.cli.args import LIGHTNING_COMMANDS, Parser, UserError, no_space, print_error

#: sub-command modules, in the order `--help` lists them (imported by name: each imports what it
#: needs only when it runs, and none imports this package)
COMMAND_MODULES = ("demo", "train", "predict", "export", "report", "models", "data", "bench", "compare", "sweep", "edges")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="crossvit-mtl",
        description="Dual-branch cross-attention vision transformers: classification, "
        "segmentation and multi-task dense prediction.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"crossvit_mtl.cli.{name}").add_parser(sub)
    return parser


def _output(args: argparse.Namespace) -> str:
    """What a command writes, to name when a full disk does not say which file: its ``output``
    (a function of its arguments), else its --out."""
    if getattr(args, "output", None):
        return str(args.output(args))
    return f"--out {args.out}" if getattr(args, "out", None) else "the output"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else None
    try:
        if command in LIGHTNING_COMMANDS:
            module = "demo" if command == "demo" else "train"
            return int(importlib.import_module(f"crossvit_mtl.cli.{module}").run_command(argv))
        args = build_parser().parse_args(argv)
        try:
            return int(args.func(args) or 0)
        except (OSError, RuntimeError) as err:  # a write that found no space: the file, else the output
            from crossvit_mtl.engine.checkpoint import full_disk

            disk = full_disk(err)
            if disk is None:
                raise
            raise no_space(disk, _output(args)) from None
    except UserError as err:
        return print_error(command, err)


__all__ = ["LIGHTNING_COMMANDS", "UserError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
