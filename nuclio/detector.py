"""CVAT detector "Grounded SAM 2": the spec's label names are the text prompt.

Request ``{"image": base64, "threshold"?: float}``; response: one item per
object, ``{"label", "type": "mask", "points": polygon, "mask": crop + box,
"confidence": str, "attributes": []}`` (``type: rectangle`` and box points
when deployed with ``GSAM2_RECTANGLES_ONLY=1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core import DEFAULT_BOX_THRESHOLD, DEFAULT_DETECTOR, DEFAULT_SEGMENTER, DEFAULT_TEXT_THRESHOLD
from ..core import PromptError, ground_and_segment, load_detector, load_segmenter
from ..core.detections import class_names
from ..core.detectors.sliced import DEFAULT_SLICE_OVERLAP
from .protocol import RequestError, cvat_detector_mask, env, function_spec, polygon_points, request_image, serve


def phrase_groups(detector, phrases: list[str]) -> list[list[str]]:
    """Split a long vocabulary into prompts that each fit the text encoder.

    A prompt-free detector (Florence-2 ``object_detection``) runs once; its
    findings are kept where their names are labels of the vocabulary.
    """
    if not detector.requires_prompt:
        return [list(phrases)]
    groups: list[list[str]] = [[]]
    for phrase in phrases:
        try:
            detector.validate_phrases(groups[-1] + [phrase])
            groups[-1].append(phrase)
        except PromptError:
            if not groups[-1]:
                raise
            groups.append([phrase])
    return groups


def vocabulary_detections(
    image, groups: list[list[str]], detector, segmenter, box_threshold: float, text_threshold: float
) -> Iterator[tuple[str, float, np.ndarray, np.ndarray]]:
    """``(phrase, confidence, xyxy, mask)`` of every object found, one prompt group after another."""
    for phrases in groups:
        [detections] = ground_and_segment(
            [image],
            phrases,
            detector=detector,
            segmenter=segmenter,
            box_threshold=box_threshold,
            text_threshold=text_threshold,
        )
        for i, phrase in enumerate(class_names(detections)):
            yield phrase, float(detections.confidence[i]), detections.xyxy[i], detections.mask[i]


def detector_from_env(device: str):
    """The detector the function's environment names.

    ``GSAM2_DETECTOR`` takes any detector name (``owlv2``, ``florence2``,
    ``dinox`` with ``DDS_API_TOKEN`` set, ...); ``GSAM2_TASK`` is Florence-2's
    task; ``GSAM2_SLICE_SIZE`` (pixels) turns on sliced inference.
    """
    slice_size = int(env("GSAM2_SLICE_SIZE", "0") or 0)
    return load_detector(
        env("GSAM2_DETECTOR", DEFAULT_DETECTOR),
        device=device,
        task=env("GSAM2_TASK", "") or None,
        slice_size=slice_size if slice_size > 0 else None,
        slice_overlap=int(env("GSAM2_SLICE_OVERLAP", str(DEFAULT_SLICE_OVERLAP))),
    )


def init_context(context) -> None:
    labels = [label["name"] for label in function_spec()]
    device = env("GSAM2_DEVICE", "auto")
    detector = detector_from_env(device)
    context.user_data.detector = detector
    context.user_data.segmenter = (
        None if detector.produces_masks else load_segmenter(env("GSAM2_SEGMENTER", DEFAULT_SEGMENTER), device=device)
    )
    # CVAT matches labels by name; the prompt uses them lower-cased, so keep the way back.
    context.user_data.label_for_phrase = {name.strip().lower(): name for name in labels}
    context.user_data.groups = phrase_groups(detector, list(context.user_data.label_for_phrase))
    context.user_data.rectangles_only = env("GSAM2_RECTANGLES_ONLY", "0").lower() in ("1", "true", "yes")
    context.user_data.text_threshold = float(env("GSAM2_TEXT_THRESHOLD", str(DEFAULT_TEXT_THRESHOLD)))
    context.logger.info(
        f"Grounded SAM 2 detector ready: {len(labels)} labels in {len(context.user_data.groups)} prompt(s)"
    )


def detect(context, body: dict[str, Any]) -> list[dict[str, Any]]:
    image = request_image(body)
    threshold = body.get("threshold", DEFAULT_BOX_THRESHOLD)
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise RequestError(f"'threshold' must be a number between 0 and 1, got {threshold!r}")
    data = context.user_data
    results = []
    found = vocabulary_detections(
        image, data.groups, data.detector, data.segmenter, float(threshold), data.text_threshold
    )
    for phrase, confidence, xyxy, mask in found:
        if phrase not in data.label_for_phrase:
            continue  # a prompt-free detector named something outside the function's labels
        item = {"label": data.label_for_phrase[phrase], "confidence": f"{confidence:.4f}", "attributes": []}
        encoded = None if data.rectangles_only else cvat_detector_mask(mask)
        if encoded is None:
            item.update(type="rectangle", points=[round(float(v), 2) for v in xyxy])
        else:
            item.update(type="mask", points=polygon_points(mask), mask=encoded)
        results.append(item)
    return results


def handler(context, event):
    return serve(context, event, detect)
