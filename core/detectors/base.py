"""The interface every detector backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import supervision as sv


@runtime_checkable
class Detector(Protocol):
    """Finds the objects that a list of phrases names, in a batch of images.

    ``detect`` returns one ``sv.Detections`` per image with ``xyxy`` in pixels
    of that image, ``confidence``, ``class_id`` (an index into ``phrases``) and
    ``data["class_name"]`` (the phrase itself). No masks: segmenting is SAM 2's job.
    """

    name: str

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
