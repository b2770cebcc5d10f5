"""Two revisions of the package side by side in one process: a preset's training step and batch-1
forward timed in alternation, and its outputs compared on the same weights.

Each revision's ``src/crossvit_mtl`` is taken from git (``git archive``; ``.`` is the working
tree) and imported under a name of its own, so both live in one process; the network of revision
A is built (seeded) and its state dict loaded, strictly, into revision B's, which checks that the
parameter names and shapes did not change. Outputs in eval mode are compared in fp32 (a pure
refactor must agree to float tolerance), and each revision's bf16 outputs with A's fp32 ones.
Then the two take turns: a training step each (the bench's step: forward, the tasks' losses,
backward, each revision's own ``build_optimizer``), then a few batch-1 forwards each, the order
swapped every round; the speed-ups are medians of the per-round ratios B over A.

    python benchmarks/ab_revisions.py --a main --b . [--models crossvit_seg_small ...] [--rounds 15]
"""
from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "crossvit_mtl"


def import_revision(rev: str, into: Path, tag: str):
    """The package at git revision ``rev`` (``.``: the working tree), imported as ``crossvit_mtl_<tag>``."""
    name = f"{PACKAGE}_{tag}"
    target = into / name
    if rev == ".":
        files = {p.relative_to(REPO / "src" / PACKAGE): p.read_bytes()
                 for p in (REPO / "src" / PACKAGE).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    else:
        blob = subprocess.run(["git", "-C", str(REPO), "archive", rev, f"src/{PACKAGE}"], check=True,
                              capture_output=True).stdout
        files = {}
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    files[Path(member.name).relative_to(f"src/{PACKAGE}")] = tar.extractfile(member).read()
    pattern = re.compile(rb"\b" + PACKAGE.encode() + rb"\b(?=[.\s\"'])")
    for relative, data in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pattern.sub(name.encode(), data) if relative.suffix == ".py" else data)
    if str(into) not in sys.path:
        sys.path.insert(0, str(into))
    return importlib.import_module(name)


class Side:
    """One revision's network, optimiser, batch and timed calls."""

    def __init__(self, package, spec: str, size, batch_size: int, state=None):
        bench = importlib.import_module(f"{package.__name__}.bench")
        optim = importlib.import_module(f"{package.__name__}.engine.optim")
        tasks = importlib.import_module(f"{package.__name__}.tasks")
        precision = importlib.import_module(f"{package.__name__}.engine.precision")
        torch.manual_seed(0)
        self.model = bench.build_model(spec, size)
        if state is not None:
            self.model.load_state_dict(state, strict=True)
        self.optimizer = optim.build_optimizer(self.model, "adamw", 1e-3, 0.05)
        self.images, self.targets = bench.synthetic_batch(self.model, size, batch_size)
        self.losses = {t: tasks.get_task(t).build_loss() for t in self.targets}
        self.placement = precision.resolve("cpu", "auto")
        self.train_s: list[float] = []
        self.infer_s: list[float] = []

    def outputs(self, x: torch.Tensor, autocast: bool) -> dict[str, torch.Tensor]:
        self.model.eval()
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            return {k: v.float() for k, v in self.model(x).items()}

    def train(self) -> None:
        self.model.train()
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with self.placement.autocast():
            outputs = self.model(self.images)
        sum(self.losses[t](outputs[t], self.targets[t]) for t in self.losses).backward()
        self.optimizer.step()
        self.train_s.append(time.perf_counter() - start)

    def infer(self, runs: int) -> None:
        self.model.eval()
        single = self.images[:1]
        start = time.perf_counter()
        for _ in range(runs):
            with torch.inference_mode(), self.placement.autocast():
                self.model(single)
        self.infer_s.append((time.perf_counter() - start) / runs)


def parse_spec(text: str):
    spec, _, size = text.partition("@")
    return spec, tuple(int(v) for v in size.split("x")) if size else (128, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default="main", help="git revision of the baseline (default main)")
    parser.add_argument("--b", default=".", help="git revision compared with it (default: the working tree)")
    parser.add_argument("--models", nargs="+", default=["crossvit_seg_small"],
                        help="bench model specs, name:key=value,...@HxW (default size 128x256)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--latency-runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        a_pkg = import_revision(args.a, Path(tmp), "a")
        b_pkg = import_revision(args.b, Path(tmp), "b")
        for text in args.models:
            spec, size = parse_spec(text)
            a = Side(a_pkg, spec, size, args.batch_size)
            b = Side(b_pkg, spec, size, args.batch_size, state=a.model.state_dict())
            x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
            def error(mine, reference):
                return ", ".join(f"{t} {(mine[t] - ref).abs().max().item() / max(ref.abs().max().item(), 1e-12):.2e}"
                                 for t, ref in reference.items())

            exact = a.outputs(x, False)
            print(f"{text}: max |B - A| / max |A| in fp32: {error(b.outputs(x, False), exact)}; "
                  f"max |bf16 - fp32 A| / max |fp32 A|: A {error(a.outputs(x, True), exact)}, "
                  f"B {error(b.outputs(x, True), exact)}")
            for side in (a, b):  # warm-up
                side.train()
                side.train()
                side.infer(2)
                side.train_s.clear()
                side.infer_s.clear()
            for i in range(args.rounds):
                for side in ((a, b) if i % 2 == 0 else (b, a)):
                    side.train()
                for side in ((a, b) if i % 2 == 0 else (b, a)):
                    side.infer(args.latency_runs)
            train = statistics.median(x / y for x, y in zip(a.train_s, b.train_s))
            infer = statistics.median(x / y for x, y in zip(a.infer_s, b.infer_s))
            print(f"{text}: B ({args.b}) over A ({args.a}), median of {args.rounds} rounds: training step "
                  f"{train:.3f}x faster (A {1e3 * statistics.median(a.train_s):.0f} ms, B "
                  f"{1e3 * statistics.median(b.train_s):.0f} ms), batch-1 forward {infer:.3f}x faster "
                  f"(A {1e3 * statistics.median(a.infer_s):.1f} ms, B {1e3 * statistics.median(b.infer_s):.1f} ms); "
                  f"{a.placement.precision}, batch {args.batch_size}, {torch.get_num_threads()} threads", flush=True)


if __name__ == "__main__":
    main()
