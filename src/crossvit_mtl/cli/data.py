"""`crossvit-mtl data`: write caches (synthetic scenes, Cityscapes) and check data sets."""
from __future__ import annotations

import argparse
from pathlib import Path

from crossvit_mtl.cli.args import MAX_SEED, Integer, add_flag, input_folder, named, parse_size

#: the most scenes of a split `data synth` writes, and the most processes a command starts
MAX_SCENES = 1_000_000
MAX_WORKERS = 256
#: the splits of the official Cityscapes download (gtFine)
SPLITS = ("train", "val", "test")


def _user_errors(run):
    """Bad data and an existing output are the user's to fix: one line naming the argument, exit
    code 2 (``--out`` is the cache being written, ``--root`` the data being read)."""
    from crossvit_mtl.cli.args import output_path
    from crossvit_mtl.data.errors import DataError

    def wrapped(args: argparse.Namespace) -> int:
        output_path("--out", args.out, folder=True, overwrite=True)  # a file in the way; caches say the rest
        try:
            return run(args)
        except FileExistsError as err:
            raise named("--out", err) from None
        except DataError as err:
            raise named("--root", err) from None
    return wrapped


@_user_errors
def run_synth(args: argparse.Namespace) -> int:
    from crossvit_mtl.data.synth import write_synth

    out = write_synth(args.out, train=args.train, val=args.val, test=args.test, height=args.size[0],
                      width=args.size[1], seed=args.seed, workers=args.workers, overwrite=args.overwrite,
                      progress=True)
    print(f"wrote {out}: synthetic scenes, train {args.train}, val {args.val}, test {args.test}, "
          f"{args.size[0]}x{args.size[1]}")
    for split in ("train", "val", "test"):
        counts = class_counts(args.seed, split, getattr(args, split))
        if len(set(counts)) > 1:
            print(f"note: {split} holds {getattr(args, split)} scenes, not a multiple of {len(counts)}: its classes "
                  f"are not balanced ({'/'.join(map(str, counts))})")
    return 0


def class_counts(seed: int, split: str, count: int) -> list[int]:
    """Scenes of each class among a split's first ``count`` (the class is a rotation of the index)."""
    from crossvit_mtl.data.synth import SCENE_CLASSES, scene_class, synth_split_seed

    counts = [0] * len(SCENE_CLASSES)
    for index in range(count):
        counts[scene_class(synth_split_seed(seed, split), index)] += 1
    return counts


@_user_errors
def run_cityscapes(args: argparse.Namespace) -> int:
    from crossvit_mtl.data.cityscapes import convert_cityscapes

    out = convert_cityscapes(input_folder("--root", args.root), args.out, size=args.size, labels=args.labels,
                             splits=args.splits, overwrite=args.overwrite, workers=args.workers, progress=True)
    print(f"wrote {out}: Cityscapes ({args.labels}), splits {', '.join(args.splits)}, "
          f"{args.size[0]}x{args.size[1]}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from crossvit_mtl.data.check import scan

    report = scan(input_folder("PATH", args.path), args.kind, progress=True)
    if report.kind == "unknown":  # not a data set at all: the argument is wrong, not the data
        raise named("PATH", report.problems[0])
    for problem in report.problems:
        print(problem)
    if report.problems:
        print(f"{len(report.problems)} problem(s) found in {args.path}")
        return 1
    print(report.summary(args.path))
    return 0


def add_parser(sub) -> None:
    from crossvit_mtl.data.check import KINDS
    from crossvit_mtl.data.cityscapes import LABEL_MODES

    p = sub.add_parser("data", help="write data caches and check data sets",
                       description="Convert data into the project's cache format and check data sets.")
    cmds = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    cmds.required = True

    s = cmds.add_parser("synth", help="render synthetic scenes into a cache")
    s.add_argument("--out", type=Path, required=True, help="cache folder to write")
    scenes = Integer(0, MAX_SCENES)
    s.add_argument("--train", type=scenes, default=1000, help="training scenes (default 1000)")
    s.add_argument("--val", type=scenes, default=200, help="validation scenes, for model selection (default 200)")
    s.add_argument("--test", type=scenes, default=200, help="test scenes, to report on (default 200)")
    s.add_argument("--size", type=parse_size, metavar="HxW", default=(128, 256), help="HxW (default 128x256)")
    s.add_argument("--seed", type=Integer(0, MAX_SEED), default=0, help="random seed (default 0)")
    s.add_argument("--workers", type=Integer(1, MAX_WORKERS), default=1, help="rendering processes (default 1)")
    add_flag(s, "--overwrite", help="replace an existing cache")
    s.set_defaults(func=run_synth)

    c = cmds.add_parser("cityscapes", help="convert the official Cityscapes download into a cache",
                        description="Read leftImg8bit/, gtFine/ (labelIds) and, when present, "
                        "disparity/ and camera/ (depth in metres), resize and write a cache.")
    c.add_argument("--root", type=Path, required=True, help="folder holding leftImg8bit/ and gtFine/")
    c.add_argument("--out", type=Path, required=True, help="cache folder to write")
    c.add_argument("--size", type=parse_size, metavar="HxW", default=(128, 256), help="HxW (default 128x256)")
    c.add_argument("--labels", choices=LABEL_MODES, default="category8",
                   help="category8: 8 categories, void = class 0 (the thesis); mtan7: 7 categories, "
                   "void ignored (MTAN benchmark); train19: the 19 train classes")
    c.add_argument("--splits", nargs="+", choices=SPLITS, default=["train", "val"], help="splits (default train val)")
    c.add_argument("--workers", type=Integer(1, MAX_WORKERS), default=1, help="decoding processes (default 1)")
    add_flag(c, "--overwrite", help="replace an existing cache")
    c.set_defaults(func=run_cityscapes)

    k = cmds.add_parser("check", help="list every problem of a data set",
                        description="Read a whole data set (cache, Cityscapes, MTAN Cityscapes/NYUv2, "
                        "image folders, PASCAL-Context, NYUD-v2) and print every problem found; exit code 1 if any.")
    k.add_argument("path", type=Path, metavar="PATH", help="data set folder")
    k.add_argument("--kind", choices=("auto",) + KINDS, default="auto", help="layout (default: detect)")
    k.set_defaults(func=run_check)
