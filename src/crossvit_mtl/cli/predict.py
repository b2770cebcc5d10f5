"""`crossvit-mtl predict`: run a trained checkpoint on image files and write every task's output."""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from crossvit_mtl.cli import UserError

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


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as err:
        raise UserError(f"{path}: not a readable image ({err})") from None


def to_input(rgb: np.ndarray, size: tuple[int, int], mean, std) -> torch.Tensor:
    """HWC uint8 -> normalised (3, H, W) at the model's size (bilinear, antialiased)."""
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255).unsqueeze(0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x[0]


def resize_outputs(out: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Predictions back at the input's resolution: logits and depth bilinear, normals renormalised."""
    resized = {}
    for task, value in out.items():
        if task != "classification" and tuple(value.shape[-2:]) != tuple(size):
            value = F.interpolate(value.float(), size=size, mode="bilinear", align_corners=False)
            if task == "normal":
                value = F.normalize(value, dim=1)
        resized[task] = value
    return resized


def write_outputs(stem: str, rgb: np.ndarray, out: dict[str, torch.Tensor], meta: dict, out_dir: Path) -> dict:
    """PNG files per task; returns the JSON-able record of this image."""
    from crossvit_mtl.viz.colors import colorize_depth, colorize_labels, colorize_normals

    record: dict = {"image": stem}
    if "segmentation" in out:
        labels = out["segmentation"].argmax(0).numpy().astype(np.uint8)
        color = colorize_labels(labels, meta["palette"])
        Image.fromarray(labels).save(out_dir / f"{stem}_labels.png")
        Image.fromarray(color).save(out_dir / f"{stem}_seg.png")
        overlay = (0.5 * rgb.astype(np.float32) + 0.5 * color.astype(np.float32)).round().astype(np.uint8)
        Image.fromarray(overlay).save(out_dir / f"{stem}_overlay.png")
    if "depth" in out:
        depth = out["depth"][0].float().numpy()
        Image.fromarray(colorize_depth(depth)).save(out_dir / f"{stem}_depth.png")
        if meta.get("depth_kind", "metric") == "metric":
            mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
            Image.fromarray(mm).save(out_dir / f"{stem}_depth_mm.png")
    if "normal" in out:
        Image.fromarray(colorize_normals(out["normal"].float().numpy())).save(out_dir / f"{stem}_normal.png")
    if "classification" in out:
        probs = out["classification"].float().softmax(-1)
        k = int(probs.argmax())
        names = meta.get("scene_classes") or []
        record["class"] = names[k] if k < len(names) else k
        record["confidence"] = round(float(probs[k]), 4)
    return record


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from crossvit_mtl.engine.checkpoint import CheckpointError, model_from_checkpoint

    try:
        model, meta = model_from_checkpoint(args.checkpoint)
    except CheckpointError as err:
        raise UserError(str(err)) from None
    files = find_images(args.input)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = tuple(args.size or meta["image_size"])
    records = []
    for start in tqdm(range(0, len(files), args.batch_size), desc="predict", unit="batch",
                      disable=len(files) <= args.batch_size):
        batch_files = files[start:start + args.batch_size]
        images = [read_image(p) for p in batch_files]
        x = torch.stack([to_input(img, size, meta["mean"], meta["std"]) for img in images])
        with torch.no_grad():
            out = model(x)
        out = out if isinstance(out, dict) else {"classification": out}
        for i, (path, rgb) in enumerate(zip(batch_files, images)):
            single = resize_outputs({t: v[i:i + 1] for t, v in out.items()}, rgb.shape[:2])
            records.append(write_outputs(path.stem, rgb, {t: v[0] for t, v in single.items()}, meta, out_dir))
    (out_dir / "predictions.json").write_text(json.dumps(records, indent=2))
    print(f"wrote predictions for {len(files)} image(s) to {out_dir}")
    return 0


def add_parser(sub) -> None:
    from crossvit_mtl.cli.args import parse_size

    p = sub.add_parser("predict", help="run a trained checkpoint on images",
                       description="Predict every task of a checkpoint on PNG/JPEG images. Images are "
                       "resized to the model's size and predictions resized back. Writes per image: "
                       "<stem>_seg.png (palette), _overlay.png, _labels.png (class ids), _depth.png "
                       "(colour map), _depth_mm.png (16-bit millimetres, metric depth only), "
                       "_normal.png (RGB = (n+1)/2), and predictions.json (classes).")
    p.add_argument("--checkpoint", required=True, help="a .ckpt written by `crossvit-mtl fit`")
    p.add_argument("--input", required=True, help="an image, a folder of images, or a glob pattern")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=parse_size, default=None, help="model input HxW (default: training size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=run)
