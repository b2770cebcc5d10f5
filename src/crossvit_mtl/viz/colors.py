"""Turning predictions into pictures: palettes for labels, colour maps for depth, RGB normals."""
from __future__ import annotations

import numpy as np

from crossvit_mtl.data.common import IGNORE_INDEX


def colorize_labels(labels: np.ndarray, palette) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 in the data set's palette; ignored pixels black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    table[IGNORE_INDEX] = 0
    return table[np.asarray(labels).astype(np.int64).clip(0, 255)]


def colorize_depth(depth: np.ndarray, vmax: float | None = None, cmap: str = "magma_r") -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 with a perceptual colour map; invalid (<= 0) black."""
    from matplotlib import colormaps

    depth = np.asarray(depth, dtype=np.float32)
    valid = depth > 0
    if vmax is None:
        vmax = float(np.percentile(depth[valid], 99)) if valid.any() else 1.0
    rgb = colormaps[cmap](np.clip(depth / max(vmax, 1e-6), 0, 1))[..., :3]
    rgb = (rgb * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) unit normals -> RGB = (n + 1) / 2; invalid (zero) black."""
    n = np.asarray(normals, dtype=np.float32)
    if n.shape[0] == 3 and n.ndim == 3 and n.shape[-1] != 3:
        n = n.transpose(1, 2, 0)
    rgb = ((n + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    rgb[np.abs(n).sum(-1) == 0] = 0
    return rgb


def denormalize(image: np.ndarray, mean, std) -> np.ndarray:
    """(3, H, W) normalised image -> (H, W, 3) uint8."""
    img = np.asarray(image, dtype=np.float32).transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return (img.clip(0, 1) * 255).round().astype(np.uint8)
