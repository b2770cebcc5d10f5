"""`crossvit-mtl edges PRED --labels GT | --boundaries GT`: boundary scores (odsF, oisF, AP) of a
folder of 8-bit edge maps, as the multi-task papers compute them with SEISM.

PRED holds ``<id>.png``, 8-bit grey, value/255 the probability of an edge. The ground truth is a
folder of label maps (``<id>.mat`` with PASCAL-Context's ``LabelMap``, or a PNG of label ids;
boundaries are where labels change) or a folder of boundary maps (NYUD-v2's ``edge/``, PNG or
.npy: > 0 is a boundary). ``crossvit_mtl.tasks.edge_eval`` does the scoring; docs/edges.md the protocol.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def check_file(path: Path) -> None:
    """The cheap checks, run on every file before any work starts: there, a file, not empty."""
    from crossvit_mtl.data.errors import DataError

    if not path.exists():
        raise DataError(path, "no such file")
    if not path.is_file():
        raise DataError(path, "is a folder, expected a file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file")


def read_png(path: Path, modes: tuple[str, ...], expected: str) -> np.ndarray:
    """A fully decoded PNG of one of ``modes``, or a DataError naming the file and saying why not."""
    from PIL import Image

    from crossvit_mtl.data.errors import DataError

    try:
        with Image.open(path) as img:
            img.load()
            kind, mode = img.format, img.mode
            pixels = np.array(img)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(path, f"not a readable image ({err})") from None
    if kind != "PNG":
        raise DataError(path, f"is a {kind} image, expected a PNG")
    if mode not in modes:
        raise DataError(path, f"PNG of mode {mode}, expected {expected}")
    return pixels


def read_prediction(path: Path) -> np.ndarray:
    """An 8-bit grey PNG as uint8 (value/255 = probability of an edge)."""
    return read_png(path, ("L",), "8-bit grey (mode L): value/255 is the probability of an edge")


def read_boundaries(path: Path) -> np.ndarray:
    """A one-channel PNG or a 2-D .npy whose non-zero pixels are boundaries (NYUD-v2's edge/<id>.png
    as MTI-Net ships it, edge/<id>.npy as ATRC does)."""
    if path.suffix != ".npy":
        return read_png(path, ("1", "L", "P", "I;16", "I"), "one channel, > 0 on boundaries") > 0
    from crossvit_mtl.data.errors import DataError, load_npy

    array = np.squeeze(load_npy(path))
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(path, f"holds {array.dtype} of shape {array.shape}, expected a 2-D boundary map")
    return array > 0


def read_label_map(path: Path) -> np.ndarray:
    """PASCAL-Context's ``<id>.mat`` (variable ``LabelMap``) or a one-channel PNG of label ids."""
    if path.suffix != ".mat":
        return read_png(path, ("L", "P", "I;16", "I"), "one channel of label ids").astype(np.int64)
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    from crossvit_mtl.data.errors import DataError

    try:
        content = loadmat(path)
    except (MatReadError, ValueError, OSError, NotImplementedError, TypeError, EOFError) as err:
        raise DataError(path, f"not a readable MATLAB file ({err})") from None
    if "LabelMap" not in content:
        held = sorted(k for k in content if not k.startswith("__"))
        raise DataError(path, f"no variable LabelMap (holds: {', '.join(held) or 'nothing'})")
    labels = np.asarray(content["LabelMap"])
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.number):
        raise DataError(path, f"LabelMap is {labels.dtype} of shape {labels.shape}, expected a 2-D label map")
    return labels


def ground_truth_file(folder: Path, stem: str, kind: str) -> Path | None:
    """The ground-truth file of an id: ``<id>.mat`` before ``<id>.png`` for label maps, ``<id>.png``
    before ``<id>.npy`` for boundary maps."""
    suffixes = (".mat", ".png") if kind == "labels" else (".png", ".npy")
    return next((folder / f"{stem}{s}" for s in suffixes if (folder / f"{stem}{s}").exists()), None)


