"""The quick start's training loop against the bench's step for the same network and batch, side by
side in one process.

Four ways of training the quick start's network (configs/demo.yaml: crossvit_mtl_tiny with its
options, batch 8, 96x192) take turns, ``--steps`` training steps each per round:

- ``bench``: the bench's step (``crossvit_mtl.bench``): one fixed batch, every task's default
  loss, the project's AdamW; what ``crossvit-mtl bench`` reports for this network;
- ``module``: a plain loop over the demo's LightningModule without a Trainer: one fixed batch
  of real scenes, the demo's losses, weights and loss scaling, its optimiser and schedule;
- ``fit_fixed``: ``Trainer.fit`` of the demo's config on the module loop's one fixed batch,
  repeated (callbacks, logging, progress bar, no data loader): the demo without its loading;
- ``demo``: ``Trainer.fit`` of the demo's config as ``make demo`` runs it (loader workers,
  logging, callbacks, progress bar), on a scene cache; the time of each batch is the wall time
  between the ends of consecutive batches, loading included.

The first ``--skip`` batches of each are not counted (start-up, loader workers). Ratios are
medians of the per-round ratios to ``bench``.

    python benchmarks/loop_speed.py [--root data/synth96] [--steps 40] [--rounds 3] [--workers 2 0]

Without ``--root`` a small cache of 96x192 scenes (400 train) is written to a temporary folder.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import lightning.pytorch as pl
import torch

from crossvit_mtl.bench.cases import Case
from crossvit_mtl.bench.measure import load_average, prepare
from crossvit_mtl.cli.demo import DEMO_CONFIG, config_path
from crossvit_mtl.cli.train import CrossViTCLI, cli_kwargs
from crossvit_mtl.data.synth import write_synth
from crossvit_mtl.engine.calibration import measure_initial_losses
from crossvit_mtl.engine.host_memory import keep_host_memory
from crossvit_mtl.engine.optim import build_optimizer, warmup_cosine
from crossvit_mtl.engine.precision import resolve

QUICK_START = "crossvit_mtl_tiny:refine_heads=True,detail_channels=64,detail_depth=2"


class BatchClock(pl.Callback):
    """Wall time between the ends of consecutive training batches."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())


def demo_cli(root: Path, run_dir: Path, steps: int, workers: int | None) -> CrossViTCLI:
    args = ["--config", str(config_path(DEMO_CONFIG)), "--data.root", str(root), "--run_dir", str(run_dir),
            "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--report_samples", "0"]
    if workers is not None:
        args += ["--data.num_workers", str(workers)]
    # the script's own arguments hidden from LightningCLI, which warns when it sees any beside args=
    with contextlib.redirect_stdout(io.StringIO()), mock.patch.object(sys, "argv", sys.argv[:1]):
        return CrossViTCLI(**cli_kwargs(), args=args, run=False)


class RepeatedBatch:
    """A loader that yields one collated batch ``length`` times (a fresh dict each time: the step
    widens its entries in place)."""

    def __init__(self, batch: dict, length: int):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return (dict(self.batch) for _ in range(self.length))


def time_demo(root: Path, run_dir: Path, steps: int, skip: int, workers: int | None,
              fixed: dict | None = None) -> list[float]:
    """Seconds between the ends of consecutive batches of the demo's ``Trainer.fit``, on its data
    loader or, given ``fixed``, on that one batch repeated."""
    cli = demo_cli(root, run_dir, steps + skip, workers)
    if fixed is not None:
        cli.datamodule.train_dataloader = lambda: RepeatedBatch(fixed, steps + skip)
    clock = BatchClock()
    cli.trainer.callbacks.append(clock)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return [b - a for a, b in zip(clock.ends, clock.ends[1:])][skip:]


class ModuleLoop:
    """The demo's LightningModule trained by hand: its losses, weights, scaling, optimiser and schedule."""

    def __init__(self, root: Path, run_dir: Path):
        cli = demo_cli(root, run_dir, 1, 0)
        self.module, hp = cli.model, cli.model.hparams
        self.batch = next(iter(cli.datamodule.train_dataloader()))
        self.module.loss_scale.set_initial(measure_initial_losses(self.module, self.batch))
        self.optimizer = build_optimizer(self.module, hp.optimizer, hp.lr, hp.weight_decay, tuple(hp.betas))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(10**6, 100))
        self.precision = cli.trainer.precision_plugin
        self.module.train()

    def step(self) -> float:
        start = time.perf_counter()
        batch = self.module.widen(dict(self.batch))
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.forward_context():
            outputs = self.module(batch["image"])
        sum(self.module.weighted_losses(outputs, batch).values()).backward()
        self.optimizer.step()
        self.schedule.step()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="a 96x192 synthetic-scene cache (default: a small one in a temporary folder)")
    parser.add_argument("--steps", type=int, default=40, help="counted training steps per way per round")
    parser.add_argument("--skip", type=int, default=5, help="first steps of each way not counted")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[None],
                        help="loader workers of the demo, one demo way per value, side by side (default: its config's)")
    args = parser.parse_args()
    keep_host_memory()  # as fit and the demo do
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "synth96"
        if not args.root:
            write_synth(root, train=400, val=8, test=8, height=96, width=192, workers=2)
        bench = prepare(Case(QUICK_START, (96, 192), resolve("cpu").precision, 8))
        module = ModuleLoop(root, Path(tmp) / "module")
        demos = {w: "demo" if len(args.workers) == 1 else f"demo ({w} workers)" for w in args.workers}
        rates: dict[str, list[float]] = {"bench": [], "module": [], "fit_fixed": [], **{d: [] for d in demos.values()}}
        for i in range(args.rounds):
            bench.model.train()
            for _ in range(args.skip):
                bench.train_step()
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                bench.train_step()
                times.append(time.perf_counter() - start)
            rates["bench"].append(8 / statistics.median(times))
            for _ in range(args.skip):
                module.step()
            rates["module"].append(8 / statistics.median([module.step() for _ in range(args.steps)]))
            fixed = time_demo(root, Path(tmp) / f"fixed{i}", args.steps, args.skip, 0, module.batch)
            rates["fit_fixed"].append(8 / statistics.median(fixed))
            order = list(demos.items())
            for workers, way in order[i % len(order):] + order[:i % len(order)]:  # rotated each round
                demo = time_demo(root, Path(tmp) / f"demo{i}_{workers}", args.steps, args.skip, workers)
                rates[way].append(8 / statistics.median(demo))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} img/s" for k, v in rates.items()), flush=True)
    print("\n| loop | train img/s (median) | of the bench's |\n|---|---:|---:|")
    for name, values in rates.items():
        share = statistics.median(v / b for v, b in zip(values, rates["bench"]))
        print(f"| {name} | {statistics.median(values):.2f} | {100 * share:.0f} % |")
    print(f"\n{QUICK_START} at 96x192, batch 8, {torch.get_num_threads()} threads, {args.steps} steps per way "
          f"per round after {args.skip}, {args.rounds} rounds; load {load_average()}")


if __name__ == "__main__":
    main()
