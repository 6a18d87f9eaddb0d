"""The interface every detector backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import supervision as sv

from ..errors import InputError
from ..prompts import parse_prompt

# The shorter side an image may be left with at the detector's input size: below it the
# image is a line, nothing can be found in it, and some processors fail on it.
MIN_RESIZED_SIDE = 8


@runtime_checkable
class Detector(Protocol):
    """Finds the objects that a list of phrases names, in a batch of images.

    ``detect`` returns one ``sv.Detections`` per image with ``xyxy`` in pixels
    of that image, ``confidence``, ``class_id`` and ``data["class_name"]``.

    * Prompted backends (``requires_prompt = True``) label every detection with
      one of ``phrases`` and set ``class_id`` to its index in ``phrases``.
    * Prompt-free backends (``requires_prompt = False``, e.g. Florence-2's
      ``<OD>`` task) get an empty ``phrases`` list and name what they found
      themselves; ``class_id`` then indexes the image's distinct class names in
      order of first appearance.
    * Backends with ``produces_masks = True`` (SAM 3) also fill ``mask``
      (``(n, H, W)`` bool); the pipelines then skip SAM 2 for those images.
      Everyone else leaves ``mask`` as ``None``: segmenting is SAM 2's job.
    """

    name: str
    requires_prompt: bool
    produces_masks: bool

    def validate_phrases(self, phrases: Sequence[str]) -> None:
        """Raise ``PromptError`` if the detector cannot take these phrases."""

    def detect(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        box_threshold: float,
        text_threshold: float,
    ) -> list[sv.Detections]:
        """Detect in a batch of RGB ``uint8`` images with one forward pass where the backend allows."""


def resized_side(height: int, width: int, scale_of) -> float:
    """The shorter side of a ``width`` x ``height`` image once resized by the detector (``scale_of(height, width)``)."""
    return min(height, width) * scale_of(height, width)


def check_resized_shapes(images: Sequence[np.ndarray], scale_of, detector: str) -> None:
    """Refuse, naming the image, any image whose shorter side ``scale_of(height, width)`` would shrink below
    :data:`MIN_RESIZED_SIDE` pixels at the detector's input size (a 20000x10 strip, say)."""
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        side = resized_side(height, width, scale_of)
        if side < MIN_RESIZED_SIDE:
            raise InputError(
                f"image {index + 1} ({width}x{height}) is too elongated for {detector}: at its input size it would be "
                f"{side:.1f} px across; crop it, or detect over tiles (sliced detection)"
            )


def detector_phrases(detector: Detector, prompt: str | Sequence[str] | None) -> list[str]:
    """The phrases ``detector`` is given for ``prompt``, checked against what it can take.

    Prompt-free detectors (Florence-2's ``object_detection``, ``dense_region_caption``
    and ``region_proposal`` tasks) name what they find themselves: they get no
    phrases and any prompt is ignored.

    Raises:
        PromptError: the prompt is empty or malformed for a prompted detector.
    """
    if not detector.requires_prompt:
        return []
    phrases = parse_prompt(prompt if prompt is not None else "")
    detector.validate_phrases(phrases)
    return phrases
