"""The synthetic scenes are pinned bit for bit: cached data sets, published figures and the multi-task
sweep were rendered by this renderer (``RENDERER`` in data/synth/dataset.py), so a change that
alters any sample, even in the last bit of one float, must fail here rather than pass unnoticed.

The digests were computed with the renderer as it stood before its speed-ups; a deliberate change
of the scenes raises ``RENDERER`` and re-pins them. They hold for numpy's x86-64-v3 (AVX2) and v4
(AVX-512) kernels alike (checked with ``NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"``)
and not for its baseline SSE ones, whose float32 functions round differently: elsewhere (another
architecture, numpy dispatching to neither) the test is skipped, not failed.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from numpy._core import _multiarray_umath  # what numpy dispatches to (np.show_runtime prints it)

from crossvit_mtl.data.synth import layout_cues, render_sample, scene_for
from crossvit_mtl.data.synth.dataset import RENDERER

#: (seed, index, height, width) -> sha256 of the sample. Seed 0's indices 4-7 are one of each class,
#: three of them drawn again because the first draw hid its class; 1000003 and 2000006 are the
#: val and test streams of seed 0; 64x128 is the size the class check renders at.
PINNED = {
    (0, 4, 48, 96): "6b8e5ee7b7c2a0ffa2d9e6a8bc99926fa2a26a0ac63e2629e6f6a8f0f2ecc346",
    (0, 5, 48, 96): "61e78170124d0ec62974578971914ab37a2f4e3cb2b29bbe433573e73273a49e",
    (0, 6, 48, 96): "5811d3c1763ca57664628aa86ebc257ad1f2a44904b1816a622dd41806d8e312",
    (0, 7, 48, 96): "877fa589beed9cc012c571d81e9ca1cfc0a2a757a91def0e633836152293f652",
    (5, 13, 48, 96): "2595c84c9cd587ade341c467881d998870c320554d153243e6143f5377d4d81d",
    (1000003, 2, 40, 80): "f884d3b05e39652a4caf8b44e600ce41c7dfdb118db8f9af1d7ddaced3d022a1",
    (2000006, 21, 32, 64): "293ebb75f38ffb71f046abd3c405b1dc2596aebcd8fd8c67a9472a0be4bb43af",
    (0, 9, 64, 128): "247e2caf8d4f6db3926fcf019a9e9356e41f2f73b2a0027dfa6ed301fc4c7485",
}

#: Pixels of each cue at 64x128 in the scenes of seed 0's indices 4-7 (straight, curve, T, crossroads).
PINNED_CUES = {
    4: {"left": 0, "right": 0, "beyond": 10, "closing": 0},
    5: {"left": 67, "right": 0, "beyond": 0, "closing": 1475},
    6: {"left": 136, "right": 121, "beyond": 0, "closing": 799},
    7: {"left": 106, "right": 104, "beyond": 25, "closing": 0},
}


pytestmark = pytest.mark.skipif(not _multiarray_umath.__cpu_features__.get("X86_V3", False),
                                reason="the digests are pinned for numpy's x86-64-v3/v4 kernels, not dispatched here")


def sample_digest(sample: dict) -> str:
    """sha256 over every target's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(sample):
        value = np.asarray(sample[key])
        h.update(key.encode())
        h.update(str(value.dtype).encode())
        h.update(str(value.shape).encode())
        h.update(value.tobytes())
    return h.hexdigest()


def test_the_pins_belong_to_this_renderer_version():
    assert RENDERER == 2


@pytest.mark.parametrize("seed,index,height,width", list(PINNED))
def test_samples_are_bit_identical_to_the_pinned_ones(seed, index, height, width):
    sample = render_sample(seed, index, height, width)
    assert sample_digest(sample) == PINNED[seed, index, height, width]


def test_digest_sees_a_change_in_the_last_bit():
    sample = render_sample(0, 4, 48, 96)
    depth = sample["depth"].copy()
    depth.view(np.uint32)[10, 10] ^= 1
    assert sample_digest({**sample, "depth": depth}) != sample_digest(sample)


@pytest.mark.parametrize("index", list(PINNED_CUES))
def test_class_cues_are_pinned(index):
    scene, _ = scene_for(0, index)
    cues = layout_cues(scene, 64, 128)
    assert {name: share * 64 * 128 for name, share in cues.items()} == PINNED_CUES[index]
