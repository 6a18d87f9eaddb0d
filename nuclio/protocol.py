"""What every CVAT function shares: reading CVAT's JSON, answering it, and never going down.

A request CVAT got wrong (missing field, bad base64, not an image, points
outside the image...) gets a 400 with a one-line message; anything else is a
500 with the traceback in the function's log. The function keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import yaml

from ..core.errors import GroundedSam2Error, InputError
from ..core.images import decode_image

FUNCTION_CONFIG = "/opt/nuclio/function.yaml"


class RequestError(Exception):
    """A request that CVAT (or a client) got wrong: answered with ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def request_body(event) -> dict[str, Any]:
    body = event.body
    if isinstance(body, (bytes, bytearray)):
        try:
            body = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(f"request body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def request_image(body: dict[str, Any]) -> np.ndarray:
    """The base64 ``image`` of a CVAT request as RGB ``uint8``."""
    encoded = body.get("image")
    if not encoded or not isinstance(encoded, str):
        raise RequestError("request has no 'image' (a base64-encoded image is required)")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("'image' is not valid base64") from None
    try:
        return decode_image(data, name="'image'")
    except InputError as error:
        raise RequestError(str(error)) from None


def respond(context, payload: Any, status: int = 200):
    return context.Response(body=json.dumps(payload), headers={}, content_type="application/json", status_code=status)


def serve(context, event, handle: Callable[[Any, dict[str, Any]], Any]):
    """Run ``handle(context, body)`` and turn every outcome into a response."""
    try:
        return respond(context, handle(context, request_body(event)))
    except RequestError as error:
        context.logger.warn(f"bad request: {error}")
        return respond(context, {"error": str(error)}, error.status)
    except (InputError, GroundedSam2Error) as error:
        context.logger.warn(f"bad request: {error}")
        return respond(context, {"error": str(error)}, 400)
    except Exception as error:  # noqa: BLE001 - a serving function answers, it does not crash
        context.logger.error(f"request failed: {error}\n{traceback.format_exc()}")
        return respond(context, {"error": f"internal error: {type(error).__name__}: {error}"}, 500)


def function_spec(path: str | None = None) -> list[dict[str, Any]]:
    """The label list in the deployed ``function.yaml`` (CVAT's ``metadata.annotations.spec``)."""
    path = Path(path or os.environ.get("GSAM2_FUNCTION_CONFIG", FUNCTION_CONFIG))
    config = yaml.safe_load(path.read_text())
    return json.loads(config["metadata"]["annotations"]["spec"])


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def polygon_points(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[float]:
    """The largest outer contour of a mask, as CVAT's flat ``[x1, y1, x2, y2, ...]`` polygon.

    ``mask`` may be a crop whose top-left pixel is at ``offset`` (x, y) in the
    image: OpenCV traces a contour at the array's edge as if zeros lay beyond
    it, so a crop that holds all of a mask's pixels gives the full frame's contour.

    ``[]`` when the mask has no contour of at least 3 vertices (a single pixel,
    a 1-pixel line): CVAT refuses a polygon of fewer than 6 numbers
    (``ShapeSerializer.validate`` in cvat/apps/engine/serializers.py, 2.73), and
    one bad shape fails the whole frame's result and the auto-annotation job.
    """
    polygons = [polygon for polygon in sv.mask_to_polygons(mask) if len(polygon) >= 3]
    if not polygons:
        return []
    largest = max(polygons, key=lambda polygon: cv2_area(polygon)) + np.asarray(offset)
    return [float(v) for v in largest.reshape(-1)]


def cv2_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0].astype(float), polygon[:, 1].astype(float)
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def mask_bounds(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> tuple[int, int, int, int] | None:
    """Inclusive ``(xtl, ytl, xbr, ybr)`` of a mask's pixels in the image, or ``None`` if it is empty.

    ``mask`` may be a crop whose top-left pixel is at ``offset`` (x, y).
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, y0 = offset
    return int(xs.min()) + x0, int(ys.min()) + y0, int(xs.max()) + x0, int(ys.max()) + y0


def cvat_detector_mask(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[int] | None:
    """CVAT's detector ``mask``: the box crop flattened row-major (0/1), then ``[xtl, ytl, xbr, ybr]`` inclusive.

    ``mask`` may be a crop whose top-left pixel is at ``offset`` (x, y) in the image.
    """
    bounds = mask_bounds(mask, offset)
    if bounds is None:
        return None
    xtl, ytl, xbr, ybr = bounds
    x0, y0 = offset
    crop = mask[ytl - y0 : ybr - y0 + 1, xtl - x0 : xbr - x0 + 1].astype(np.uint8)
    return crop.reshape(-1).tolist() + [xtl, ytl, xbr, ybr]
