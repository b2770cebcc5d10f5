"""Training-loader throughput: cached arrays -> sample dicts -> train transforms -> batches.

Writes a fake cache of 128x256 samples (memory-mapped .npy arrays in the layout a cache would
use) to a temporary directory, reads it through a DataLoader with the training augmentation,
and prints samples/s (median of 3 epochs after a warm-up epoch). The project's goal is at
least 1000 samples/s with 2 workers, so data loading never limits training on a small machine.

    python benchmarks/data_throughput.py [--workers 2] [--batch-size 32] [--samples 512]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from crossvit_mtl.data.common import CATEGORY_NAMES, DatasetInfo
from crossvit_mtl.data.transforms import build_transforms

H, W = 128, 256
INFO = DatasetInfo(name="fake-cache", tasks=("segmentation", "depth", "normal"),
                   class_names=CATEGORY_NAMES, depth_kind="metric")


def write_fake_cache(root: Path, n: int, seed: int = 0) -> None:
    """Random arrays in the cache dtypes: uint8 images and labels, float32 depth, float16 normals."""
    rng = np.random.default_rng(seed)
    specs = {"image": ((n, H, W, 3), np.uint8), "label": ((n, H, W), np.uint8),
             "depth": ((n, H, W), np.float32), "normal": ((n, H, W, 3), np.float16)}
    arrays = {name: np.lib.format.open_memmap(root / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
              for name, (shape, dtype) in specs.items()}
    for i in range(n):
        arrays["image"][i] = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        arrays["label"][i] = rng.integers(0, len(CATEGORY_NAMES), (H, W), dtype=np.uint8)
        depth = rng.uniform(1, 80, (H, W)).astype(np.float32)
        depth[rng.random((H, W)) < 0.3] = 0.0
        arrays["depth"][i] = depth
        normal = rng.normal(size=(H, W, 3)).astype(np.float32)
        arrays["normal"][i] = normal / np.linalg.norm(normal, axis=-1, keepdims=True)
    for array in arrays.values():
        array.flush()


def read_sample(arrays: dict[str, np.ndarray], index: int) -> dict[str, torch.Tensor]:
    """One cached sample in the project's tensor layout: the one function to swap for a real reader."""
    image, label, depth, normal = (torch.from_numpy(arrays[k][index]) for k in ("image", "label", "depth", "normal"))
    return {  # torch converts dtypes faster than numpy (float16 especially)
        "image": image.permute(2, 0, 1).contiguous().float().div_(255.0),
        "segmentation": label.long(),
        "depth": depth[None].clone(),
        "normal": normal.permute(2, 0, 1).contiguous().float(),
    }


class CachedDataset(Dataset):
    """Opens the memory maps lazily, in each worker, so nothing large is pickled to the workers.

    Copy-on-write maps (``mmap_mode="c"``) give writable arrays, which torch.from_numpy expects.
    """

    def __init__(self, root: Path, info: DatasetInfo):
        self.root = root
        self.transform = build_transforms(info, train=True)
        self.arrays: dict[str, np.ndarray] | None = None
        self.length = len(np.load(root / "image.npy", mmap_mode="r"))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.arrays is None:
            self.arrays = {p.stem: np.load(p, mmap_mode="c") for p in self.root.glob("*.npy")}
        return self.transform(read_sample(self.arrays, index))


def measure(loader: DataLoader, epochs: int = 3) -> list[float]:
    """Samples/s of each timed epoch, after one untimed warm-up epoch (worker start, page cache)."""
    rates = []
    for epoch in range(epochs + 1):
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += batch["image"].shape[0]
        if epoch:
            rates.append(count / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_fake_cache(root, args.samples)
        loader = DataLoader(CachedDataset(root, INFO), batch_size=args.batch_size, shuffle=True,
                            num_workers=args.workers, persistent_workers=args.workers > 0)
        rates = measure(loader)
    print(f"{args.samples} samples of {H}x{W}, {args.workers} workers, batch {args.batch_size}: "
          f"{statistics.median(rates):.0f} samples/s (median of {len(rates)} epochs: "
          f"{', '.join(f'{r:.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
