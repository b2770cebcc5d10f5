"""Training-loader throughput: the project's cache -> train transforms -> batches.

Renders synthetic scenes into a cache in a temporary folder (the format `crossvit-mtl data synth`
writes), reads it with `CachedDataset` and the training augmentation through a DataLoader, and
prints samples/s (median of 3 epochs after a warm-up epoch). The project's goal is at least 1000
samples/s with 2 workers at 128x256, so data loading never limits training on a small machine.
With ``--device cuda`` the batches also go to the GPU as training sends them: from pinned memory,
without blocking.

    python benchmarks/data_throughput.py [--workers 2] [--batch-size 32] [--samples 512] [--device cuda]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from crossvit_mtl.data.cache import CachedDataset
from crossvit_mtl.data.synth import write_synth
from crossvit_mtl.data.transforms import build_transforms
from crossvit_mtl.engine.precision import DEVICES, resolve


def measure(loader: DataLoader, epochs: int = 3, device: torch.device | None = None) -> list[float]:
    """Samples/s of each timed epoch, after one untimed warm-up epoch (worker start, page cache)."""
    device = device or torch.device("cpu")
    rates = []
    for epoch in range(epochs + 1):
        start, count = time.perf_counter(), 0
        for batch in loader:
            if device.type == "cuda":
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            count += batch["image"].shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if epoch:
            rates.append(count / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--device", default="cpu", help=f"{DEVICES} (default cpu: the loader alone)")
    args = parser.parse_args()
    try:
        device = resolve(args.device).device
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        write_synth(root, train=args.samples, val=1, workers=max(args.workers, 1), progress=False)
        dataset = CachedDataset(root, split="train")
        dataset.transform = build_transforms(dataset.info, train=True)
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                            num_workers=args.workers, persistent_workers=args.workers > 0, pin_memory=cuda)
        rates = measure(loader, device=device)
        height, width = dataset[0]["image"].shape[-2:]
    print(f"{args.samples} cached samples of {height}x{width} (all four tasks), {args.workers} workers, "
          f"{'to ' + str(device) + ', ' if cuda else ''}"
          f"batch {args.batch_size}, train augmentation: {statistics.median(rates):.0f} samples/s "
          f"(median of {len(rates)} epochs: {', '.join(f'{r:.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
