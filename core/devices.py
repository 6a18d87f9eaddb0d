"""Device and precision: chosen once, used by every model."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

from .errors import InputError

DEVICE_CHOICES = ("auto", "cuda", "mps", "xpu", "cpu")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Pick CUDA, then Apple MPS, then the CPU, unless a device is forced.

    ``device`` may be ``"auto"``/``None`` or anything ``torch.device`` accepts
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"device {device!r} is not a valid torch device: {error}") from None
    if resolved.type not in ACCELERATORS and resolved.type != "cpu":
        raise InputError(f"device {device!r}: {resolved.type} is not supported; use auto, cpu, cuda, mps or xpu")
    if resolved.type in ACCELERATORS:
        name, available, count = ACCELERATORS[resolved.type]
        if not available():
            raise InputError(f"device {device!r} was requested but {name} is not available on this machine")
        if resolved.index is not None and resolved.index >= count():
            raise InputError(f"device {device!r}: this machine has {count()} {name} device(s), numbered from 0")
    return resolved


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _xpu_available() -> bool:
    return hasattr(torch, "xpu") and torch.xpu.is_available()


# Each accelerator: the name users know it by, whether this machine has it, how many there are.
ACCELERATORS = {
    "cuda": ("CUDA", torch.cuda.is_available, torch.cuda.device_count),
    "mps": ("Apple MPS", _mps_available, lambda: 1),
    "xpu": ("Intel XPU", _xpu_available, lambda: torch.xpu.device_count() if _xpu_available() else 0),
}


@contextlib.contextmanager
def inference_context(device: torch.device) -> Iterator[None]:
    """No gradients; bfloat16 autocast on CUDA (as SAM 2 and the reference do), float32 elsewhere."""
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


@functools.cache
def _torchvision_processor_class() -> type:
    try:
        from transformers.image_processing_backends import TorchvisionBackend
    except ImportError:  # transformers 4: the fast processors' base class
        from transformers.image_processing_utils_fast import BaseImageProcessorFast as TorchvisionBackend
    return TorchvisionBackend


def processor_device(image_processor, device: torch.device) -> dict:
    """``{"device": device}`` for a torchvision-based image processor, else ``{}``.

    transformers' torchvision image processors (``TorchvisionBackend`` in
    transformers 5, the "fast" processors before it) take ``device=`` and then
    resize and normalise there: on a GPU only the ``uint8`` image crosses the
    bus and the host's cores stay free. PIL-based processors do not take it.
    """
    return {"device": device} if isinstance(image_processor, _torchvision_processor_class()) else {}
