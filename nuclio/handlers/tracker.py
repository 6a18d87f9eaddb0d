"""CVAT tracker "SAM 2": follow rectangles and polygons from frame to frame.

What CVAT's lambda manager sends (cvat/apps/lambda_manager/views.py, ``LambdaFunction.invoke``):

- to start: ``{"image", "shapes": [shape, ...], "states": []}`` (``states`` empty or,
  from API clients, missing; CVAT before 2.40 sent ``[null, ...]``);
- every later frame: ``{"image", "shapes": [null, ...], "states": [state, ...]}``:
  since CVAT 2.40 no shape comes with a continuing request, so the state alone
  says what to follow.

A shape is ``{"type": "rectangle" | "polygon", "points": [...]}`` (the function
declares ``supported_shape_types``, so CVAT sends and expects that form) or,
from CVAT without that annotation, a bare ``[x1, y1, x2, y2]``. The answer is
``{"shapes": [...], "states": [...]}``: one shape for every object in the form
it came in, never ``null`` (the UI reads ``shape.points`` of each); an object
SAM 2 loses on a frame is answered with its last known shape and its state
stays usable.

A state (:mod:`.tracker_state`) carries the object's last box and a coarse
mask, so tracking resumes from it on any replica after any restart; SAM 2's
memory of the object, kept in this process under the state's token, is the
fast path.

Memory and time: a frame goes through SAM 2's image encoder once, whatever the
number of objects on it (and requests for the same frame within a minute share
that pass); each object keeps only SAM 2's memories of it (no decoded frames).
The memories held are capped by size (``GSAM2_TRACKER_MEMORY_MB``); all objects
of a request are looked up before any is stored, so a request with more objects
than the cap re-starts only the overflow on the next frame, not all of them.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ...core.tracker import EncodedFrame, TrackingSession
from .cache import ExpiringLRU
from .protocol import RequestError, check_limits, env, mask_bounds, polygon_points, request_image, run_from_env, serve
from .tracker_state import SHAPE_TYPES, ObjectState


@dataclass
class ObjectMemory:
    """SAM 2's memory of one object in this process, at the frame of state step ``step``."""

    session: TrackingSession
    step: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class StartShape:
    """A shape to start tracking from."""

    shape_type: str
    dict_form: bool
    points: list[float]
    box: np.ndarray  # xyxy inside the image
    mask: np.ndarray | None  # the filled polygon, for polygons


def parse_shape(shape: Any, index: int, width: int, height: int) -> StartShape:
    """A shape of the request: ``{"type", "points"}`` or a bare list of numbers."""
    dict_form = isinstance(shape, dict)
    if dict_form:
        shape_type, points = shape.get("type"), shape.get("points")
        if shape_type not in SHAPE_TYPES:
            raise RequestError(f"'shapes[{index}]' has type {shape_type!r}; this tracker follows rectangles and polygons")
    else:
        points = shape
        shape_type = "rectangle" if isinstance(points, list) and len(points) == 4 else "polygon"
    if (
        not isinstance(points, list)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in points)
        or len(points) % 2
        or len(points) < (4 if shape_type == "rectangle" else 6)
        or (shape_type == "rectangle" and len(points) != 4)
    ):
        raise RequestError(
            f"'shapes[{index}]' must be a rectangle [x1, y1, x2, y2] or a polygon [x1, y1, x2, y2, x3, y3, ...], "
            f"got {shape!r}"
        )
    xs, ys = np.array(points[0::2], float), np.array(points[1::2], float)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
    box[[0, 2]] = box[[0, 2]].clip(0, width)
    box[[1, 3]] = box[[1, 3]].clip(0, height)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise RequestError(f"'shapes[{index}]' {points} does not cover any of the {width}x{height} image")
    mask = None
    if shape_type == "polygon":
        canvas = Image.new("1", (width, height), 0)
        ImageDraw.Draw(canvas).polygon([(x, y) for x, y in zip(xs, ys)], fill=1)
        mask = np.asarray(canvas, dtype=bool)
        mask = mask if mask.any() else None
    return StartShape(shape_type, dict_form, [float(v) for v in points], box, mask)


def init_context(context) -> None:
    """Load the video tracker of the environment's run (``GSAM2_TRACKER``: a SAM 2 checkpoint or
    ``edgetam[:CHECKPOINT]``; ``GSAM2_DEVICE``)."""
    check_limits()
    context.user_data.run = run_from_env()
    context.user_data.tracker = context.user_data.run.video_tracker
    context.user_data.memories = ExpiringLRU(
        max_items=int(env("GSAM2_TRACKER_MAX_OBJECTS", "1000")),
        ttl_seconds=float(env("GSAM2_TRACKER_TTL", "3600")),
        max_weight=float(env("GSAM2_TRACKER_MEMORY_MB", "2048")) * 2**20,
        weigh=lambda memory: memory.session.memory_bytes(),
    )
    # The last frame through the image encoder (about 100 MB at 1024 px): another request for the
    # same frame (another user, a re-sent step) reuses the pass.
    context.user_data.encodings = ExpiringLRU(max_items=1, ttl_seconds=60)
    context.logger.info("SAM 2 tracker ready")


def frame_encoding(context, body: dict[str, Any], image: np.ndarray) -> EncodedFrame:
    key = hashlib.sha1(body["image"].encode("ascii")).hexdigest()
    encodings: ExpiringLRU = context.user_data.encodings
    encoded = encodings.get(key)
    if encoded is None:
        encoded = context.user_data.tracker.encode(image)
        encodings.put(key, encoded)
    return encoded


def request_objects(body: dict[str, Any], width: int, height: int) -> list[StartShape | ObjectState]:
    """What to do for each object: start from a shape, or go on from a state. Checks everything first."""
    shapes, states = body.get("shapes"), body.get("states")
    states = [] if states is None else states
    if not isinstance(states, list):
        raise RequestError(f"'states' must be a list, got {type(states).__name__}")
    shapes = [None] * len(states) if shapes is None else shapes
    if not isinstance(shapes, list):
        raise RequestError(f"'shapes' must be a list, got {type(shapes).__name__}")
    if not states:  # starting: CVAT sends "states": [] (or none at all)
        states = [None] * len(shapes)
    if not shapes:
        raise RequestError("nothing to track: give 'shapes' to start or 'states' to go on")
    if len(shapes) != len(states):
        raise RequestError(f"'states' ({len(states)}) and 'shapes' ({len(shapes)}) must be as long as each other")
    objects: list[StartShape | ObjectState] = []
    for index, (shape, state) in enumerate(zip(shapes, states)):
        known = None if state is None else ObjectState.from_json(state)
        on_frame = None if known is None else known.on_frame(width, height)
        if on_frame is not None:
            objects.append(on_frame)
        elif shape is not None:
            # A new object, a state of another tracker version, or one whose box lies off this
            # (smaller) frame: start from the shape.
            objects.append(parse_shape(shape, index, width, height))
        elif state is None:
            raise RequestError(f"'shapes[{index}]' and 'states[{index}]' are both null: nothing to track")
        elif known is not None:
            box = [round(v, 2) for v in known.box]
            raise RequestError(
                f"'states[{index}]' holds the box {box}, outside this {width}x{height} frame "
                "(a frame of another size?); send the object's shape to start again"
            )
        else:
            raise RequestError(f"'states[{index}]' is not a state of this tracker and no shape came with it")
    return objects


def start(tracker, encoded: EncodedFrame, prompt: np.ndarray, as_mask: bool) -> tuple[ObjectMemory, np.ndarray | None]:
    """A new SAM 2 memory prompted on this frame; its mask there (``None`` if empty)."""
    session = tracker.start(keep_pixel_frames=0)  # CVAT never re-runs a frame: keep no decoded frames
    if as_mask:
        session.prompt(0, [1], masks=prompt[None])
    else:
        session.prompt(0, [1], boxes=np.asarray(prompt, np.float32)[None])
    return ObjectMemory(session), visible_mask(session.step(0, encoded=encoded))


