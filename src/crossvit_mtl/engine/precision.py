"""Where a network runs and in what precision: one decision (:func:`resolve`) for every command,
with its reason, so that a run's speed and numerics can be explained from its output.

The rule: bf16 autocast where the hardware multiplies bf16 natively (CPUs with AVX512-BF16 or
AMX, GPUs from compute capability 8.0), fp16 autocast on GPUs with fp16 but no bf16 tensor cores
(compute capability 7.x), fp32 elsewhere. A precision asked for by name is used as asked or
refused with the reason, never swapped for another.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: what ``--precision`` accepts outside training: the device's default, or one by name
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
#: what ``--device`` accepts
DEVICES = "auto, cpu, cuda or cuda:N"
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Lightning's name of each precision: fp32 weights, products autocast
LIGHTNING_PRECISIONS = {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}


def cpu_has_bf16_matmul() -> bool:
    """AMX tiles or AVX512-BF16: bf16 matrix products run at several times the fp32 rate.

    torch's private CPU-feature checks, called directly: should an upgrade remove them, this fails
    instead of quietly choosing fp32 (``tests/test_private_hooks.py`` checks they are there)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


@dataclass(frozen=True)
class Placement:
    """A device, the precision the network runs in there (``bf16``, ``fp16`` or ``fp32``) and why."""

    device: torch.device
    precision: str
    reason: str
    name: str = "CPU"  # the GPU's name on CUDA

    def autocast(self) -> torch.autocast:
        """Autocast to the precision on the device; a disabled one (plain fp32) for ``fp32``."""
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def __str__(self) -> str:
        how = "fp32" if self.precision == "fp32" else f"{self.precision} autocast"
        return f"{self.device} ({self.name}), {how}: {self.reason}"


def _device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind, colon, index = device.partition(":")
    if device == "cpu":
        return torch.device("cpu")
    if kind != "cuda" or (colon and not index.isdigit()):
        raise ValueError(f"--device {device}: must be {DEVICES}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device available (torch {torch.__version__}, "
                         f"CUDA build: {torch.version.cuda or 'no'})")
    count = torch.cuda.device_count()
    number = int(index) if colon else torch.cuda.current_device()
    if number >= count:
        raise ValueError(f"--device {device}: no such device; this machine has {count} CUDA "
                         f"device{'s' if count > 1 else ''} (cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return torch.device("cuda", number)


def resolve(device: str = "auto", precision: str = "auto") -> Placement:
    """The device (``auto`` takes CUDA when there is one) and the precision to run in there.

    Raises ``ValueError`` naming the argument for a device that is not there, or a precision the
    device cannot run: fp16 autocast is for GPUs, bf16 on a GPU needs compute capability 8.0.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: must be one of {', '.join(PRECISIONS)}")
    where = _device(device)
    if where.type == "cpu":
        native = cpu_has_bf16_matmul()
        if precision == "fp16":
            raise ValueError("--precision fp16: fp16 autocast is for CUDA devices; on the CPU use bf16 or fp32")
        if precision != "auto":
            return Placement(where, precision, "asked for by --precision")
        if native:
            return Placement(where, "bf16", "the CPU multiplies bf16 natively (AVX512-BF16 or AMX)")
        return Placement(where, "fp32", "the CPU has no native bf16 matrix products (no AVX512-BF16 or AMX)")
    major, minor = torch.cuda.get_device_capability(where)
    name, capability = torch.cuda.get_device_name(where), f"compute capability {major}.{minor}"
    if precision == "bf16" and major < 8:
        raise ValueError(f"--precision bf16: {name} ({capability}) has no bf16 tensor cores (8.0 or newer); "
                         "use fp16 or fp32")
    if precision != "auto":
        return Placement(where, precision, "asked for by --precision", name)
    if major >= 8:
        return Placement(where, "bf16", f"bf16 tensor cores ({capability})", name)
    if major >= 7:
        return Placement(where, "fp16", f"fp16 but no bf16 tensor cores ({capability} < 8.0)", name)
    return Placement(where, "fp32", f"no fp16 or bf16 tensor cores ({capability} < 7.0)", name)


def training_precision(accelerator: str = "auto") -> tuple[str, str]:
    """Lightning's precision string for training on ``accelerator`` by :func:`resolve`'s rule
    (``bf16-mixed``, ``16-mixed`` or ``32-true``) and the reason for it."""
    on_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    placement = resolve("cuda" if on_cuda else "cpu")
    return LIGHTNING_PRECISIONS[placement.precision], placement.reason


def auto_precision(accelerator: str = "auto") -> str:
    """The precision string of :func:`training_precision` alone."""
    return training_precision(accelerator)[0]
