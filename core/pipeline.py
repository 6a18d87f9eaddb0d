"""Ground and segment: a text prompt and a batch of images in, masks out."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
from PIL import Image

from .detections import empty_detections
from .detectors import Detector
from .detectors.base import detector_phrases
from .errors import GroundedSam2Error
from .images import as_rgb_array
from .masks import PENDING_MASKS, PendingMasks
from .segmenter import Sam2ImageSegmenter
from .spec import DEFAULT_BOX_THRESHOLD, DEFAULT_TEXT_THRESHOLD

DEFAULT_BATCH_SIZE = 4


def default_batch_size(device) -> int:
    """Images per forward pass when none is given: 4 on CUDA, 1 elsewhere.

    bench/image_pipeline.py measured batching full-size Grounding DINO on a
    CPU at 0.66x the throughput of one image at a time, with 2.6x the memory.
    """
    return DEFAULT_BATCH_SIZE if getattr(device, "type", None) == "cuda" else 1


@dataclass
class PreparedBatch:
    """One batch's preprocessing for both models, done ahead of the accelerator (:func:`preparation_steps`).

    Either field may be a ``Future`` (the engine's prepare thread still making
    it): it is waited for only when the model needs it.
    """

    detector_inputs: Any | None  # the detector's processor output (detectors with a ``preprocess`` step)
    pixel_values: Any | None  # SAM 2's encoder input for every image of the batch


def preparation_steps(
    phrases: list[str], detector: Detector, segmenter: Sam2ImageSegmenter | None
) -> list[Callable[[Sequence[np.ndarray]], Any]]:
    """The processors' work on a batch, in the order the models need it: the detector's inputs, then SAM 2's.

    The engine runs the steps one batch ahead in its prepare thread
    (:func:`~.engine.run_pipelined`); ``PreparedBatch(*their futures)`` is what
    :func:`ground_and_segment` takes. Split in two, the detector can start on
    the first batch while SAM 2's input is still being made (bench/README.md).
    Each step gives ``None`` where its model has no separate preprocessing.
    """
    segments = segmenter is not None and not detector.produces_masks

    def detector_step(images: Sequence[np.ndarray]) -> Any | None:
        return detector.preprocess(images, phrases) if hasattr(detector, "preprocess") else None

    def segmenter_step(images: Sequence[np.ndarray]) -> Any | None:
        return segmenter.preprocess(images) if segments and hasattr(segmenter, "preprocess") else None

    return [detector_step, segmenter_step]


def _ready(value: Any) -> Any:
    """A prepared value, waited for if it is still being made."""
    return value.result() if isinstance(value, Future) else value


def ground_and_segment(
    images: Sequence[np.ndarray | Image.Image],
    prompt: str | Sequence[str] | None,
    detector: Detector,
    segmenter: Sam2ImageSegmenter | None = None,
    box_threshold: float = DEFAULT_BOX_THRESHOLD,
    text_threshold: float = DEFAULT_TEXT_THRESHOLD,
    batch_size: int | None = None,
    prepared: PreparedBatch | None = None,
    compact_masks: bool = False,
    defer_masks: bool = False,
) -> list[sv.Detections]:
    """Detect what ``prompt`` names in every image and segment each detection with SAM 2.

    Args:
        images: RGB arrays or PIL images (any mode; converted to RGB).
        prompt: ``"car. person. dog."`` or ``["car", "person", "dog"]``
            (ignored by prompt-free detectors, see :func:`detector_phrases`).
        detector: a loaded detector (models are loaded by name in :class:`~.run.Run`;
            :func:`gsam2.core.ground_and_segment` takes names too).
        segmenter: a loaded SAM 2 segmenter; ``None`` only for detectors that make
            their own masks (SAM 3).
        box_threshold: minimum detector score of a box.
        text_threshold: minimum score of the phrase a box is labelled with.
        batch_size: images per detector / image-encoder forward pass
            (default: :func:`default_batch_size` of the detector's device).
        prepared: the images' preprocessing, done ahead (:func:`preparation_steps`;
            the images are then one batch).
        compact_masks: carry SAM 2's masks as ``supervision.CompactMask`` (crops of
            each mask's support) instead of full frames: the same pixels, a
            fraction of the memory and work on large images. Read them with
            :mod:`.masks` (``coco_rle``, ``box_crop``, ``mask_crop``) or ``mask[i]``.
        defer_masks: leave SAM 2's masks to be made later, in another thread:
            ``mask`` is ``None`` until :func:`~.masks.finish_masks` turns the logits
            kept in ``metadata`` into a CompactMask. The model's thread then does
            not wait for the upsampling and the copy to the host (the engine's
            encode workers finish them). Detectors that make their own masks
            (SAM 3) are not affected.

    Returns:
        One ``sv.Detections`` per image: pixel ``xyxy``, full-frame bool ``mask``
        (or a CompactMask),
        ``confidence`` (the detector's score), ``class_id`` (index into the
        prompt's phrases), ``data["class_name"]`` and ``data["mask_score"]``
        (SAM 2's predicted IoU). An image with nothing found gets empty detections.
    """
    phrases = detector_phrases(detector, prompt)
    if batch_size is None:
        batch_size = default_batch_size(getattr(detector, "device", None))
    arrays = [as_rgb_array(image) for image in images]
    thresholds = (box_threshold, text_threshold)
    masks = {"compact_masks": compact_masks, "defer_masks": defer_masks}
    if prepared is not None:
        return _ground_and_segment_batch(arrays, phrases, detector, segmenter, thresholds, prepared, masks)
    results: list[sv.Detections] = []
    for batch in batched(arrays, batch_size):
        results.extend(_ground_and_segment_batch(batch, phrases, detector, segmenter, thresholds, None, masks))
    return results


def _ground_and_segment_batch(
    images: list[np.ndarray],
    phrases: list[str],
    detector: Detector,
    segmenter: Sam2ImageSegmenter | None,
    thresholds: tuple[float, float],
    prepared: PreparedBatch | None,
    masks: dict[str, bool],
) -> list[sv.Detections]:
    box_threshold, text_threshold = thresholds
    detector_inputs = _ready(prepared.detector_inputs) if prepared is not None else None
    if detector_inputs is not None:
        boxes_per_image = detector.detect(images, phrases, box_threshold, text_threshold, inputs=detector_inputs)
    else:
        boxes_per_image = detector.detect(images, phrases, box_threshold, text_threshold)
    if detector.produces_masks:  # SAM 3: masks come with the boxes, SAM 2 has nothing to add
        for detections in boxes_per_image:
            detections.data["mask_score"] = detections.confidence.astype(np.float32)
        return boxes_per_image
    pixel_values = _ready(prepared.pixel_values) if prepared is not None else None
    return segment_detections(images, boxes_per_image, segmenter, pixel_values, **masks)


def segment_detections(
    images: Sequence[np.ndarray],
    boxes_per_image: Sequence[sv.Detections],
    segmenter: Sam2ImageSegmenter,
    pixel_values=None,
    compact_masks: bool = False,
    defer_masks: bool = False,
) -> list[sv.Detections]:
    """Give every box a SAM 2 mask (``mask``) and SAM 2's predicted IoU (``data["mask_score"]``).

    The image encoder runs once over the images that have boxes, in one batch;
    each image's boxes go through the mask decoder in one call. With
    ``compact_masks``, masks are ``supervision.CompactMask`` crops; with
    ``defer_masks``, they are left for :func:`~.masks.finish_masks` (see
    :func:`ground_and_segment`).
    """
    found = [i for i, detections in enumerate(boxes_per_image) if len(detections)]
    found_images = [images[i] for i in found]
    if pixel_values is not None and found:  # preprocessed ahead (preparation_steps)
        # Index only when some images found nothing: a list index copies the whole batch (50 MB for 4 images
        # at 1024 px), which cost the model's thread ~20 ms per batch in bench/simulated_accelerator.py.
        if len(found) < len(images):
            pixel_values = pixel_values[found]
        embeddings = dict(zip(found, segmenter.embed(found_images, pixel_values=pixel_values)))
    else:
        embeddings = dict(zip(found, segmenter.embed(found_images)))
    results = []
    for index, (image, detections) in enumerate(zip(images, boxes_per_image)):
        if index not in embeddings:
            empty = empty_detections(*image.shape[:2])
            empty.data["mask_score"] = np.zeros((0,), dtype=np.float32)
            results.append(empty)
            continue
        masks, mask_scores = segmenter.segment_boxes(
            embeddings[index], detections.xyxy, compact=compact_masks, defer=defer_masks
        )
        if isinstance(masks, PendingMasks):  # defer_masks, with a segmenter that can defer
            detections.metadata[PENDING_MASKS] = masks
        else:
            detections.mask = masks
        detections.data["mask_score"] = mask_scores.astype(np.float32)
        results.append(detections)
    return results


def batched(items: Sequence, size: int) -> Iterator[list]:
    """Consecutive chunks of ``size`` items (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def label_isolating_failures(label_batch: Callable[[list], list], rows: list) -> list[tuple[Any, Any, str | None]]:
    """``(row, result, None)`` or ``(row, None, error message)`` for every row.

    The batch runs as one; if it fails, each row runs alone, so that one bad
    image or box is that sample's error and the others still get labels.
    """
    if not rows:
        return []
    try:
        return [(row, result, None) for row, result in zip(rows, label_batch(rows))]
    except Exception as error:  # noqa: BLE001 - isolated below; the run goes on
        if len(rows) == 1:
            return [(rows[0], None, failure_message(error))]
    outcomes = []
    for row in rows:
        try:
            [result] = label_batch([row])
            outcomes.append((row, result, None))
        except Exception as error:  # noqa: BLE001
            outcomes.append((row, None, failure_message(error)))
    return outcomes


def failure_message(error: Exception) -> str:
    """Our errors are one line already; anything else gets its type named."""
    return str(error) if isinstance(error, GroundedSam2Error) else f"{type(error).__name__}: {error}"
