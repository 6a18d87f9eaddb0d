"""CVAT tracker "SAM 2": follow shapes from frame to frame.

Request ``{"image", "shapes": [[x1, y1, x2, y2] | polygon...], "states": [state | null...]}``;
response ``{"shapes": [...], "states": [...]}`` in the same order. SAM 2's memory
of each object stays in this process, keyed by the small random token that is
the object's state; CVAT carries the token. An unknown or expired token (the
function restarted, or the LRU evicted it) re-initialises from the shape.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import DEFAULT_SEGMENTER
from ..core.models import load_tracker
from ..core.tracker import TrackingSession
from .cache import ExpiringLRU
from .protocol import RequestError, env, mask_bounds, polygon_points, request_image, serve


@dataclass
class ObjectMemory:
    session: TrackingSession
    frames: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_shape(shape: Any, index: int, width: int, height: int) -> np.ndarray:
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) < 4
        or len(shape) % 2
        or not all(isinstance(v, (int, float)) for v in shape)
    ):
        raise RequestError(f"'shapes[{index}]' must be [x1, y1, x2, y2] or a flat polygon, got {shape!r}")
    xs, ys = np.array(shape[0::2], float), np.array(shape[1::2], float)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
    if box[2] < 0 or box[3] < 0 or box[0] > width or box[1] > height or box[2] <= box[0] or box[3] <= box[1]:
        raise RequestError(f"'shapes[{index}]' {list(shape)} does not cover any of the {width}x{height} image")
    box[[0, 2]] = box[[0, 2]].clip(0, width)
    box[[1, 3]] = box[[1, 3]].clip(0, height)
    return box


def init_context(context) -> None:
    context.user_data.tracker = load_tracker(
        env("GSAM2_TRACKER", DEFAULT_SEGMENTER), device=env("GSAM2_DEVICE", "auto")
    )
    context.user_data.memories = ExpiringLRU(
        max_items=int(env("GSAM2_TRACKER_MAX_OBJECTS", "64")), ttl_seconds=float(env("GSAM2_TRACKER_TTL", "3600"))
    )
    context.logger.info("SAM 2 tracker ready")


def track(context, body: dict[str, Any]) -> dict[str, Any]:
    image = request_image(body)
    height, width = image.shape[:2]
    shapes, states = body.get("shapes"), body.get("states")
    if not isinstance(shapes, list) or not shapes:
        raise RequestError("'shapes' must be a non-empty list of shapes")
    if not isinstance(states, list) or len(states) != len(shapes):
        raise RequestError(f"'states' must be a list as long as 'shapes' ({len(shapes)})")
    boxes = [parse_shape(shape, i, width, height) for i, shape in enumerate(shapes)]
    memories: ExpiringLRU = context.user_data.memories
    out_shapes, out_states = [], []
    for shape, box, state in zip(shapes, boxes, states):
        memory = memories.get(state) if isinstance(state, str) else None
        if memory is None:  # new, unknown, forged or expired: start from the shape on this frame
            state = secrets.token_hex(16)
            memory = ObjectMemory(context.user_data.tracker.start())
            memory.session.prompt(0, [1], boxes=box[None])
        with memory.lock:
            tracked = memory.session.step(memory.frames, image)
            memory.frames += 1
        memories.put(state, memory)
        mask = tracked.masks[0] if len(tracked.object_ids) else np.zeros(image.shape[:2], bool)
        bounds = mask_bounds(mask)
        if bounds is None:
            out_shapes.append(list(shape))  # lost this frame: keep the last known shape
        elif len(shape) == 4:
            x1, y1, x2, y2 = bounds
            out_shapes.append([float(x1), float(y1), float(x2 + 1), float(y2 + 1)])
        else:
            out_shapes.append(polygon_points(mask) or list(shape))
        out_states.append(state)
    return {"shapes": out_shapes, "states": out_states}


def handler(context, event):
    return serve(context, event, track)
