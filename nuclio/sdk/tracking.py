"""cvat-sdk tracking function (agent-based, CVAT Online/Enterprise): SAM 2 video memory per shape.

    cvat-cli function create-native "SAM 2 tracker" --function-module gsam2.nuclio.sdk.tracking
    cvat-cli function run-agent FUNCTION_ID --function-module gsam2.nuclio.sdk.tracking

Needs cvat-sdk >= 2.42 (TrackingFunction). ``-p tracker=str:edgetam`` tracks with
EdgeTAM instead of SAM 2 (any box-following tracker). Rectangles and polygons are tracked;
each shape's state is its own SAM 2 streaming session (memory bounded, see
``gsam2.core.tracker``). A frame of more than ``max_image_pixels`` pixels
(``GSAM2_MAX_IMAGE_PIXELS``, else 40 MP) is refused before it is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import cvat_sdk.auto_annotation as cvataa

from ...core.images import to_rgb_array
from ...core.run import Run
from ...core.tracker import TrackingSession
from ..handlers.protocol import check_image_pixels, mask_bounds, polygon_points
from ..handlers.protocol import max_image_pixels as serving_max_image_pixels
from .params import spec_from_params


@dataclass
class ShapeState:
    session: TrackingSession
    shape_type: str
    frames: int = 1


class Sam2Tracking:
    spec = cvataa.TrackingFunctionSpec(supported_shape_types=["rectangle", "polygon"])

    def __init__(self, max_image_pixels: int | str = 0, **settings):
        """``settings``: a run's (``tracker``: a SAM 2 checkpoint or ``edgetam[:CHECKPOINT]``, ``device``, ...;
        see :class:`~gsam2.core.spec.RunSpec`), typed or as strings."""
        self.run = Run(spec_from_params(settings))
        self.tracker = self.run.video_tracker
        max_image_pixels = int(max_image_pixels or 0)
        self.max_image_pixels = max_image_pixels if max_image_pixels > 0 else serving_max_image_pixels()

    def preprocess_image(self, context, image: PIL.Image.Image) -> np.ndarray:
        check_image_pixels(*image.size, name="the image", limit=self.max_image_pixels)  # not decoded yet
        return to_rgb_array(image)

    def init_tracking_state(self, context, pp_image: np.ndarray, shape: cvataa.TrackableShape) -> ShapeState:
        xs, ys = np.array(shape.points[0::2]), np.array(shape.points[1::2])
        session = self.tracker.start()
        session.prompt(0, [1], boxes=np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], np.float32))
        session.step(0, pp_image)
        return ShapeState(session, shape.type)

    def track(self, context, pp_image: np.ndarray, state: ShapeState) -> cvataa.TrackableShape | None:
        tracked = state.session.step(state.frames, pp_image)
        state.frames += 1
        if not tracked.visible():
            return None
        mask = tracked.masks[0]
        if state.shape_type == "rectangle":
            x1, y1, x2, y2 = mask_bounds(mask)
            return cvataa.TrackableShape(type="rectangle", points=[x1, y1, x2 + 1, y2 + 1])
        points = polygon_points(mask)
        return cvataa.TrackableShape(type="polygon", points=points) if len(points) >= 6 else None


create = Sam2Tracking