def score_image(job: tuple[Path, Path, str, str, float, bool]) -> np.ndarray | tuple[str, str]:
    """Counts of one image, or (argument, one-line problem) naming the file: returned, not
    raised, so a worker process hands it back whole."""
    from crossvit_mtl.data.errors import DataError
    from crossvit_mtl.tasks.edge_eval import edge_counts, seg2bmap

    pred_path, gt_path, kind, protocol, max_dist, thin_gt = job
    try:
        pred = read_prediction(pred_path)
    except DataError as err:
        return "PRED", str(err)
    try:
        gt = seg2bmap(read_label_map(gt_path)) if kind == "labels" else read_boundaries(gt_path)
    except DataError as err:
        return f"--{kind}", str(err)
    if pred.shape != gt.shape:
        return "PRED", (f"{pred_path}: {pred.shape[0]}x{pred.shape[1]} (HxW), but its ground truth {gt_path} "
                        f"is {gt.shape[0]}x{gt.shape[1]}")
    if min(pred.shape) < 2:
        return "PRED", f"{pred_path}: {pred.shape[0]}x{pred.shape[1]} is too small to score, need at least 2x2"
    return edge_counts(pred, gt, protocol, max_dist=max_dist, thin_gt=thin_gt)


def read_ids(path: Path) -> list[str]:
    """One id per line (blank lines skipped); a repeated id is the user's error."""
    from crossvit_mtl.cli.args import named

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise named("--ids", f"{path}: not a text file") from None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        stem = line.strip()
        if not stem:
            continue
        if stem in seen:
            raise named("--ids", f"{path}: line {number} repeats id {stem!r} of line {seen[stem]}")
        seen[stem] = number
        ids.append(stem)
    if not ids:
        raise named("--ids", f"{path}: no ids")
    return ids


def plan(args: argparse.Namespace) -> tuple[list[str], list[tuple[Path, Path, str, str, float, bool]]]:
    """The ids and the (prediction, ground truth) of each, every file checked to be there first."""
    from crossvit_mtl.cli.args import input_file, input_folder, named
    from crossvit_mtl.data.errors import DataError

    pred_dir = input_folder("PRED", args.pred)
    kind = "labels" if args.labels else "boundaries"
    gt_dir = input_folder(f"--{kind}", args.labels or args.boundaries)
    if args.ids:
        ids = read_ids(input_file("--ids", args.ids))
    else:
        ids = sorted(p.stem for p in pred_dir.glob("*.png"))
        if not ids:
            raise named("PRED", f"{pred_dir}: no PNG images found")
    jobs = []
    for stem in ids:
        pred_path = pred_dir / f"{stem}.png"
        gt_path = ground_truth_file(gt_dir, stem, kind)
        try:
            check_file(pred_path)
        except DataError as err:
            if args.ids and not pred_path.exists():  # the list names an image the folder does not have
                raise named("--ids", f"{args.ids}: id {stem!r} has no prediction ({pred_path}: no such file)") from None
            raise named("PRED", err) from None
        if gt_path is None:
            expected = f"{stem}.mat or {stem}.png" if kind == "labels" else f"{stem}.png or {stem}.npy"
            raise named(f"--{kind}", f"{gt_dir}: no {expected}, the ground truth of {pred_path}")
        try:
            check_file(gt_path)
        except DataError as err:
            raise named(f"--{kind}", err) from None
        jobs.append((pred_path, gt_path, kind, args.protocol, args.max_dist, args.thin_gt))
    return ids, jobs


def report(summary, protocol, images: int, max_dist: float, thin_gt: bool) -> str:
    return "\n".join([
        f"{images} images, protocol {protocol.name} ({len(protocol.thresholds)} thresholds), maxDist {max_dist:g}"
        + ("" if thin_gt else ", ground truth not thinned"),
        f"ODS F {summary.ods_f:.4f}  (precision {summary.ods_precision:.4f}, recall {summary.ods_recall:.4f}, "
        f"threshold {summary.ods_threshold:g})",
        f"OIS F {summary.ois_f:.4f}",
        f"AP    {summary.ap:.4f}",
    ])


