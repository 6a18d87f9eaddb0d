"""Device and precision: chosen once, used by every model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import InputError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


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
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was requested but CUDA is not available on this machine")
    return resolved


@contextlib.contextmanager
def inference_context(device: torch.device) -> Iterator[None]:
    """No gradients; bfloat16 autocast on CUDA (as SAM 2 and the reference do), float32 elsewhere."""
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield
