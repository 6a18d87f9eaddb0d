"""Loading models by backend + checkpoint, once per process.

A FiftyOne operator run, a CVAT request or a CLI call asks for a model by its
checkpoint (a Hugging Face hub id or a local folder); the first ask loads it,
every later ask gets the same object back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .detectors import Detector, GroundingDinoDetector
from .detectors.sliced import DEFAULT_SLICE_OVERLAP, SlicedDetector
from .devices import resolve_device
from .errors import InputError, ModelLoadError
from .segmenter import Sam2ImageSegmenter
from .tracker import Sam2VideoTracker

from .spec import DEFAULT_DETECTOR, DEFAULT_SEGMENTER, DEFAULT_TRACKER

#: SAM 2.1 image checkpoints on the hub, by the size names the reference uses.
SAM2_CHECKPOINTS = {
    "tiny": "facebook/sam2.1-hiera-tiny",
    "small": "facebook/sam2.1-hiera-small",
    "base-plus": "facebook/sam2.1-hiera-base-plus",
    "large": "facebook/sam2.1-hiera-large",
}


@dataclass(frozen=True)
class DetectorBackend:
    """How to load one kind of detector.

    ``load_model`` does the slow part (weights) and is cached per process;
    ``make_detector`` wraps the loaded model with per-call options (Florence-2's
    task, the cloud API's token) and is cheap, so one model serves every task.
    """

    name: str
    default_checkpoint: str
    load_model: Callable[[str, torch.device], Any]
    summary: str
    make_detector: Callable[..., Detector] = field(default=lambda model: model)
    options: tuple[str, ...] = ()


def _grounding_dino(checkpoint: str, device: torch.device) -> Detector:
    return GroundingDinoDetector.from_pretrained(checkpoint, device)


def _mm_grounding_dino(checkpoint: str, device: torch.device) -> Detector:
    from .detectors.mm_grounding_dino import MMGroundingDinoDetector

    return MMGroundingDinoDetector.from_pretrained(checkpoint, device)


def _owlv2(checkpoint: str, device: torch.device) -> Detector:
    from .detectors.owlv2 import Owlv2Detector

    return Owlv2Detector.from_pretrained(checkpoint, device)


def _florence2(checkpoint: str, device: torch.device):
    from .detectors.florence2 import Florence2

    return Florence2.from_pretrained(checkpoint, device)


def _florence2_detector(florence2, task: str | None = None) -> Detector:
    from .detectors.florence2 import Florence2Detector

    return Florence2Detector(florence2, task or "object_detection")


def _sam3(checkpoint: str, device: torch.device) -> Detector:
    from .detectors.sam3 import Sam3Detector

    return Sam3Detector.from_pretrained(checkpoint, device)


def _cloud_model(model_name: str, device: torch.device) -> str:
    return model_name  # nothing to load: the model runs in the cloud


def _cloud_detector(model_name: str, api_token: str | None = None) -> Detector:
    from .detectors.dds_cloud import DdsCloudDetector

    return DdsCloudDetector(model_name, api_token=api_token)


def _groundingdino_original(checkpoint: str, device: torch.device) -> Detector:
    from .original_checkpoints import OriginalGroundingDinoDetector

    return OriginalGroundingDinoDetector.from_checkpoint(checkpoint, device)


DETECTOR_BACKENDS: dict[str, DetectorBackend] = {
    backend.name: backend
    for backend in (
        DetectorBackend(
            "grounding-dino",
            DEFAULT_DETECTOR,
            _grounding_dino,
            "Grounding DINO (transformers): the default open-vocabulary detector",
        ),
        DetectorBackend(
            "mm-grounding-dino",
            "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det",
            _mm_grounding_dino,
            "MM-Grounding-DINO (transformers): OpenMMLab's open re-training of Grounding DINO, better zero-shot",
        ),
        DetectorBackend(
            "florence2",
            "florence-community/Florence-2-large",
            _florence2,
            "Florence-2 (transformers): detection, dense captions, region proposals, phrase grounding, "
            "referring expressions; choose with task",
            make_detector=_florence2_detector,
            options=("task",),
        ),
        DetectorBackend(
            "owlv2",
            "google/owlv2-base-patch16-ensemble",
            _owlv2,
            "OWLv2 / OWL-ViT (transformers): fast, long class lists",
        ),
        DetectorBackend(
            "sam3",
            "facebook/sam3",
            _sam3,
            "SAM 3 (transformers): text straight to masks, no separate SAM 2 step",
        ),
        DetectorBackend(
            "dds-cloud",
            "DINO-X-1.0",
            _cloud_model,
            "DINO-X / Grounding DINO 1.5-1.6 Pro through the DeepDataSpace cloud API (needs DDS_API_TOKEN)",
            make_detector=_cloud_detector,
            options=("api_token",),
        ),
        DetectorBackend(
            "groundingdino-original",
            "groundingdino_swint_ogc.pth",
            _groundingdino_original,
            "a local original Grounding DINO .pth checkpoint (extra: groundingdino-original)",
        ),
    )
}

#: Short names for the cloud models, usable wherever a detector is named.
DETECTOR_ALIASES = {
    "dinox": "dds-cloud:DINO-X-1.0",
    "grounding-dino-1.5-pro": "dds-cloud:GroundingDino-1.5-Pro",
    "grounding-dino-1.6-pro": "dds-cloud:GroundingDino-1.6-Pro",
}

_cache: dict[tuple[str, str, str], Any] = {}
_cache_lock = threading.Lock()


def looks_like_local_path(checkpoint: str) -> bool:
    """A path, not a hub id (``owner/name`` has one slash and starts with neither ``/``, ``.`` nor ``~``)."""
    return checkpoint.startswith(("/", "./", "../", "~", ".\\")) or checkpoint.count("/") > 1 or "\\" in checkpoint


def _load_once(kind: str, backend: str, checkpoint: str, device: torch.device, loader: Callable) -> Any:
    if looks_like_local_path(checkpoint) and not Path(checkpoint).expanduser().exists():
        # Otherwise the hub client reports "Repo id must be in the form 'repo_name'...".
        raise ModelLoadError(f"{kind} checkpoint {checkpoint!r}: no such file or folder")
    key = (f"{kind}:{backend}", checkpoint, str(device))
    with _cache_lock:  # one load even when several request threads ask at once
        if key not in _cache:
            try:
                _cache[key] = loader(checkpoint, device)
            except (OSError, ValueError, KeyError) as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ModelLoadError(f"could not load {kind} checkpoint {checkpoint!r}: {first_line}") from error
        return _cache[key]


def parse_detector_spec(spec: str) -> tuple[str, str]:
    """``(backend, checkpoint)`` for a detector named the way users name it.

    * ``"florence2"``, ``"owlv2"``, ``"sam3"``: a backend with its default checkpoint;
    * ``"florence2:microsoft/Florence-2-base"``: a backend and a checkpoint;
    * ``"dinox"``, ``"grounding-dino-1.6-pro"``: cloud models (:data:`DETECTOR_ALIASES`);
    * ``"weights/groundingdino_swint_ogc.pth"``: an original Grounding DINO checkpoint;
    * anything else (``"IDEA-Research/grounding-dino-base"``, a local folder): Grounding DINO.
    """
    spec = spec.strip()
    spec = DETECTOR_ALIASES.get(spec.lower(), spec)
    backend, separator, checkpoint = spec.partition(":")
    if separator and backend.lower() in DETECTOR_BACKENDS:
        backend = backend.lower()
        return backend, checkpoint.strip() or DETECTOR_BACKENDS[backend].default_checkpoint
    if spec.lower() in DETECTOR_BACKENDS:
        return spec.lower(), DETECTOR_BACKENDS[spec.lower()].default_checkpoint
    if spec.lower().endswith(".pth"):
        return "groundingdino-original", spec
    return "grounding-dino", spec


def detector_choices() -> list[str]:
    """Every name :func:`load_detector` takes without a checkpoint, for help texts and drop-downs."""
    return list(DETECTOR_BACKENDS) + list(DETECTOR_ALIASES)


def load_detector(
    checkpoint: str = DEFAULT_DETECTOR,
    backend: str | None = None,
    device: str | torch.device | None = "auto",
    *,
    slice_size: int | tuple[int, int] | None = None,
    slice_overlap: int | tuple[int, int] | None = None,
    **options: Any,
) -> Detector:
    """The detector that ``checkpoint`` names, on ``device``; its weights load on first use.

    Args:
        checkpoint: a detector name as :func:`parse_detector_spec` reads it
            (``"florence2"``, ``"owlv2:google/owlv2-large-patch14-ensemble"``,
            ``"dinox"``, a hub id or local folder of Grounding DINO, ...).
        backend: force a backend (then ``checkpoint`` is only the checkpoint).
        device: ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
        slice_size: detect over tiles of this many pixels (an int or ``(width, height)``)
            and merge them (SAHI, :class:`~.detectors.sliced.SlicedDetector`), for
            large images with small objects; ``None`` detects on whole images.
        slice_overlap: overlap between tiles in pixels (with ``slice_size``); by default
            128 or a quarter of the tile, whichever is smaller (so small tiles work alone).
        options: backend options: ``task`` (Florence-2), ``api_token`` (cloud;
            by default read from ``DDS_API_TOKEN``). ``None`` values are ignored.

    Raises:
        InputError: unknown backend, or an option the backend does not take.
        ModelLoadError: the checkpoint cannot be loaded.
    """
    if backend is None:
        backend, checkpoint = parse_detector_spec(checkpoint)
    if backend not in DETECTOR_BACKENDS:
        raise InputError(f"detector backend {backend!r} is unknown; choose one of {sorted(DETECTOR_BACKENDS)}")
    spec = DETECTOR_BACKENDS[backend]
    options = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise InputError(f"detector {backend!r} does not take {', '.join(unknown)}")
    model = _load_once("detector", backend, checkpoint, resolve_device(device), spec.load_model)
    detector = spec.make_detector(model, **options)
    if slice_size is not None:
        tiles = _pair(slice_size)
        if slice_overlap is None:
            slice_overlap = tuple(min(DEFAULT_SLICE_OVERLAP, side // 4) for side in tiles)
        detector = SlicedDetector(detector, tiles, _pair(slice_overlap))
    return detector


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    width, height = value
    return int(width), int(height)


def is_original_sam2_checkpoint(checkpoint: str) -> bool:
    """Whether ``checkpoint`` names a released SAM 2 ``.pt`` file (served by the ``sam2`` package)."""
    return checkpoint.strip().lower().endswith(".pt")


def _edgetam_video(checkpoint: str, device: torch.device):
    from .edgetam_video import EdgeTamVideoTracker

    return EdgeTamVideoTracker.from_pretrained(checkpoint, device)


def _original_sam2(checkpoint: str, device: torch.device):
    from .original_checkpoints import OriginalSam2Segmenter

    return OriginalSam2Segmenter.from_checkpoint(checkpoint, device)


def load_segmenter(
    checkpoint: str = DEFAULT_SEGMENTER,
    device: str | torch.device | None = "auto",
) -> Sam2ImageSegmenter:
    """The SAM 2 image segmenter for ``checkpoint``.

    ``checkpoint`` is a hub id, a local folder, a size name such as ``"large"``,
    or an original ``.pt`` file such as ``sam2.1_hiera_large.pt`` (extra
    ``sam2-original``; its config is read from the file name or from a ``.yaml``
    beside it). Both kinds have the same interface.
    """
    checkpoint = SAM2_CHECKPOINTS.get(checkpoint, checkpoint)
    if is_original_sam2_checkpoint(checkpoint):
        return _load_once("segmenter", "sam2-original", checkpoint, resolve_device(device), _original_sam2)
    return _load_once("segmenter", "sam2", checkpoint, resolve_device(device), Sam2ImageSegmenter.from_pretrained)


#: ``"sam3"`` or ``"sam3:CHECKPOINT"`` names SAM 3 as the tracker (:func:`load_sam3_tracker`).
SAM3_TRACKER_PREFIX = "sam3"


def parse_sam3_tracker_spec(spec: str) -> str | None:
    """The SAM 3 video checkpoint that ``spec`` names (``"sam3"``, ``"sam3:CHECKPOINT"``), or ``None``."""
    name, _, checkpoint = spec.strip().partition(":")
    if name.lower() != SAM3_TRACKER_PREFIX:
        return None
    # facebook/sam3 holds both the image detector and the video model.
    return checkpoint.strip() or DETECTOR_BACKENDS["sam3"].default_checkpoint


def load_sam3_tracker(
    checkpoint: str = "sam3",
    device: str | torch.device | None = "auto",
):
    """SAM 3's video model, which finds and follows what a text prompt names by itself.

    ``checkpoint`` is ``"sam3"`` (``facebook/sam3``), ``"sam3:CHECKPOINT"`` or a
    hub id / local folder of a SAM 3 video checkpoint. See
    :meth:`~.sam3_video.Sam3VideoTracker.track`.
    """
    from .sam3_video import Sam3VideoTracker

    checkpoint = parse_sam3_tracker_spec(checkpoint) or checkpoint
    return _load_once("tracker", "sam3-video", checkpoint, resolve_device(device), Sam3VideoTracker.from_pretrained)


@dataclass(frozen=True)
class TrackerBackend:
    """How to load one kind of video tracker that follows the boxes and masks it is given (SAM 2's interface:
    :class:`~.tracker.Sam2VideoTracker`). SAM 3, which finds objects from text by itself, is :func:`load_sam3_tracker`."""

    name: str
    default_checkpoint: str
    load_model: Callable[[str, torch.device], Any]
    summary: str


TRACKER_BACKENDS: dict[str, TrackerBackend] = {
    backend.name: backend
    for backend in (
        TrackerBackend(
            "sam2",
            DEFAULT_TRACKER,
            Sam2VideoTracker.from_pretrained,
            "SAM 2 / 2.1 video (transformers): the default; a hub id, a local folder or a size name",
        ),
        TrackerBackend(
            "edgetam",
            "yonigozlan/EdgeTAM-hf",
            _edgetam_video,
            "EdgeTAM video (transformers): SAM 2's on-device variant (published 150.9 FPS on an A100, SAM 2.1-T 91.2)",
        ),
    )
}


def parse_tracker_spec(spec: str) -> tuple[str, str]:
    """``(backend, checkpoint)`` for a box-following tracker: ``"BACKEND[:CHECKPOINT]"``, a size name, a hub id."""
    spec = spec.strip()
    backend, separator, checkpoint = spec.partition(":")
    if backend.lower() in TRACKER_BACKENDS and (separator or spec.lower() == backend.lower()):
        backend = backend.lower()
        return backend, checkpoint.strip() or TRACKER_BACKENDS[backend].default_checkpoint
    return "sam2", SAM2_CHECKPOINTS.get(spec, spec)


def tracker_choices() -> list[str]:
    """Every tracker name taken without a checkpoint, for help texts and drop-downs (SAM 3 included)."""
    return list(TRACKER_BACKENDS) + [SAM3_TRACKER_PREFIX, *SAM2_CHECKPOINTS]


def load_tracker(
    checkpoint: str = DEFAULT_TRACKER,
    device: str | torch.device | None = "auto",
) -> Sam2VideoTracker:
    """The video tracker that follows given boxes and masks, for ``checkpoint``.

    ``checkpoint``: a SAM 2 hub id, local folder or size name (the hub's SAM 2.1
    checkpoints load both as image and as video models), or ``BACKEND[:CHECKPOINT]``
    of :data:`TRACKER_BACKENDS`.
    """
    if parse_sam3_tracker_spec(checkpoint) is not None:
        raise ModelLoadError(
            f"tracker {checkpoint!r} is SAM 3, which finds and follows what a text prompt names by itself; "
            f"following given boxes or shapes needs a tracker such as {DEFAULT_TRACKER!r}"
        )
    backend, checkpoint = parse_tracker_spec(checkpoint)
    if backend != "sam2":
        loader = TRACKER_BACKENDS[backend].load_model
        return _load_once("tracker", backend, checkpoint, resolve_device(device), loader)
    if is_original_sam2_checkpoint(checkpoint):
        # The sam2 package's video predictor wants the whole video as a JPEG folder up front;
        # tracking streams frames through transformers' Sam2VideoModel instead.
        raise ModelLoadError(
            f"original SAM 2 checkpoint {checkpoint!r} serves images only; video tracking needs a transformers "
            f"checkpoint: a hub id such as {DEFAULT_TRACKER!r}, a local folder, or one of {', '.join(SAM2_CHECKPOINTS)}"
        )
    return _load_once("tracker", "sam2-video", checkpoint, resolve_device(device), Sam2VideoTracker.from_pretrained)


def clear_model_cache() -> None:
    """Forget every loaded model (frees memory; the next ask reloads)."""
    with _cache_lock:
        _cache.clear()
