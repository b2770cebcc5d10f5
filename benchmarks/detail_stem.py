"""Training-step time of the quick start's network with detail stems of other widths and depths,
side by side in one process (bf16 autocast on CPUs that multiply bf16, as `fit` chooses).

    python benchmarks/detail_stem.py [--size 96x192] [--batch 8] [--repeats 8]

Each variant is the quick start's network and losses (read from `configs/demo.yaml`) with another
stem, stepping (forward, the four losses, backward, AdamW) on the same batch of rendered scenes;
steps are interleaved so that every variant sees the same machine, and the median is reported.
`crossvit-mtl bench` measures each case in a fresh process, one after another: between such
close variants its figures move more than the difference.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml

from crossvit_mtl.cli.demo import config_path
from crossvit_mtl.engine.datamodule import DenseDataModule
from crossvit_mtl.engine.module import DenseTaskModule
from crossvit_mtl.engine.precision import auto_precision

VARIANTS = {
    "32 channels, no blocks (the presets)": {"detail_channels": 32, "detail_depth": 0},
    "32 channels, 2 blocks": {"detail_channels": 32, "detail_depth": 2},
    "64 channels, no blocks": {"detail_channels": 64, "detail_depth": 0},
    "64 channels, 2 blocks (the quick start)": {"detail_channels": 64, "detail_depth": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="96x192", help="HxW of the rendered scenes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    demo = yaml.safe_load(config_path("demo.yaml").read_text())["model"]
    data = DenseDataModule(dataset="synth", options={"length": args.batch, "height": height, "width": width},
                           tasks=["segmentation", "depth", "normal", "classification"], batch_size=args.batch,
                           num_workers=0)
    batch = DenseTaskModule.widen(data.calibration_batch(args.batch))
    modules = {name: DenseTaskModule(demo["model"], {**demo["model_options"], **options},
                                     dataset_meta=data.meta, losses=demo["losses"])
               for name, options in VARIANTS.items()}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-3) for name, m in modules.items()}
    bf16 = auto_precision("cpu").startswith("bf16")

    def step(name: str) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = modules[name](batch["image"])
        sum(modules[name].weighted_losses(outputs, batch).values()).backward()
        optimizers[name].step()
        optimizers[name].zero_grad()
        return time.perf_counter() - start

    for name in modules:  # warm-up
        step(name)
        step(name)
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(args.repeats):
        for name in modules:
            times[name].append(step(name))
    base = statistics.median(times[next(iter(VARIANTS))])
    print(f"{args.size}, batch {args.batch}, {'bf16' if bf16 else 'fp32'}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    for name, values in times.items():
        params = sum(p.numel() for p in modules[name].parameters()) / 1e6
        print(f"  {name:42s} {statistics.median(values) * 1000:7.1f} ms/step  {statistics.median(values) / base:.2f}x"
              f"  {params:.2f} M parameters")


if __name__ == "__main__":
    main()
