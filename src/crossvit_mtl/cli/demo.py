"""`crossvit-mtl demo`: the main job of the quick start."""
from __future__ import annotations

import argparse
import time

import torch

from crossvit_mtl.cli.models import format_table, zoo_rows


def run(args: argparse.Namespace) -> int:
    size = (128, 256)
    print(format_table(zoo_rows(size), size))
    from crossvit_mtl.models import create_model, list_models

    for name in list_models():
        model = create_model(name).eval()
        start = time.perf_counter()
        with torch.no_grad():
            out = model(torch.randn(2, 3, *size))
        shapes = {k: tuple(v.shape) for k, v in out.items()} if isinstance(out, dict) else tuple(out.shape)
        print(f"{name}: {shapes} in {time.perf_counter() - start:.2f} s")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the quick-start job")
    p.set_defaults(func=run)
