"""Speed of the segmentation and multi-task zoo against SegFormer-B0: the `crossvit-mtl bench`
command as a script (same options), for running from a source checkout.

    python benchmarks/bench_models.py [--quick] [--models ...] [--sizes 128x256 ...] [--out DIR]
"""
from __future__ import annotations

import sys

from crossvit_mtl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
