"""CVAT interactor "SAM 2" (interactor protocol version 2).

Request ``{"image", "pos_points": [[x, y]...], "neg_points": [...], "obj_bbox": [[x1, y1], [x2, y2]] | null}``;
response ``{"mask": crop rows (0/255), "bounds": [x1, y1, x2, y2], "points": polygon}``.
The image embedding is cached for a few minutes, so the second and later clicks on a
frame only run SAM 2's light decoder.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..core import DEFAULT_SEGMENTER, load_segmenter
from .cache import ExpiringLRU
from .protocol import RequestError, env, mask_bounds, polygon_points, request_image, serve


def parse_points(body: dict[str, Any], name: str, width: int, height: int) -> list[list[float]]:
    points = body.get(name) or []
    if not isinstance(points, list):
        raise RequestError(f"'{name}' must be a list of [x, y] points")
    for index, point in enumerate(points):
        if not (
            isinstance(point, (list, tuple)) and len(point) == 2 and all(isinstance(v, (int, float)) for v in point)
        ):
            raise RequestError(f"'{name}[{index}]' must be [x, y], got {point!r}")
        x, y = point
        if not (0 <= x < width and 0 <= y < height):
            raise RequestError(f"'{name}[{index}]' = ({x}, {y}) lies outside the {width}x{height} image")
    return [[float(x), float(y)] for x, y in points]


def parse_box(body: dict[str, Any], width: int, height: int) -> np.ndarray | None:
    box = body.get("obj_bbox")
    if box is None:
        return None
    try:
        (x1, y1), (x2, y2) = box
        values = np.array([x1, y1, x2, y2], dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestError(f"'obj_bbox' must be [[x1, y1], [x2, y2]], got {box!r}") from None
    values[[0, 2]] = values[[0, 2]].clip(0, width)
    values[[1, 3]] = values[[1, 3]].clip(0, height)
    if values[2] <= values[0] or values[3] <= values[1]:
        raise RequestError(f"'obj_bbox' {box!r} is empty inside the {width}x{height} image")
    return values


def init_context(context) -> None:
    context.user_data.segmenter = load_segmenter(
        env("GSAM2_SEGMENTER", DEFAULT_SEGMENTER), device=env("GSAM2_DEVICE", "auto")
    )
    context.user_data.embeddings = ExpiringLRU(
        max_items=int(env("GSAM2_EMBEDDING_CACHE", "8")), ttl_seconds=float(env("GSAM2_EMBEDDING_TTL", "300"))
    )
    context.logger.info("SAM 2 interactor ready")


def interact(context, body: dict[str, Any]) -> dict[str, Any]:
    image = request_image(body)
    height, width = image.shape[:2]
    positive = parse_points(body, "pos_points", width, height)
    negative = parse_points(body, "neg_points", width, height)
    box = parse_box(body, width, height)
    if not positive and box is None:
        raise RequestError("give at least one positive point or an 'obj_bbox'")
    segmenter, cache = context.user_data.segmenter, context.user_data.embeddings
    key = hashlib.sha1(body["image"].encode("ascii")).hexdigest()
    embedding = cache.get(key)
    if embedding is None:
        [embedding] = segmenter.embed([image])
        cache.put(key, embedding)
    points = positive + negative
    labels = [1] * len(positive) + [0] * len(negative)
    if points:
        mask, _ = segmenter.segment_points(embedding, np.array(points), np.array(labels), box)
    else:
        masks, _ = segmenter.segment_boxes(embedding, box[None])
        mask = masks[0]
    bounds = mask_bounds(mask)
    if bounds is None:
        return {"mask": [], "bounds": [0, 0, 0, 0], "points": []}
    x1, y1, x2, y2 = bounds
    crop = (mask[y1 : y2 + 1, x1 : x2 + 1].astype(np.uint8) * 255).tolist()
    return {"mask": crop, "bounds": [x1, y1, x2, y2], "points": polygon_points(mask)}


def handler(context, event):
    return serve(context, event, interact)
