"""What one step of a shipped benchmark config costs here: the training pipeline per sample (read +
the papers' augmentation) and one optimiser step of the config's network at full size.

Writes a small tree of the archive in its real formats (tests/fixtures_data.py) at the benchmark's
image size (PASCAL-Context 375x500, every LabelMap 40 random regions; NYUD-v2 425x560, the
boundaries of 40 random regions as edge maps), builds the
config's training data set (``configs/pascal_context.yaml`` or ``configs/nyud_v2.yaml``: rescale
0.5-2, crop, flip, photometric distortion, padding) and its network (crossvit_mtl_base with
crossvit_18_240's encoder, random weights), then times:

* ``load()`` alone and ``dataset[(i, seed)]`` (load + augmentation), median ms per sample;
* forward + backward + Adam step of the network on a batch of those samples, with the config's
  losses and weights, in the project's default precision here, median s per step after one
  untimed step;
* the edge metric on one image, as validation (21 thresholds) and ``test`` (101) score it, with the
  benchmark's maxDist, on a prediction made of the image's boundaries blurred, shifted by a pixel
  and mixed with noise (median s over the samples).

    python benchmarks/benchmark_recipe.py --benchmark pascal_context [--steps 3] [--batch-size 6]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_readers import region_map
from crossvit_mtl import create_model
from crossvit_mtl.cli.demo import config_path
from crossvit_mtl.data.registry import build_dataset
from crossvit_mtl.data.transforms import build_transforms
from crossvit_mtl.engine.precision import resolve
from crossvit_mtl.tasks import get_task
from crossvit_mtl.tasks.edge_eval import seg2bmap
from fixtures_data import save_label_map, write_nyud, write_pascal_context

SIZES = {"pascal_context": (375, 500), "nyud_v2": (425, 560)}


def write_tree(benchmark: str, root: Path, samples: int) -> Path:
    ids = [f"2008_{i:06d}" if benchmark == "pascal_context" else f"{i:04d}" for i in range(samples)]
    split = {"train": ids, "val": ids[:1]}
    rng = np.random.default_rng(0)
    if benchmark == "nyud_v2":
        write_nyud(root, split, size=SIZES[benchmark])
        for image_id in ids:  # a scene's boundaries, not the writer's noise
            edge = seg2bmap(region_map(SIZES[benchmark], 40, rng))
            Image.fromarray(edge.astype(np.uint8) * 255).save(root / "edge" / f"{image_id}.png")
        return root
    write_pascal_context(root, split, size=SIZES[benchmark])
    for image_id in ids:
        save_label_map(root / "pascal-context" / "trainval" / f"{image_id}.mat", region_map(SIZES[benchmark], 40, rng))
    return root


def median_ms(fn, count: int, passes: int = 2) -> float:
    times = []
    for p in range(passes + 1):
        for i in range(count):
            start = time.perf_counter()
            fn(i)
            if p:  # the first pass warms caches and is not timed
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", choices=sorted(SIZES), default="pascal_context")
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps (0: none)")
    parser.add_argument("--batch-size", type=int, default=6)
    args = parser.parse_args()
    config = yaml.safe_load(config_path(f"{args.benchmark}.yaml").read_text())
    placement = resolve("auto")
    print(f"{args.benchmark}: {placement}; {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_tree(args.benchmark, Path(tmp) / "tree", args.samples)
        dataset = build_dataset(config["data"]["dataset"], root, split="train")
        info = dataset.info
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a DataLoader worker
        load_ms = median_ms(dataset.load, len(dataset))
        dataset.transform = build_transforms(info, True, config["data"]["train_transforms"])
        sample_ms = median_ms(lambda i: dataset[(i, i)], len(dataset))
        torch.set_num_threads(threads)
        print(f"per training sample, one thread as in a loader worker: load {load_ms:.0f} ms, load + augmentation "
              f"{sample_ms:.0f} ms (median over {len(dataset)} samples x 2 passes)")
        batch = default_collate([dataset[(i % len(dataset), i)] for i in range(args.batch_size)])
        dataset.transform = None
        edges = [dataset.load(i)["edge"] for i in range(len(dataset))]
    meta = info.as_meta()
    for stage in ("val", "test"):
        metric = get_task("edge").build_metric(meta, stage)
        rng = np.random.default_rng(0)

        def score(i, metric=metric, rng=rng):
            blurred = gaussian_filter(np.roll(edges[i], 1, axis=1).astype(np.float32), 1.5)
            prob = np.clip(blurred / blurred.max() + 0.05 * rng.random(blurred.shape), 1e-4, 1 - 1e-4)
            metric.update(torch.from_numpy(np.log(prob / (1 - prob)))[None, None], torch.from_numpy(edges[i])[None])

        seconds = median_ms(score, len(edges), passes=1) / 1000
        print(f"edge metric ({stage}, {len(metric.protocol.thresholds)} thresholds, maxDist {metric.max_dist}): "
              f"{seconds:.2f} s per image")
    if args.steps < 1:
        return
    model_config = config["model"]
    model = create_model(model_config["model"], tasks=info.task_channels(), **model_config["model_options"])
    losses = {t: (spec.get("weight", 1.0), get_task(t).build_loss(spec["name"], **{k: v for k, v in spec.items()
                                                                                   if k not in ("name", "weight")}))
              for t, spec in model_config["losses"].items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=model_config["lr"], weight_decay=model_config["weight_decay"])
    images = batch["image"].float()
    targets = {t: get_task(t).widen(batch[t]) for t in losses}
    print(f"network: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters; batch "
          f"{tuple(images.shape)}")
    model.train()
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with placement.autocast():
            outputs = model(images)
        total = sum(w * loss(outputs[t].float(), targets[t]) for t, (w, loss) in losses.items())
        total.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
        print(f"  step {step}: {time.perf_counter() - start:.1f} s{' (untimed)' if not step else ''}")
    print(f"one optimiser step of batch {args.batch_size}: median {statistics.median(times):.1f} s over {args.steps}")


if __name__ == "__main__":
    main()
