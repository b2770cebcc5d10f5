"""Argument types and checks shared by sub-commands.

Every file or folder argument is checked the same way before any work starts, and every problem
with one is a single line naming the argument and the file: ``--checkpoint run.ckpt: empty file``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

#: handed whole to Lightning's CLI (cli/train.py), which parses YAML configs and overrides
LIGHTNING_COMMANDS = ("fit", "validate", "test")


class UserError(Exception):
    """An error in what the user asked for; printed as one line, exit code 2."""


def own_command() -> str:
    """How a fresh shell in the current folder runs this command again: the ``crossvit-mtl`` script
    as it was invoked (``.venv/bin/crossvit-mtl`` from ``make demo``), else the interpreter that
    runs now with ``-m crossvit_mtl``; a virtualenv need not be activated for either."""
    script = Path(sys.argv[0])
    if script.name == "crossvit-mtl" and script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m crossvit_mtl"


def print_error(command: str | None, err: UserError) -> int:
    """The one line a ``UserError`` prints, and its exit code."""
    print(f"crossvit-mtl {command}: error: {err}", file=sys.stderr)
    return 2


def parse_size(text: str) -> tuple[int, int]:
    """'128x256' -> (128, 256)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 128x256), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def checked_size(model, size: tuple[int, int]) -> tuple[int, int]:
    """``--size`` as the model's encoder accepts it, else a one-line ``UserError``."""
    try:
        model.encoder.check_input_size(*size)
    except ValueError as err:
        raise UserError(f"--size: {err}") from None
    return size


def named(argument: str, err: BaseException | str):
    """A ``UserError`` saying which argument a problem belongs to; ``err`` names the file first
    (``"path: what is wrong"``, as the readers' errors do)."""
    return UserError(f"{argument} {' '.join(str(err).split())}")


def input_file(argument: str, path: str | Path) -> Path:
    """A file to read: it exists, is a file and is not empty."""
    path = Path(path)
    if not path.exists():
        raise named(argument, f"{path}: no such file")
    if not path.is_file():
        raise named(argument, f"{path}: is a folder, expected a file")
    if path.stat().st_size == 0:
        raise named(argument, f"{path}: empty file")
    return path


def input_folder(argument: str, path: str | Path) -> Path:
    """A folder to read: it exists and is a folder."""
    path = Path(path)
    if not path.exists():
        raise named(argument, f"{path}: no such folder")
    if not path.is_dir():
        raise named(argument, f"{path}: is a file, expected a folder")
    return path


def output_path(argument: str, path: str | Path, folder: bool, overwrite: bool, hint: str | None = None) -> Path:
    """A file or folder to write: creatable, of the right kind, and holding nothing that would be
    lost unless ``overwrite`` (an empty folder is fine); ``hint`` says what to do instead."""
    path = Path(path)
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise named(argument, f"{path}: cannot be created, {blocking} is a file")
    if not path.exists():
        return path
    if path.is_dir() != folder:
        raise named(argument, f"{path}: is a {'file' if folder else 'folder'}, expected a {'folder' if folder else 'file'}")
    if not overwrite and (not folder or any(path.iterdir())):
        default = f"pass --overwrite to {'write into' if folder else 'replace'} it"
        raise named(argument, f"{path}: {'already holds files' if folder else 'exists'}; {hint or default}")
    return path


def read_yaml_mapping(argument: str, path: str | Path) -> dict:
    """A YAML file holding a mapping, or one line saying why it is not one."""
    import yaml

    path = input_file(argument, path)
    try:
        with path.open(encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except (UnicodeDecodeError, yaml.reader.ReaderError):
        raise named(argument, f"{path}: not a text file (binary data, not UTF-8 text)") from None
    except yaml.YAMLError as err:
        raise named(argument, f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise named(argument, f"{path}: holds {f'a YAML {type(data).__name__}' if data is not None else 'nothing'}, "
                              "expected a mapping of keys to values")
    return data
