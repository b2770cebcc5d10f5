"""The command line's one grammar, and the argument types and checks its sub-commands share.

Every sub-command spells its options with underscores (``--batch_size``, ``--run_dir``), as
fit's options, the keys of its config, are spelt; the argparse commands also take the hyphenated
spelling they had (``--batch-size``), unlisted.
Every boolean option is given as ``--flag`` (true) or ``--flag true|false`` (yes/no too). Every
number and choice is checked by its type while the command line is parsed, by argparse for most
commands and by jsonargparse for fit, validate, test and demo, with the same types: a value
outside it is one line naming the option and the value, exit code 2.

Every file or folder argument is checked the same way before any work starts, and every problem
with one is a single line naming the argument and the file: ``--checkpoint run.ckpt: empty file``.
"""
from __future__ import annotations

import argparse
import errno
import math
import re
import shlex
import sys
from pathlib import Path

#: handed whole to Lightning's CLI (cli/train.py, cli/demo.py), which parses YAML configs and overrides
LIGHTNING_COMMANDS = ("fit", "validate", "test", "demo")
#: the largest seed numpy and Lightning's seed_everything take
MAX_SEED = 2**32 - 1
#: the longest side a ``--size`` takes, in pixels
MAX_SIDE = 8192


class UserError(Exception):
    """An error in what the user asked for; printed as one line, exit code 2."""

    exit_code = 2


class NoSpace(UserError):
    """A file could not be written for lack of space: one line naming it, exit code 1 (nothing the
    user asked for was wrong, and what was written before is kept)."""

    exit_code = 1


class BadValue(argparse.ArgumentTypeError, ValueError):
    """A value an option does not take. argparse prints it as ``argument --x: ...``; jsonargparse,
    for a value from a config file, as ``Parser key "x": ...`` (it names the key on ValueError)."""


class Parser(argparse.ArgumentParser):
    """argparse in the project's grammar: an option spelt with underscores is taken spelt with
    hyphens too, as a second option of the same destination that --help does not list (the
    spelling these commands had); every error is one line, exit code 2."""

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        aliases = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        if aliases:
            super().add_argument(*aliases, **{**kwargs, "dest": action.dest, "help": argparse.SUPPRESS,
                                              "default": argparse.SUPPRESS, "required": False})
        return action

    def error(self, message: str):
        command = " ".join(self.prog.split()[:2])  # "crossvit-mtl data", as the commands' own errors say
        self.exit(2, f"{command}: error: {' '.join(message.split())}\n")


class Integer:
    """An integer from ``low`` to ``high``: the type of the integer options, in both parsers."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def __call__(self, value) -> int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,40}\s*", value):
            number = int(value)
        if number is None or not self.low <= number <= self.high:
            raise BadValue(f"must be an integer from {self.low} to {self.high}, got {value!r}")
        return number

    def __repr__(self) -> str:  # how --help names the type
        return f"int {self.low}..{self.high}"


class Number:
    """A finite number in an interval, ``open`` ends excluded: the type of the real-valued options."""

    def __init__(self, low: float, high: float, low_open: bool = False, high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def __call__(self, value) -> float:
        try:
            number = math.nan if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        inside = (math.isfinite(number) and (self.low < number if self.low_open else self.low <= number)
                  and (number < self.high if self.high_open else number <= self.high))
        if not inside:
            raise BadValue(f"must be a number in {self!r}, got {value!r}")
        return number

    def __repr__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


class Boolean:
    """true or false (yes or no), in any case: the type of every boolean option."""

    def __call__(self, value) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("true", "yes"):
            return True
        if word in ("false", "no"):
            return False
        raise BadValue(f"must be true or false, got {value!r}")

    def __repr__(self) -> str:
        return "bool"


class Size:
    """'128x256' (or [128, 256] in a config file) -> (128, 256), each side 1 to ``MAX_SIDE``."""

    def __call__(self, value) -> tuple[int, int]:
        try:
            h, w = (int(v) for v in (value.lower().split("x") if isinstance(value, str) else value))
        except (TypeError, ValueError):
            raise BadValue(f"size must look like HxW (e.g. 128x256), got {value!r}") from None
        if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
            raise BadValue(f"size must be HxW with sides from 1 to {MAX_SIDE}, got {value!r}")
        return h, w

    def __repr__(self) -> str:
        return "HxW"


class Device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; whether that device is there is checked when used."""

    def __call__(self, value) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", value.strip()):
            raise BadValue(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value.strip()

    def __repr__(self) -> str:
        return "device"


class RunSeed:
    """``--seed_everything``: an integer 0 to ``MAX_SEED``, or true (a random seed) or false (none)."""

    def __call__(self, value) -> int | bool:
        if isinstance(value, bool) or str(value).strip().lower() in ("true", "false"):
            return boolean(value)
        try:
            return Integer(0, MAX_SEED)(value)
        except BadValue:
            raise BadValue(f"must be an integer from 0 to {MAX_SEED}, true (a random seed) or false (no "
                           f"seeding), got {value!r}") from None

    def __repr__(self) -> str:
        return f"int 0..{MAX_SEED} | bool"


parse_size = Size()
boolean = Boolean()


def add_flag(parser, name: str, help: str, default: bool = False):
    """A boolean option: ``--flag`` (true), ``--flag true`` or ``--flag false``."""
    return parser.add_argument(name, type=boolean, nargs="?", const=True, default=default,
                               metavar="{true,false}", help=help)


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
    print(f"crossvit-mtl {command}: error: {' '.join(str(err).split())}", file=sys.stderr)
    return err.exit_code


def no_space(err: OSError, where: str | Path, then: str = "run the command again") -> NoSpace:
    """The one line of a write that found no space (``engine.checkpoint.full_disk``): the file
    (where the error does not say which, the output being written), and that what was written
    before is kept."""
    quota = " (or the quota)" if err.errno != errno.ENOSPC else ""
    return NoSpace(f"{err.filename or where}: no space left on the device{quota}; nothing written before was "
                   f"lost: free some space and {then}")


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
