"""Auto-labelling without a prompt: Florence-2 captions each image, grounds the caption's phrases, SAM 2 segments.

This is the reference project's "caption -> phrase grounding -> SAM 2"
pipeline: useful to bootstrap labels for a dataset whose classes are not known
yet, or to see what a model notices in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import supervision as sv
from PIL import Image

from .detectors.florence2 import CAPTION_TASKS, Florence2Detector, task_token
from .images import as_rgb_array
from .pipeline import batched, default_batch_size, segment_detections
from .segmenter import Sam2ImageSegmenter

DEFAULT_CAPTION_TASK = "more_detailed_caption"


@dataclass
class CaptionedDetections:
    """One image's result: the caption Florence-2 wrote and the objects grounded from it."""

    caption: str
    detections: sv.Detections


def auto_label(
    images: Sequence[np.ndarray | Image.Image],
    florence2: Florence2Detector,
    segmenter: Sam2ImageSegmenter,
    caption_task: str = DEFAULT_CAPTION_TASK,
    batch_size: int | None = None,
    compact_masks: bool = False,
) -> list[CaptionedDetections]:
    """Caption every image, ground the caption's phrases, and segment each grounded region.

    Args:
        images: RGB arrays or PIL images (any mode; converted to RGB).
        florence2: a loaded Florence-2 detector (``Run(RunSpec.build(detector="florence2",
            caption_task=...))`` loads one; see :meth:`~.run.Run.auto_label`).
        segmenter: a loaded SAM 2 segmenter.
        caption_task: ``caption``, ``detailed_caption`` or ``more_detailed_caption``
            (longer captions name more objects, and take longer).
        batch_size: images per forward pass (default: 4 on CUDA, 1 elsewhere).
        compact_masks: masks as ``supervision.CompactMask`` crops (see :func:`~.pipeline.ground_and_segment`).

    Returns:
        One :class:`CaptionedDetections` per image; detections are labelled with the
        grounded phrase (``"a black cat"``), have SAM 2 masks, and confidence 1.0
        (Florence-2 gives no scores).
    """
    task_token(caption_task, CAPTION_TASKS)  # an unknown caption task fails before any model loads
    if not isinstance(florence2, Florence2Detector):
        raise TypeError(f"auto_label needs a Florence-2 detector, got {type(florence2).__name__}")
    if batch_size is None:
        batch_size = default_batch_size(florence2.device)
    results: list[CaptionedDetections] = []
    for batch in batched([as_rgb_array(image) for image in images], batch_size):
        captions = florence2.florence2.caption(batch, caption_task)
        grounded = florence2.detect_with_caption(batch, captions)
        detections = segment_detections(batch, grounded, segmenter, compact_masks=compact_masks)
        results.extend(CaptionedDetections(caption, found) for caption, found in zip(captions, detections))
    return results
