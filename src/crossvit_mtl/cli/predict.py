"""`crossvit-mtl predict`: run a trained checkpoint on image files and write every task's output."""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch

from crossvit_mtl.cli.args import UserError, checked_size
from crossvit_mtl.engine.precision import resolve
from crossvit_mtl.inference import UnreadableImage, make_forward, predict_resize, predict_slide, read_image, to_input

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def find_images(spec: str) -> list[Path]:
    """A file, a folder (its images, sorted) or a glob pattern."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--input {spec}: no PNG/JPEG images found")
    return files


def write_outputs(stem: str, rgb: np.ndarray, out: dict[str, torch.Tensor], meta: dict, out_dir: Path) -> dict:
    """Each task's files (``Task.write_prediction``); returns the JSON-able record of this image."""
    from crossvit_mtl.tasks import get_task

    record: dict = {"image": stem}
    for task, value in out.items():
        record.update(get_task(task).write_prediction(stem, value, rgb, meta, out_dir))
    return record


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from crossvit_mtl.cli.args import input_file, named, output_path
    from crossvit_mtl.engine.host_memory import apply_host_memory
    from crossvit_mtl.models import model_from_checkpoint
    from crossvit_mtl.serialization import CheckpointError

    out_dir = output_path("--out", args.out, folder=True, overwrite=args.overwrite)
    try:
        model, meta = model_from_checkpoint(input_file("--checkpoint", args.checkpoint))
    except CheckpointError as err:
        raise named("--checkpoint", err) from None
    size = checked_size(model, tuple(args.size or meta["image_size"]))
    try:
        placement = resolve(args.device, args.precision)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(f"predict on {placement}")
    print(apply_host_memory(args.system_malloc))
    model.to(placement.device)
    # one input shape when compiled (partial batches padded), so it compiles once
    runner = torch.compile(model, dynamic=False) if args.compile else model
    forward = make_forward(runner, placement, args.batch_size if args.compile else None)
    files = find_images(args.input)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, unreadable = [], []
    # resize: one forward per batch of images; slide: one image at a time, its windows batched
    step = args.batch_size if args.mode == "resize" else 1
    with tqdm(total=len(files), desc=f"predict ({args.mode})", unit="img") as progress:
        for start in range(0, len(files), step):
            batch_files, images = [], []
            for path in files[start:start + step]:
                try:
                    images.append(read_image(path))
                    batch_files.append(path)
                except UnreadableImage as err:  # named now; every readable image still gets its prediction
                    if args.strict:
                        raise named("--input", err) from None
                    unreadable.append(path)
                    tqdm.write(f"crossvit-mtl predict: error: --input {err}", file=sys.stderr)
            progress.update(len(files[start:start + step]))
            if not images:
                continue
            if args.mode == "resize":
                outs = predict_resize(forward, images, size, meta["mean"], meta["std"])
            else:
                outs = [predict_slide(forward, to_input(rgb, rgb.shape[:2], meta["mean"], meta["std"])[None],
                                      size, args.overlap, args.batch_size) for rgb in images]
            for path, rgb, single in zip(batch_files, images, outs):
                records.append(write_outputs(path.stem, rgb, {t: v[0] for t, v in single.items()}, meta, out_dir))
    (out_dir / "predictions.json").write_text(json.dumps(records, indent=2))
    print(f"wrote predictions for {len(records)} of {len(files)} image(s) to {out_dir}"
          + (f"; {len(unreadable)} unreadable (named above)" if unreadable else ""))
    return 1 if unreadable else 0


def add_parser(sub) -> None:
    from crossvit_mtl.cli.args import Device, Integer, Number, add_flag, parse_size
    from crossvit_mtl.engine.precision import DEVICES, PRECISIONS

    p = sub.add_parser("predict", help="run a trained checkpoint on images",
                       description="Predict every task of a checkpoint on PNG/JPEG images of any size. "
                       "--mode resize: each image is resized to the model's size and predictions "
                       "resized back. --mode slide: windows of the model's size slide over the image "
                       "at its own resolution, overlapping by --overlap, and their outputs are "
                       "averaged (slower, keeps detail in large images). Writes per image: "
                       "<stem>_seg.png (palette), _overlay.png, _labels.png (class ids), _depth.png "
                       "(colour map), _depth_mm.png (16-bit millimetres, metric depth only), "
                       "_normal.png (RGB = (n+1)/2), and predictions.json (classes).")
    p.add_argument("--checkpoint", required=True, help="a .ckpt written by `crossvit-mtl fit`")
    p.add_argument("--input", required=True, help="an image, a folder of images, or a glob pattern")
    p.add_argument("--out", required=True, help="output folder (new or empty, unless --overwrite)")
    add_flag(p, "--overwrite", help="write into an --out folder that already holds files")
    add_flag(p, "--strict",
             help="stop at the first unreadable image (default: predict every readable image, name "
                   "each unreadable one and exit with code 1 at the end)")
    p.add_argument("--size", type=parse_size, metavar="HxW", default=None,
                   help="model input HxW, the window in slide mode (default: training size)")
    p.add_argument("--mode", choices=("resize", "slide"), default="resize",
                   help="resize whole images (default) or slide windows of the model's size")
    p.add_argument("--overlap", type=Number(0, 1, high_open=True), default=1 / 3,
                   help="--mode slide: fraction of a window shared with its neighbour (default 1/3)")
    p.add_argument("--batch_size", type=Integer(1, 4096), default=8,
                   help="images (resize) or windows (slide) per forward")
    p.add_argument("--device", type=Device(), default="auto", help=f"{DEVICES}; auto (default): CUDA when there is one")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): the device's rule, as training's: bf16 autocast where it "
                   "multiplies bf16 natively, fp16 on GPUs without bf16, else fp32; fp32 for the "
                   "full-precision network")
    add_flag(p, "--system_malloc",
             help="leave glibc's allocator as it is (default: freed host memory is kept for reuse)")
    add_flag(p, "--compile",
             help="run the network through torch.compile: about a minute of compiling first, "
                   "worth it for large image sets (see docs/speed.md)")
    p.set_defaults(func=run)
