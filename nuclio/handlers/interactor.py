"""CVAT interactor "SAM 2" (interactor protocol version 2), with an optional text prompt.

What CVAT sends (cvat/apps/lambda_manager/views.py, ``LambdaFunction.invoke``, 2.40-2.73):
``{"image", "pos_points": [[x, y]...], "neg_points": [...], "obj_bbox": [[x1, y1], [x2, y2]]}``,
where the UI always sends ``obj_bbox`` and sends ``[]`` when no box was drawn
(``null`` from API clients means the same), and CVAT 2.73 adds ``text_prompts``
when the request carries them. The image may be a region-of-interest crop;
CVAT then moves the points into the crop and the returned mask back.

The answer is ``{"mask": rows of 0/255}`` covering the whole image CVAT sent.
A full-image mask is the one form that survives CVAT's region-of-interest path
(``ROIHelper.translate_interactor_response`` pastes ``mask`` into the crop's
place and does not move ``bounds`` or ``points``); the UI finds the polygon
from the mask itself when no ``points`` come back (tools-control.tsx,
``receivePointsFromMask``). That mask is about 3 bytes of JSON per pixel: one over
the function's answer limit (``GSAM2_MAX_RESPONSE_MB``) is a 413 before it is built.

A click may land up to half a pixel outside the image (the canvas accepts
``Math.round(x) >= 0``, cvat-canvas interactionHandler.ts): such points are
moved onto the nearest pixel; points farther out are a 400.

When SAM 2's chosen mask is empty, its other candidate masks are tried (best
predicted IoU first); when every candidate is empty the answer is a 422 (CVAT
shows the UI an "Interaction error" notification, not the old shape).

The image embedding is cached for a few minutes, so the second and later
clicks on a frame only run SAM 2's light decoder.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np

from ...core.prompts import PromptError, parse_prompt
from .cache import ExpiringLRU
from .protocol import (
    RequestError,
    check_limits,
    env,
    max_response_bytes,
    request_image,
    run_from_env,
    serve,
    too_large_answer,
)

# How far outside the image a click may land and still be taken (CVAT rounds to the nearest pixel).
CLICK_TOLERANCE = 0.5


def parse_points(body: dict[str, Any], name: str, width: int, height: int) -> list[list[float]]:
    """``[[x, y], ...]`` inside the image; points within half a pixel of it are clamped onto it."""
    points = body.get(name) or []
    if not isinstance(points, list):
        raise RequestError(f"'{name}' must be a list of [x, y] points")
    parsed = []
    for index, point in enumerate(points):
        if not (
            isinstance(point, (list, tuple))
            and len(point) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)
        ):
            raise RequestError(f"'{name}[{index}]' must be [x, y], got {point!r}")
        x, y = point
        if not (-CLICK_TOLERANCE <= x < width and -CLICK_TOLERANCE <= y < height):
            raise RequestError(f"'{name}[{index}]' = ({x}, {y}) lies outside the {width}x{height} image")
        parsed.append([float(min(max(x, 0), width - 1)), float(min(max(y, 0), height - 1))])
    return parsed


def parse_box(body: dict[str, Any], width: int, height: int) -> np.ndarray | None:
    """``obj_bbox`` as pixel ``xyxy`` clipped to the image; ``None`` for no box (``[]`` or ``null``)."""
    box = body.get("obj_bbox")
    if box is None or (isinstance(box, list) and not box):
        return None
    try:
        (x1, y1), (x2, y2) = box
        values = np.array([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestError(f"'obj_bbox' must be [[x1, y1], [x2, y2]] or [], got {box!r}") from None
    if not np.isfinite(values).all():
        raise RequestError(f"'obj_bbox' must hold finite numbers, got {box!r}")
    values[[0, 2]] = values[[0, 2]].clip(0, width)
    values[[1, 3]] = values[[1, 3]].clip(0, height)
    if values[2] <= values[0] or values[3] <= values[1]:
        raise RequestError(f"'obj_bbox' {box!r} is empty inside the {width}x{height} image")
    return values


def parse_text_prompts(body: dict[str, Any]) -> list[str]:
    """``text_prompts`` (a string or a list of strings) as the phrases to ground; ``[]`` when absent."""
    prompts = body.get("text_prompts")
    if prompts is None or prompts == [] or prompts == "":
        return []
    strings = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(strings, list) or not all(isinstance(p, str) for p in strings):
        raise RequestError(f"'text_prompts' must be a string or a list of strings, got {prompts!r}")
    try:
        return parse_prompt(prompts)
    except PromptError as error:
        raise RequestError(f"'text_prompts': {error}") from None


def init_context(context) -> None:
    """Load SAM 2's image model of the environment's run (``GSAM2_SEGMENTER``, ``GSAM2_DEVICE``);
    its detector (``GSAM2_DETECTOR``, thresholds) grounds text prompts, loaded on the first one."""
    check_limits()
    data = context.user_data
    data.run = run_from_env()
    data.segmenter = data.run.image_segmenter
    data.embeddings = ExpiringLRU(
        max_items=int(env("GSAM2_EMBEDDING_CACHE", "8")), ttl_seconds=float(env("GSAM2_EMBEDDING_TTL", "300"))
    )
    data.detector = None  # the grounding model of text prompts: loaded on the first one
    data.detector_lock = threading.Lock()
    context.logger.info("SAM 2 interactor ready")


def grounding_detector(context):
    data = context.user_data
    with data.detector_lock:
        if data.detector is None:
            data.detector = data.run.detector
            context.logger.info("text prompts: grounding model loaded")
    return data.detector


def grounded_box(
    context, image: np.ndarray, phrases: list[str], positive: list[list[float]], negative: list[list[float]]
) -> np.ndarray | None:
    """The best-scoring box the detector finds for the phrases that agrees with the clicks.

    A box agrees when it holds every positive click and no negative one; with no
    box agreeing, the clicks alone decide (``None``).
    """
    detector = grounding_detector(context)
    spec = context.user_data.run.spec
    [detections] = detector.detect([image], phrases, box_threshold=spec.box_threshold, text_threshold=spec.text_threshold)

    def holds(box: np.ndarray, point: list[float]) -> bool:
        return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]

    order = np.argsort(-np.asarray(detections.confidence, dtype=float)) if len(detections) else []
    for index in order:
        box = detections.xyxy[index]
        if all(holds(box, p) for p in positive) and not any(holds(box, p) for p in negative):
            return np.asarray(box, dtype=np.float32)
    return None


def interact(context, body: dict[str, Any]) -> dict[str, Any]:
    image = request_image(body)
    height, width = image.shape[:2]
    positive = parse_points(body, "pos_points", width, height)
    negative = parse_points(body, "neg_points", width, height)
    box = parse_box(body, width, height)
    phrases = parse_text_prompts(body)
    if phrases and box is None:
        box = grounded_box(context, image, phrases, positive, negative)
        if box is None and not positive:
            raise RequestError(f"nothing matching {', '.join(phrases)!r} was found in the image", status=422)
    if not positive and box is None:
        raise RequestError("give at least one positive point, an 'obj_bbox' or 'text_prompts'")
    segmenter, cache = context.user_data.segmenter, context.user_data.embeddings
    key = hashlib.sha1(body["image"].encode("ascii")).hexdigest()
    embedding = cache.get(key)
    if embedding is None:
        [embedding] = segmenter.embed([image])
        cache.put(key, embedding)
    points = np.array(positive + negative, dtype=np.float32).reshape(-1, 2)
    labels = np.array([1] * len(positive) + [0] * len(negative), dtype=int)
    # SAM 2's single answer first; only when it is empty, its three alternatives (best predicted IoU first).
    for multimask in (False, True):
        masks, scores = segmenter.segment_prompt(embedding, points, labels, box, multimask=multimask)
        for index in np.argsort(-scores, kind="stable"):
            if masks[index].any():
                return mask_answer(masks[index])
    raise RequestError("SAM 2 found no object at these clicks; click inside the object or draw a box", status=422)


def mask_answer(mask: np.ndarray) -> dict[str, Any]:
    """``{"mask": rows of 0/255}``, refused (413) before it is built if its JSON would be over the limit.

    The answer holds every pixel of the image: ``json.dumps`` writes ``0, `` or
    ``255, `` for each, so about 3 bytes a pixel (30 MB at 10 MP), and the lists
    it is made from take 8 bytes a pixel more.
    """
    height, width = mask.shape
    size = 3 * height * width + 2 * int(np.count_nonzero(mask)) + 2 * height + 10
    if size > max_response_bytes():
        raise too_large_answer(size, f"the mask of this {width}x{height} image")
    return {"mask": (mask.astype(np.uint8) * 255).tolist()}


def handler(context, event):
    return serve(context, event, interact)
