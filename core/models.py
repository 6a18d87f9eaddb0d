"""Loading models by backend + checkpoint, once per process.

A FiftyOne operator run, a CVAT request or a CLI call asks for a model by its
checkpoint (a Hugging Face hub id or a local folder); the first ask loads it,
every later ask gets the same object back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from .detectors import Detector, GroundingDinoDetector
from .devices import resolve_device
from .errors import InputError, ModelLoadError
from .segmenter import Sam2ImageSegmenter
from .tracker import Sam2VideoTracker

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
DEFAULT_SEGMENTER = "facebook/sam2.1-hiera-tiny"

DEFAULT_TRACKER = "facebook/sam2.1-hiera-tiny"

#: SAM 2.1 image checkpoints on the hub, by the size names the reference uses.
SAM2_CHECKPOINTS = {
    "tiny": "facebook/sam2.1-hiera-tiny",
    "small": "facebook/sam2.1-hiera-small",
    "base-plus": "facebook/sam2.1-hiera-base-plus",
    "large": "facebook/sam2.1-hiera-large",
}

DETECTOR_BACKENDS: dict[str, Callable[[str, torch.device], Detector]] = {
    "grounding-dino": GroundingDinoDetector.from_pretrained,
}

_cache: dict[tuple[str, str, str], Any] = {}
_cache_lock = threading.Lock()


def _load_once(kind: str, backend: str, checkpoint: str, device: torch.device, loader: Callable) -> Any:
    key = (f"{kind}:{backend}", checkpoint, str(device))
    with _cache_lock:  # one load even when several request threads ask at once
        if key not in _cache:
            try:
                _cache[key] = loader(checkpoint, device)
            except (OSError, ValueError, KeyError) as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ModelLoadError(f"could not load {kind} checkpoint {checkpoint!r}: {first_line}") from error
        return _cache[key]


def load_detector(
    checkpoint: str = DEFAULT_DETECTOR,
    backend: str = "grounding-dino",
    device: str | torch.device | None = "auto",
) -> Detector:
    """The detector for ``backend`` + ``checkpoint`` on ``device``, loaded on first use."""
    if backend not in DETECTOR_BACKENDS:
        raise InputError(f"detector backend {backend!r} is unknown; choose one of {sorted(DETECTOR_BACKENDS)}")
    return _load_once("detector", backend, checkpoint, resolve_device(device), DETECTOR_BACKENDS[backend])


def load_segmenter(
    checkpoint: str = DEFAULT_SEGMENTER,
    device: str | torch.device | None = "auto",
) -> Sam2ImageSegmenter:
    """The SAM 2 image segmenter for ``checkpoint`` (a hub id, local folder, or a size name such as ``"large"``)."""
    checkpoint = SAM2_CHECKPOINTS.get(checkpoint, checkpoint)
    return _load_once("segmenter", "sam2", checkpoint, resolve_device(device), Sam2ImageSegmenter.from_pretrained)


def load_tracker(
    checkpoint: str = DEFAULT_TRACKER,
    device: str | torch.device | None = "auto",
) -> Sam2VideoTracker:
    """The SAM 2 video tracker for ``checkpoint`` (hub id, local folder or size name).

    The hub's SAM 2.1 checkpoints load both as image and as video models.
    """
    checkpoint = SAM2_CHECKPOINTS.get(checkpoint, checkpoint)
    return _load_once("tracker", "sam2-video", checkpoint, resolve_device(device), Sam2VideoTracker.from_pretrained)


def clear_model_cache() -> None:
    """Forget every loaded model (frees memory; the next ask reloads)."""
    with _cache_lock:
        _cache.clear()
