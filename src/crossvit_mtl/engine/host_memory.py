"""Keep freed host memory for the next training step instead of handing it back to the kernel.

glibc serves every block above its mmap threshold (32 MB at most) with fresh pages from the
kernel and unmaps it on free, so on CPU each large activation and gradient is page-faulted and
zeroed again at every step. With mmap off (``M_MMAP_MAX`` 0) such blocks come from the heap,
and a high ``M_TRIM_THRESHOLD`` keeps the freed heap for reuse: faster training for a little more
peak memory, as ``crossvit-mtl bench --allocators kept system`` measures (docs/speed.md). Nothing
here runs at import:
the commands that train or predict (fit, the demo, predict; bench per case) apply it and say so,
and leave the allocator alone when asked to (``--system_malloc``, one spelling in every command,
or ``CROSSVIT_MTL_SYSTEM_MALLOC=1``).
"""
from __future__ import annotations

import ctypes
import os
import sys

OPT_OUT = "CROSSVIT_MTL_SYSTEM_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
_TRIM_THRESHOLD = 2**31 - 1  # the largest an int holds


def keep_host_memory() -> bool:
    """Apply the setting to this process (and processes it forks); True if it took effect.

    A no-op returning False off Linux/glibc, or when ``CROSSVIT_MTL_SYSTEM_MALLOC`` is set to
    anything but 0. Call it early: blocks already mapped are not affected.
    """
    if os.environ.get(OPT_OUT, "0") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1


def apply_host_memory(system_malloc: bool = False) -> str:
    """Keep host memory unless ``system_malloc``; the line a command prints to say what it did."""
    if system_malloc:
        return "host memory: glibc's allocator as it is (--system_malloc)"
    if keep_host_memory():
        return "host memory: freed blocks kept for reuse (glibc: mmap off, no trimming; --system_malloc to opt out)"
    return f"host memory: the allocator as it is ({OPT_OUT} is set, or the C library is not glibc)"