def run(args: argparse.Namespace) -> int:
    from crossvit_mtl.cli.args import named, output_path
    from crossvit_mtl.data.cache import parallel_map, progress_bar
    from crossvit_mtl.tasks.edge_eval import COUNT_COLUMNS, best_counts, get_protocol, precision_recall, summarize

    out = output_path("--out", args.out, folder=False, overwrite=args.overwrite) if args.out else None
    ids, jobs = plan(args)
    protocol = get_protocol(args.protocol)
    total = np.zeros((len(protocol.thresholds), 4), dtype=np.int64)
    ois = np.zeros(4, dtype=np.int64)
    results = parallel_map(score_image, jobs, workers=args.workers)
    for result in progress_bar(results, len(jobs), "edges", enabled=sys.stderr.isatty()):
        if isinstance(result, tuple):
            raise named(*result)
        total += result
        ois += best_counts(result)
    summary = summarize(total, ois, protocol.thresholds)
    print(report(summary, protocol, len(ids), args.max_dist, args.thin_gt))
    if out:
        precision, recall, f = precision_recall(total)
        data = {"protocol": protocol.name, "max_dist": args.max_dist, "thin_gt": args.thin_gt, "images": len(ids),
                **summary.as_dict(), "thresholds": list(protocol.thresholds), "precision": precision.tolist(),
                "recall": recall.tolist(), "f": f.tolist(),
                "counts": {"columns": list(COUNT_COLUMNS), "per_threshold": total.tolist(), "ois": ois.tolist()}}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def add_parser(sub) -> None:
    from crossvit_mtl.cli.args import Integer, Number, add_flag
    from crossvit_mtl.tasks.edge_eval import MAX_DIST, PROTOCOLS

    p = sub.add_parser("edges", help="score boundary predictions (odsF, oisF, AP) as the papers' SEISM does",
                       description="Score a folder of 8-bit edge-probability PNGs against label maps or "
                       "boundary maps: per threshold, non-maximum suppression, thinning and one-to-one "
                       "matching within --max_dist x the image diagonal (an exact maximum matching where "
                       "SEISM's is approximate); prints ODS F, OIS F and AP. See docs/edges.md.")
    p.add_argument("pred", metavar="PRED", help="folder of <id>.png predictions (8-bit grey, value/255)")
    gt = p.add_mutually_exclusive_group(required=True)
    gt.add_argument("--labels", metavar="FOLDER",
                    help="label maps: <id>.mat with LabelMap (PASCAL-Context's trainval/) or <id>.png of label ids")
    gt.add_argument("--boundaries", metavar="FOLDER",
                    help="boundary maps: <id>.png or <id>.npy, > 0 is a boundary (NYUD-v2's edge/)")
    p.add_argument("--max_dist", type=Number(0, 1, low_open=True, high_open=True), default=MAX_DIST["pascal-context"],
                   help=f"matching radius as a fraction of the image diagonal (default {MAX_DIST['pascal-context']} "
                   f"as for PASCAL-Context; {MAX_DIST['nyud-v2']} for NYUD-v2)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="seism",
                   help="seism: NMS, 101 HED thresholds (the papers' figures); seism-quick: every fifth of "
                   "those (a lower bound, for quick checks); mtinet: no NMS, 99 thresholds (MTI-Net's script)")
    add_flag(p, "--thin_gt", default=True,
             help="thin the ground truth's boundaries like the predictions (default true); false scores them "
             "unthinned, as one version of SEISM's edgesEvalImg.m does (see docs/edges.md)")
    p.add_argument("--no_gt_thinning", dest="thin_gt", action="store_false", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--ids", metavar="FILE", help="text file of ids, one a line (default: every PRED/*.png)")
    p.add_argument("--workers", type=Integer(1, 256), default=1, help="processes (default 1)")
    p.add_argument("--out", metavar="FILE", help="also write the scores, the PR curve and the counts as JSON")
    add_flag(p, "--overwrite", help="replace an existing --out file")
    p.set_defaults(func=run)
