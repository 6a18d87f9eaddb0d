"""CVAT detector "Grounded SAM 2": the spec's label names are the text prompt.

Request ``{"image": base64, "threshold"?: float}``; response: one item per
object, shaped as its label's declared ``type`` in the spec (CVAT's
``labels_compatible`` maps by that type, cvat/apps/lambda_manager/views.py):

- ``mask``: ``{"label", "type": "mask", "mask": crop + box, "points": polygon,
  "confidence": str, "attributes": []}``; ``points`` is left out when the mask
  has no polygon of 3 or more vertices, so that CVAT keeps it a mask even with
  "convert masks to polygons" (it converts only items that carry ``points``);
- ``rectangle``: ``{"type": "rectangle", "points": [x1, y1, x2, y2]}``.

An object whose SAM 2 mask comes back empty is dropped from mask labels (a
rectangle there would be stored as a rectangle in a mask label). A mask that does
not fit in what is left of the answer's size limit (``GSAM2_MAX_RESPONSE_MB``) is
sent as ``{"type": "polygon", "points"}`` instead (see :func:`cvat_item`).

``threshold`` is a fraction (0.35); CVAT's "threshold" field also takes a
percentage (35), read as 0.35.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...core import PromptError
from ...core.detections import class_names
from ...core.run import Run
from ...core.masks import mask_crop
from ...core.prompts import label_phrase
from ...core.spec import DEFAULT_BOX_THRESHOLD
from .protocol import (
    AnswerBudget,
    RequestError,
    check_limits,
    cvat_detector_mask,
    function_spec,
    mask_bounds,
    polygon_points,
    request_image,
    run_from_env,
    serve,
)

# The label types the detector can answer with (CVAT's ShapeType values).
LABEL_TYPES = ("mask", "rectangle")


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
    image, groups: list[list[str]], run: Run
) -> Iterator[tuple[str, float, np.ndarray, np.ndarray, tuple[int, int]]]:
    """``(phrase, confidence, xyxy, mask crop, (x, y) of the crop)`` of every object found, group after group.

    ``run`` labels the image with its spec's thresholds, once per group of
    phrases. SAM 2's masks come as crops of where each can be (``compact_masks``):
    CVAT's mask and polygon are made from them without full frames of the image's size.
    """
    for phrases in groups:
        [detections] = run.label_images([image], prompt=phrases, compact_masks=True)
        for i, phrase in enumerate(class_names(detections)):
            crop, x0, y0 = mask_crop(detections.mask, i)
            yield phrase, float(detections.confidence[i]), detections.xyxy[i], crop, (x0, y0)


def with_box_threshold(run: Run, detector, segmenter, box_threshold: float) -> Run:
    """``run`` at another box threshold (a request's), with the models it already holds."""
    spec = run.spec if box_threshold == run.spec.box_threshold else run.spec.replace(box_threshold=box_threshold)
    return Run(spec, detector=detector, segmenter=segmenter)


def label_types(spec: list[dict[str, Any]]) -> dict[str, str]:
    """``{label name: the type it answers with}``, after checking that every label can be told apart.

    A label's phrase is its name as :func:`label_phrase` reads it (case, repeated
    spaces, end periods, Unicode forms ignored): the prompt is built from these
    phrases and the detector's phrases are mapped back through them. Two labels
    with the same phrase (``Car`` and ``car.``) could never both be returned, and a
    label with no letter or digit names nothing, so both are refused.
    """
    types, seen = {}, {}
    for label in spec:
        name, kind = label["name"], label.get("type", "mask")
        phrase = label_phrase(name)
        if not any(character.isalnum() for character in phrase):
            raise ValueError(f"label {name!r} has no letter or digit to prompt the detector with; rename it")
        if phrase in seen:
            raise ValueError(
                f"labels {seen[phrase]!r} and {name!r} both read as the phrase {phrase!r} "
                "(case, spaces and end periods do not count); rename one of them"
            )
        if kind not in LABEL_TYPES:
            raise ValueError(f"label {name!r} has type {kind!r}; the detector answers with {' or '.join(LABEL_TYPES)}")
        seen[phrase], types[name] = name, kind
    return types


def init_context(context) -> None:
    """Load the run the environment describes (``GSAM2_DETECTOR``, ``GSAM2_TASK``, ``GSAM2_SLICE_SIZE``,
    ``GSAM2_SLICE_OVERLAP``, ``GSAM2_SEGMENTER``, ``GSAM2_DEVICE``, the thresholds: :class:`~gsam2.core.spec.RunSpec`);
    the function's labels are its prompt."""
    check_limits()
    spec = function_spec()
    data = context.user_data
    data.label_type = label_types(spec)
    data.run = run_from_env()
    data.detector = data.run.detector
    data.segmenter = data.run.segmenter
    # CVAT matches labels by name; the prompt uses their phrases, so keep the way back.
    data.label_for_phrase = {label_phrase(name): name for name in data.label_type}
    data.groups = phrase_groups(data.detector, list(data.label_for_phrase))
    context.logger.info(f"Grounded SAM 2 detector ready: {len(spec)} labels in {len(data.groups)} prompt(s)")


def request_threshold(body: dict[str, Any], default: float = DEFAULT_BOX_THRESHOLD) -> float:
    """The box threshold as a fraction; CVAT's UI field may hold a percentage (35 -> 0.35)."""
    threshold = body.get("threshold", default)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 100:
        raise RequestError(f"'threshold' must be a fraction (0-1) or a percentage (0-100), got {threshold!r}")
    return float(threshold) / 100 if threshold > 1 else float(threshold)


# JSON bytes of an item besides its "mask" and "points" (label, type, confidence, attributes, keys).
ITEM_OVERHEAD = 200


def cvat_item(
    label: str,
    kind: str,
    confidence: float,
    xyxy: np.ndarray,
    mask: np.ndarray,
    offset: tuple[int, int] = (0, 0),
    budget: AnswerBudget | None = None,
) -> dict[str, Any] | None:
    """One detection as CVAT's detector item of the label's type, or ``None`` if it has no pixels.

    ``mask``: the object's mask, or a crop of it whose top-left pixel is at ``offset`` (x, y).

    CVAT's ``mask`` is one number per pixel of the object's box (about 3 bytes of
    JSON each): a large object on a large image is megabytes. With a ``budget``, a
    mask that does not fit in what is left of the answer is sent as its polygon
    (``type: polygon``: CVAT stores it as such, mask and polygon labels being
    compatible, ``labels_compatible`` in cvat/apps/lambda_manager/views.py); an
    object whose polygon does not fit either makes the request a 413.
    """
    item = {"label": label, "confidence": f"{confidence:.4f}", "attributes": []}
    if kind == "rectangle":
        if budget is not None and not budget.take(ITEM_OVERHEAD):
            raise budget.refusal(ITEM_OVERHEAD, "the list of objects")
        return {**item, "type": "rectangle", "points": [round(float(v), 2) for v in xyxy]}
    bounds = mask_bounds(mask, offset)
    if bounds is None:
        return None
    points = polygon_points(mask, offset)
    points_size = ITEM_OVERHEAD + len(json.dumps(points))
    xtl, ytl, xbr, ybr = bounds
    # json.dumps of n small integers: n digits and n - 1 ", " separators; the last four are the box.
    mask_size = 3 * (xbr - xtl + 1) * (ybr - ytl + 1) + 4 * 8
    if budget is None or budget.take(points_size + mask_size):
        item.update(type="mask", mask=cvat_detector_mask(mask, offset))
        if points:
            item["points"] = points
        return item
    if points and budget.take(points_size):
        return {**item, "type": "polygon", "points": points}
    raise budget.refusal(points_size, "the list of objects, even with polygons for the largest masks,")


def detect(context, body: dict[str, Any]) -> list[dict[str, Any]]:
    image = request_image(body)
    data = context.user_data
    threshold = request_threshold(body, data.run.spec.box_threshold)
    results = []
    budget = AnswerBudget()
    # data.detector and data.segmenter are the run's models (or what a test put there).
    run = with_box_threshold(data.run, data.detector, data.segmenter, threshold)
    found = vocabulary_detections(image, data.groups, run)
    for phrase, confidence, xyxy, mask, offset in found:
        # A prompted detector answers with our phrases; a prompt-free one names what it finds in its own spelling.
        label = data.label_for_phrase.get(label_phrase(phrase))
        if label is None:
            continue  # a prompt-free detector named something outside the function's labels
        if (item := cvat_item(label, data.label_type[label], confidence, xyxy, mask, offset, budget)) is not None:
            results.append(item)
    return results


def handler(context, event):
    return serve(context, event, detect)