def visible_mask(tracked) -> np.ndarray | None:
    return tracked.masks[0] if tracked.visible() else None


def shape_of(state: ObjectState, mask: np.ndarray | None, height: int, width: int) -> list[float]:
    """The object's points on this frame: from SAM 2's mask, or its last known shape when lost."""
    if mask is None:
        if state.shape_type == "rectangle":
            return [float(v) for v in state.box]
        last = state.full_mask(height, width)
        points = polygon_points(last) if last is not None else []
        return points or box_polygon(state.box)
    x1, y1, x2, y2 = mask_bounds(mask)
    if state.shape_type == "rectangle":
        return [float(x1), float(y1), float(x2 + 1), float(y2 + 1)]
    return polygon_points(mask) or box_polygon((x1, y1, x2 + 1, y2 + 1))


def clipped_points(points: list[float], width: int, height: int) -> list[float]:
    """``[x1, y1, x2, y2, ...]`` with every x inside ``[0, width]`` and every y inside ``[0, height]``."""
    return [min(max(float(v), 0.0), float(width if i % 2 == 0 else height)) for i, v in enumerate(points)]


def box_polygon(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = mask_bounds(mask)
    return x1, y1, x2 + 1, y2 + 1


def go_on(
    context, encoded: EncodedFrame, state: ObjectState, memory: ObjectMemory | None
) -> tuple[ObjectState, ObjectMemory, np.ndarray | None]:
    """Track a known object onto this frame: from this process's memory, or re-started from its state."""
    if memory is not None:
        with memory.lock:
            if memory.step == state.step:  # the memory is at the frame the state describes
                mask = visible_mask(memory.session.step(memory.step + 1, encoded=encoded))
                memory.step += 1
                return state.advanced(*((mask_box(mask), mask) if mask is not None else ())), memory, mask
    # Forgotten (restart, another replica, evicted) or stale (an older state replayed):
    # a new memory, prompted on this frame with the object's last box.
    memory, mask = start(context.user_data.tracker, encoded, np.asarray(state.box), as_mask=False)
    fresh = state.restarted()
    return fresh.advanced(*((mask_box(mask), mask) if mask is not None else ()), steps=0), memory, mask


def track(context, body: dict[str, Any]) -> dict[str, Any]:
    image = request_image(body)
    height, width = image.shape[:2]
    objects = request_objects(body, width, height)
    encoded = frame_encoding(context, body, image)
    memories: ExpiringLRU = context.user_data.memories
    # Every object's memory is looked up before any is stored, so storing one cannot evict another of this request.
    held = {item.token: memories.get(item.token) for item in objects if isinstance(item, ObjectState)}
    out_shapes, out_states, kept = [], [], []
    for item in objects:
        if isinstance(item, StartShape):
            prompt = item.mask if item.mask is not None else item.box
            memory, mask = start(context.user_data.tracker, encoded, prompt, as_mask=item.mask is not None)
            state = ObjectState.new(item.shape_type, item.dict_form, item.box, mask)
            points = item.points  # on the starting frame the user's own shape stands
        else:
            state, memory, mask = go_on(context, encoded, item, held.get(item.token))
            points = shape_of(state, mask, height, width)
        points = clipped_points(points, width, height)  # the user's own shape may reach past the frame's edge
        kept.append((state.token, memory))
        out_shapes.append({"type": state.shape_type, "points": points} if state.dict_form else points)
        out_states.append(state.to_json())
    for token, memory in kept:
        memories.put(token, memory)
    return {"shapes": out_shapes, "states": out_states}


def handler(context, event):
    return serve(context, event, track)
