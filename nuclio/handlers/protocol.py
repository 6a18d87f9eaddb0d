"""What every CVAT function shares: reading CVAT's JSON, answering it, and never going down.

A request CVAT got wrong (missing field, bad base64, not an image, points
outside the image...) gets a 400 with a one-line message; anything else is a
500 with the traceback in the function's log. The function keeps serving.

A serving function has its own limits, well below the CLI's 250 MP
(core/images.py), so that one request cannot exhaust it or the CVAT server
that reads its answer: images of at most ``GSAM2_MAX_IMAGE_PIXELS`` pixels (40 MP
by default), checked from the image's header before any pixel is decoded, and
answers of at most ``GSAM2_MAX_RESPONSE_MB`` (100 MB by default). Both are a 413
with one line.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import yaml
from PIL import Image

from ...core.errors import GroundedSam2Error, InputError
from ...core.images import decode_image
from ...core.spec import RunSpec, SettingError, env_name

FUNCTION_CONFIG = "/opt/nuclio/function.yaml"

# 40 MP: 120 MB decoded as RGB; a 36 MP camera photo passes, a 12000x12000 PNG of 600 KB does not.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# CVAT's lambda manager parses the whole answer in memory (reply.json() in cvat/apps/lambda_manager/views.py).
DEFAULT_MAX_RESPONSE_MB = 100.0


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
    """The base64 ``image`` of a CVAT request as RGB ``uint8``, refused before decoding if it is too large."""
    encoded = body.get("image")
    if not encoded or not isinstance(encoded, str):
        raise RequestError("request has no 'image' (a base64-encoded image is required)")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("'image' is not valid base64") from None
    check_image_size(data)
    try:
        return decode_image(data, name="'image'")
    except InputError as error:
        raise RequestError(str(error)) from None


def max_image_pixels() -> int:
    """The function's pixel limit: ``GSAM2_MAX_IMAGE_PIXELS``, else 40 MP."""
    return int(_positive_limit("GSAM2_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, int))


def max_response_bytes() -> int:
    """The largest answer the function sends, in bytes: ``GSAM2_MAX_RESPONSE_MB``, else 100 MB."""
    return int(_positive_limit("GSAM2_MAX_RESPONSE_MB", DEFAULT_MAX_RESPONSE_MB, float) * 2**20)


def _positive_limit(name: str, default: float, kind: type) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise ValueError(f"{name}={text!r}: expected a positive {kind.__name__}")
    return value


def check_image_pixels(width: int, height: int, name: str = "'image'", limit: int | None = None) -> None:
    """Refuse an image of more pixels than ``limit`` (the function's, by default): a 413, one line."""
    limit = max_image_pixels() if limit is None else limit
    if width * height > limit:
        raise RequestError(
            f"{name} is {width}x{height} ({width * height:,} pixels), more than this function's limit of "
            f"{limit:,} pixels (GSAM2_MAX_IMAGE_PIXELS)",
            status=413,
        )


def check_image_size(data: bytes) -> None:
    """Check the pixels an encoded image would decode to, from its header alone.

    ``PIL.Image.open`` is lazy: it reads the header and gives ``size`` without
    decoding (PIL/Image.py, ``open``). It refuses above twice PIL's global
    ``MAX_IMAGE_PIXELS`` (``_decompression_bomb_check``) and warns above it; that
    global is the CLI's limit (core/images.py: 250 MP, or ``GSAM2_MAX_IMAGE_PIXELS``
    when set) and is not changed here: the function checks its own limit itself.
    Bytes PIL cannot identify are left to :func:`decode_image`, which names the problem.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise RequestError(
            f"'image' has more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, more than this function's limit "
            f"of {max_image_pixels():,} pixels (GSAM2_MAX_IMAGE_PIXELS)",
            status=413,
        ) from None
    except Exception:  # noqa: BLE001 - not an image (or a broken header): decode_image says which
        return
    check_image_pixels(width, height)


def check_limits() -> None:
    """Read the limits once at start, so that a wrong value fails the deployment, not every request."""
    max_image_pixels()
    max_response_bytes()


def respond(context, payload: Any, status: int = 200):
    return respond_json(context, json.dumps(payload), status)


def respond_json(context, body: str, status: int = 200):
    return context.Response(body=body, headers={}, content_type="application/json", status_code=status)


def too_large_answer(size: int, what: str = "the answer") -> RequestError:
    """The 413 for an answer of ``size`` bytes over the function's limit."""
    return RequestError(
        f"{what} would be {size / 2**20:.1f} MB, more than this function's limit of "
        f"{max_response_bytes() / 2**20:g} MB (GSAM2_MAX_RESPONSE_MB)",
        status=413,
    )


class AnswerBudget:
    """The function's answer size (bytes of JSON), counted as items are added to it."""

    def __init__(self) -> None:
        self.limit, self.used = max_response_bytes(), 0

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes if they fit; ``False`` (nothing counted) if they do not."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def refusal(self, size: int, what: str) -> RequestError:
        """The 413 for ``size`` more bytes that do not fit."""
        return too_large_answer(self.used + size, what)


def serve(context, event, handle: Callable[[Any, dict[str, Any]], Any]):
    """Run ``handle(context, body)`` and turn every outcome into a response."""
    try:
        body = json.dumps(handle(context, request_body(event)))
        if len(body) > max_response_bytes():  # the handlers bound what they build; this bounds what leaves
            raise too_large_answer(len(body))
        return respond_json(context, body)
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


def spec_from_env(**overrides: Any) -> RunSpec:
    """The run the function's environment describes (``GSAM2_DETECTOR``, ``GSAM2_SLICE_OVERLAP``, ...).

    A setting it cannot take fails the deployment at ``init_context`` with one
    line that names the variable (``GSAM2_SLICE_OVERLAP '600': must be ...``).
    """
    try:
        return RunSpec.from_env(**overrides)
    except SettingError as error:
        raise InputError(error.spelled(env_name)) from None


def run_from_env(**overrides: Any):
    """A :class:`~gsam2.core.run.Run` of :func:`spec_from_env`; its models load on first use."""
    from ...core.run import Run  # torch: only where a function serves

    return Run(spec_from_env(**overrides))


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
