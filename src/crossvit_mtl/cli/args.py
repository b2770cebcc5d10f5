"""Argument types shared by sub-commands."""
from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """'128x256' -> (128, 256)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 128x256), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def checked_size(model, size: tuple[int, int]) -> tuple[int, int]:
    """``--size`` as the model's encoder accepts it, else a one-line ``UserError``."""
    from crossvit_mtl.cli import UserError

    try:
        model.encoder.check_input_size(*size)
    except ValueError as err:
        raise UserError(f"--size: {err}") from None
    return size
